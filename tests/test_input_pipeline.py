import ml_collections
import numpy as np
import pytest

from jaxcxr import input_pipeline
from jaxcxr.configs import default
from jaxcxr.data.cache import CachedSplit


def _split(n=20, size=16):
  images = np.stack([np.full((size, size), i, np.uint8) for i in range(n)])
  return CachedSplit("train", images, (np.arange(n) % 2).astype(np.int32), [str(i) for i in range(n)],
                     [str(i) for i in range(n)])


def _no_augment():
  return ml_collections.ConfigDict(dict(enabled=False))


def _ids(batch):
  return batch["image"][:, 0, 0].tolist()


def test_each_epoch_is_a_fresh_permutation_of_full_batches():
  ds = input_pipeline.train_dataset(input_pipeline.SplitSource(_split(20)), batch_size=6, epochs=2, seed=0,
                                    augment=_no_augment())
  assert len(ds) == 2 * 3
  epoch1 = sum((_ids(ds[b]) for b in range(3)), [])
  epoch2 = sum((_ids(ds[b]) for b in range(3, 6)), [])
  assert len(set(epoch1)) == 18 and len(set(epoch2)) == 18
  assert epoch1 != epoch2
  np.testing.assert_array_equal(ds[0]["label"], np.array(_ids(ds[0])) % 2)


def test_iterator_resume_continues_with_the_next_batch():
  ds = input_pipeline.train_dataset(input_pipeline.SplitSource(_split()), 4, 3, seed=1,
                                    augment=default.get_config().data.augment)
  it = input_pipeline.train_iterator(ds, num_threads=2, prefetch=8)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = next(it)
  resumed = input_pipeline.train_iterator(ds, num_threads=2, prefetch=8)
  resumed.set_state(state)
  got = next(resumed)
  np.testing.assert_array_equal(got["image"], expected["image"])
  np.testing.assert_array_equal(got["label"], expected["label"])


def test_device_prefetcher_state_is_what_was_consumed():
  ds = input_pipeline.train_dataset(input_pipeline.SplitSource(_split()), 4, 1, seed=0, augment=_no_augment())
  plain = input_pipeline.train_iterator(ds, 1, 4)
  next(plain)
  after_one = plain.get_state()
  prefetcher = input_pipeline.DevicePrefetcher(input_pipeline.train_iterator(ds, 1, 4), put=lambda b: b, depth=3)
  first = next(prefetcher)
  assert prefetcher.state == after_one  # three batches were read ahead, one consumed
  assert _ids(first) == _ids(ds[0])
  assert len(list(prefetcher)) == len(ds) - 1


@pytest.mark.parametrize("n, batch, expected_batches", [(10, 4, 3), (8, 4, 2)])
def test_eval_batches_pad_and_mask(n, batch, expected_batches):
  split = _split(n)
  batches = list(input_pipeline.eval_batches(split, batch))
  assert len(batches) == expected_batches
  assert all(b["image"].shape == (batch, 16, 16) for b in batches)
  masks = np.concatenate([b["mask"] for b in batches])
  assert masks.sum() == n
  seen = np.concatenate([b["image"][b["mask"], 0, 0] for b in batches])
  np.testing.assert_array_equal(seen, np.arange(n))


def test_balanced_sampling_shows_both_classes_equally():
  labels = np.array([1] * 3 + [0] * 17, np.int32)
  split = CachedSplit("train", np.zeros((20, 4, 4), np.uint8), labels, [], [])
  source = input_pipeline.train_source(split, "sampling")
  drawn = source.read(np.arange(len(source)))["label"]
  assert len(source) == 34 and drawn.sum() == 17
  assert len(input_pipeline.train_source(split, "pos_weight")) == 20


def test_worker_processes_give_the_same_stream_and_resume():
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags, as under run.py
  ds = input_pipeline.train_dataset(input_pipeline.SplitSource(_split()), 4, 2, seed=3,
                                    augment=default.get_config().data.augment)
  it = input_pipeline.train_iterator(ds, 1, 2, worker_processes=2)
  try:
    got = [next(it) for _ in range(4)]
    state = it.get_state()
    following = next(it)
  finally:
    it.close()
  for b, batch in enumerate(got):
    np.testing.assert_array_equal(batch["image"], ds[b]["image"])
  resumed = input_pipeline.train_iterator(ds, 1, 2, worker_processes=2)
  try:
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["image"], following["image"])
  finally:
    resumed.close()
