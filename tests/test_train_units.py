"""The training loop's small pure pieces, alone: when periodic actions fire, and the class weights."""

import numpy as np
import pytest

from jaxcxr import train
from jaxcxr.data.cache import CachedSplit


@pytest.mark.parametrize("every,total,fired", [
    (5, 12, [5, 10, 12]),   # every 5 steps, and always on the last one
    (4, 12, [4, 8, 12]),    # the last step is a multiple: fired once
    (0, 12, [12]),          # 0 = only at the end
    (20, 12, [12]),         # longer than the run
])
def test_periodic_actions_fire_every_n_steps_and_on_the_last(every, total, fired):
  assert [step for step in range(1, total + 1) if train.is_time(step, every, total)] == fired


def _split(labels, targets=()):
  labels = np.asarray(labels, np.int32)
  n = len(labels)
  return CachedSplit("train", np.zeros((n, 4, 4), np.uint8), labels, [str(i) for i in range(n)],
                     [str(i) for i in range(n)], targets=targets)


def test_one_target_weighs_positives_by_the_negatives_they_are_outnumbered_by():
  split = _split([1, 0, 0, 0, 1, 0, 0, 0])  # 2 positives, 6 negatives
  assert train.class_weights(split, "pos_weight") == (3.0, 1.0)
  assert train.class_weights(split, "sampling") == (1.0, 1.0)
  assert train.class_weights(split, "none") == (1.0, 1.0)


def test_several_targets_weigh_each_finding_so_its_two_classes_weigh_the_same(caplog):
  # Finding A: 1 positive of 4; finding B: 2 of 4; finding C: none (it then adds no loss, with a warning).
  split = _split([[1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]], targets=("A", "B", "C"))
  pos, neg = train.class_weights(split, "pos_weight")
  assert pos == [0.75, 0.5, 1.0] and neg == [0.25, 0.5, 0.0]
  positives = split.labels.sum(axis=0)
  np.testing.assert_allclose(np.asarray(pos)[:2] * positives[:2], np.asarray(neg)[:2] * (4 - positives[:2]))
  assert "one class only for C" in caplog.text
  assert train.class_weights(split, "none") == ([1.0] * 3, [1.0] * 3)
