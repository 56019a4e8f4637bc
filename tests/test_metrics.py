import itertools

import numpy as np
import pytest

from jaxcxr import metrics


def test_report_matches_hand_computed_values():
  r = metrics.classification_report(tn=50, fp=10, fn=5, tp=35)
  assert r["accuracy"] == pytest.approx(85 / 100)
  assert r["precision"] == pytest.approx(35 / 45)
  assert r["recall"] == pytest.approx(35 / 40)
  assert r["specificity"] == pytest.approx(50 / 60)
  assert r["f1"] == pytest.approx(2 * 35 / (2 * 35 + 10 + 5))
  assert r["notes"] == [] and r["auc"] is None


def test_paper_all_positive_baseline():
  # DATASETS.md: calling all 624 Kermany test films pneumonia scores 0.625 / recall 1.0 / F1 0.769.
  r = metrics.classification_report(tn=0, fp=234, fn=0, tp=390)
  assert r["accuracy"] == pytest.approx(0.625)
  assert r["recall"] == 1.0 and r["specificity"] == 0.0
  assert r["f1"] == pytest.approx(0.769, abs=5e-4)


def test_undefined_values_are_none_with_a_reason():
  r = metrics.classification_report(tn=7, fp=0, fn=0, tp=0, labels=np.zeros(7), scores=np.linspace(0, 1, 7))
  assert r["precision"] is None and r["recall"] is None and r["auc"] is None
  assert r["specificity"] == 1.0 and r["accuracy"] == 1.0
  assert any("AUC undefined" in n for n in r["notes"])
  assert any("precision undefined" in n for n in r["notes"])


def _auc_by_pairs(labels, scores):
  pos = [s for l, s in zip(labels, scores) if l]
  neg = [s for l, s in zip(labels, scores) if not l]
  wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


def test_auc_equals_pairwise_definition_with_ties():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  scores = np.round(rng.uniform(size=200) + 0.3 * labels, 1)  # rounding creates many ties
  assert metrics.roc_auc(labels, scores) == pytest.approx(_auc_by_pairs(labels, scores))


@pytest.mark.parametrize("scores, expected", [([0.1, 0.2, 0.8, 0.9], 1.0), ([0.9, 0.8, 0.2, 0.1], 0.0),
                                              ([0.5, 0.5, 0.5, 0.5], 0.5)])
def test_auc_extremes(scores, expected):
  assert metrics.roc_auc(np.array([0, 0, 1, 1]), np.array(scores)) == pytest.approx(expected)
