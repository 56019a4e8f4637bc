"""Streaming batches from the preprocessed cache: grain for shuffling, augmentation and batching,
then a small device prefetcher so host-to-device copies overlap the previous step.

The training stream is a `grain.MapDataset`, so batch `b` is a pure function of
(seed, b): epoch `e` is shuffled with seed+e and each image's augmentation is
seeded by its position in the stream. Resuming at a step therefore continues
with exactly the batch an uninterrupted run would have seen next.
"""

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator

import grain
import ml_collections
import numpy as np

from jaxcxr.augment import GeometricAugment
from jaxcxr.data.cache import CachedSplit


class SplitSource:
  """The training examples of one epoch, read a batch at a time from a cached split."""

  def __init__(self, split: CachedSplit):
    self.split = split

  def __len__(self) -> int:
    return len(self.split)

  def positions(self, indices: np.ndarray) -> np.ndarray:
    """Rows of the cached split behind `indices` of this source."""
    return np.asarray(indices)

  def read(self, indices: np.ndarray) -> dict:
    rows = self.positions(indices)
    return {"image": np.stack([self.split.images[int(i)] for i in rows]), "label": self.split.labels[rows]}


class BalancedSource(SplitSource):
  """Each epoch holds every negative once and as many positives, drawn cyclically with repeats.

  For NIH pneumonia (~2% positive) this shows the network as many positive as
  negative films per epoch; the per-epoch shuffle mixes the repeats.
  """

  def __init__(self, split: CachedSplit):
    super().__init__(split)
    positives, negatives = np.flatnonzero(split.labels == 1), np.flatnonzero(split.labels == 0)
    self.index = np.concatenate([negatives, np.resize(positives, len(negatives))])

  def __len__(self) -> int:
    return len(self.index)

  def positions(self, indices: np.ndarray) -> np.ndarray:
    return self.index[np.asarray(indices)]


POS_WEIGHT, SAMPLING = "pos_weight", "sampling"
CLASS_BALANCE = (POS_WEIGHT, SAMPLING, "none")  # train.class_balance: loss weights, resampling, neither


def train_source(split: CachedSplit, class_balance: str) -> SplitSource:
  """The training examples of one epoch: the split as is, or class-balanced by resampling."""
  return BalancedSource(split) if class_balance == SAMPLING else SplitSource(split)


class _Rows(grain.transforms.Map):
  """Keeps `rows` of each batch of indices: one process's share of the global batch, before any film is read."""

  def __init__(self, rows: slice):
    self.rows = rows

  def map(self, indices: np.ndarray) -> np.ndarray:
    return indices[self.rows]


def train_dataset(source: SplitSource, batch_size: int, epochs: int, seed: int,
                  augment: ml_collections.ConfigDict, rows: slice | None = None) -> grain.MapDataset:
  """The whole training stream, `epochs * (len(source) // batch_size)` batches long, indexable by step.

  Indices are shuffled per epoch (seed + epoch) and batched before any film is
  read, so grain's per-element overhead is paid per batch; each epoch's last
  partial batch is dropped (and reshuffled into the next epoch). Augmentation
  is seeded by the batch's position in the stream. `rows` (one process's share
  of every global batch, `devices.process_rows`) are the only films read and
  warped, each as it would be in the whole batch.
  """
  ds = grain.MapDataset.range(len(source)).shuffle(seed=seed).batch(batch_size, drop_remainder=True)
  rows = rows or slice(0, batch_size)
  if rows != slice(0, batch_size):
    ds = ds.map(_Rows(rows))
  ds = ds.map(source.read)
  if augment.enabled:
    ds = ds.random_map(GeometricAugment(augment, rows, batch_size), seed=seed)
  return ds.repeat(epochs)


def train_iterator(ds: grain.MapDataset, num_threads: int, prefetch: int,
                   worker_processes: int = 0) -> grain.DatasetIterator:
  """Reads and augments `prefetch` batches ahead, in `num_threads` threads of this process, or
  in `worker_processes` processes (grain `mp_prefetch`) to scale past the GIL on many-core hosts.

  Worker processes need absl flags parsed, as `jaxcxr.main` does.
  """
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  if worker_processes > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_processes),
                              worker_init_fn=exit_with_parent)
  return iter(it_ds)


def exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Runs first in each grain worker process: ends the worker once the training process is gone. A training
  process killed with SIGKILL cannot stop its workers, which would live on, reparented, for good. The
  parent is polled rather than asked to signal (PR_SET_PDEATHSIG follows the thread that started the worker,
  which need not outlive it)."""
  del worker_index, worker_count
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access  # nothing of the dead run's is left to clean up

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class DevicePrefetcher:
  """Keeps `depth` batches already sent to the device, and the grain state that follows each.

  `state` is the iterator state after the batch most recently returned, i.e.
  what a checkpoint must record: the batches prefetched but not yet trained
  on are not consumed. `wait_s` accumulates time spent blocked on the host pipeline.
  """

  DEPTH = 2

  def __init__(self, iterator: grain.DatasetIterator, put: Callable[[dict], dict], depth: int = DEPTH):
    self.iterator, self.put, self.depth = iterator, put, depth
    self.queue = collections.deque()
    self.state = iterator.get_state()
    self.wait_s = 0.0

  def __iter__(self) -> Iterator[dict]:
    return self

  def fill(self) -> None:
    """Reads ahead until `depth` batches are on their way to the device (or the stream ends)."""
    while len(self.queue) < self.depth:
      start = time.perf_counter()
      try:
        host = next(self.iterator)
      except StopIteration:
        break
      finally:
        self.wait_s += time.perf_counter() - start
      self.queue.append((self.put(host), self.iterator.get_state()))

  def __next__(self) -> dict:
    self.fill()
    if not self.queue:
      raise StopIteration
    batch, self.state = self.queue.popleft()
    return batch


def eval_batches(split: CachedSplit, batch_size: int, rows: slice | None = None) -> Iterator[dict]:
  """Fixed-shape batches in file order; the last is zero-padded, with `mask` marking real rows. `rows`: only
  that share of every batch is read and returned (one process's, `devices.process_rows`)."""
  rows = rows or slice(0, batch_size)
  share = rows.stop - rows.start
  for start in range(0, len(split), batch_size):
    first, stop = min(start + rows.start, len(split)), min(start + rows.stop, len(split))
    n = stop - first
    images = np.zeros((share, *split.images.shape[1:]), np.uint8)
    labels = np.zeros((share, *split.labels.shape[1:]), np.int32)
    images[:n], labels[:n] = split.images[first:stop], split.labels[first:stop]
    yield {"image": images, "label": labels, "mask": np.arange(share) < n}
