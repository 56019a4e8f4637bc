import itertools

import numpy as np
import pytest

from jaxcxr import metrics
from jaxcxr.errors import UserError


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


def test_threshold_rules_are_parsed_or_refused_in_one_line():
  assert metrics.parse_threshold("0.5") == ("fixed", 0.5)
  assert metrics.parse_threshold("youden") == ("youden", None)
  assert metrics.parse_threshold("recall:0.95") == ("recall", 0.95)
  for bad in ("1.5", "0", "recall:0", "recall:2", "median", ""):
    with pytest.raises(UserError, match="eval.threshold=.*; use a probability in \\(0, 1\\)"):
      metrics.parse_threshold(bad)


def test_youden_and_recall_thresholds_on_a_hand_made_split():
  labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
  scores = np.array([.1, .2, .3, .35, .4, .6, .7, .8])
  # Positive above 0.3: tpr 1, fpr 1/4 (J = 0.75); above 0.4: tpr 3/4, fpr 0 (J = 0.75, first kept); others lower.
  youden = metrics.choose_threshold(labels, scores, "youden")
  assert youden["value"] == pytest.approx(0.3) and youden["chosen"]
  # The highest threshold that still finds all positives is just below the lowest positive (0.35).
  assert metrics.choose_threshold(labels, scores, "recall:1.0")["value"] == pytest.approx(0.3)
  assert metrics.choose_threshold(labels, scores, "recall:0.75")["value"] == pytest.approx(0.4)
  fixed = metrics.choose_threshold(labels, None, "0.5")  # a fixed rule reads no scores
  assert fixed["value"] == 0.5 and not fixed["chosen"]
  assert not metrics.needs_scores("0.5") and metrics.needs_scores("youden") and metrics.needs_scores("recall:0.9")
  one_class = metrics.choose_threshold(np.ones(3), np.array([.2, .5, .9]), "youden")
  assert one_class["value"] == 0.5 and "needs both classes" in one_class["note"]
  assert metrics.logit(0.5) == 0.0 and metrics.logit(0.0) == -np.inf


def test_intervals_contain_the_estimate_and_are_seeded():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  scores = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
  predicted = scores > 0.5
  patients = [f"p{i // 2}" for i in range(200)]
  intervals = metrics.bootstrap_intervals(labels, scores, predicted, patients, resamples=200)
  point = metrics.classification_report(*metrics.confusion(labels, predicted), labels, scores)
  for name in metrics.METRICS:
    low, high = intervals[name]
    assert low <= point[name] <= high and high - low < 0.3
  assert metrics.bootstrap_intervals(labels, scores, predicted, patients, resamples=200) == intervals


def test_intervals_resample_patients_not_films():
  """Ten patients with 20 films each, every film of a patient alike: the films are not independent, and the
  interval over patients is much wider than one that treats each film as its own patient."""
  labels = np.repeat(np.arange(10) % 2, 20)
  scores = np.repeat(np.random.default_rng(1).uniform(0, 1, 10), 20)
  predicted = scores > 0.5
  by_patient = metrics.bootstrap_intervals(labels, scores, predicted, [f"p{i // 20}" for i in range(200)], 300)
  by_film = metrics.bootstrap_intervals(labels, scores, predicted, [f"f{i}" for i in range(200)], 300)
  width = lambda r: r["accuracy"][1] - r["accuracy"][0]  # noqa: E731
  assert width(by_patient) > 3 * width(by_film)


def test_a_metric_undefined_in_every_draw_has_no_interval():
  labels, scores = np.zeros(6), np.linspace(0, 1, 6)
  intervals = metrics.bootstrap_intervals(labels, scores, scores > 0.5, [str(i) for i in range(6)], 50)
  assert intervals["auc"] is None and intervals["recall"] is None and intervals["specificity"] is not None
