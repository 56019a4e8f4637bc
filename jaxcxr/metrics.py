"""Classification metrics on the host, from confusion counts and scores (the paper's Table 6).

Undefined values (a precision with no positive predictions, an AUC on a split
with one class) are reported as None with the reason in `notes`, never as a
misleading 0 and never as a crash. The operating point is chosen on the
validation split (`choose_threshold`), and every test metric gets a bootstrap
interval over patients (`bootstrap_intervals`).
"""

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

from jaxcxr.errors import UserError


def _ratio(num: int, den: int) -> float | None:
  return num / den if den else None


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """Area under the ROC curve via the Mann-Whitney U statistic (ties count one half)."""
  labels = np.asarray(labels).astype(bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return None
  ranks = pd.Series(np.asarray(scores, np.float64)).rank(method="average").to_numpy()
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_report(tn: int, fp: int, fn: int, tp: int, labels: np.ndarray | None = None,
                          scores: np.ndarray | None = None) -> dict:
  """Accuracy, precision, recall (sensitivity), specificity, F1 and ROC AUC with their counts."""
  tn, fp, fn, tp = int(tn), int(fp), int(fn), int(tp)
  notes = []
  precision = _ratio(tp, tp + fp)
  recall = _ratio(tp, tp + fn)
  specificity = _ratio(tn, tn + fp)
  if precision is None:
    notes.append("precision undefined: no positive predictions")
  if recall is None:
    notes.append("recall undefined: no positive examples")
  if specificity is None:
    notes.append("specificity undefined: no negative examples")
  auc = roc_auc(labels, scores) if labels is not None and scores is not None else None
  if labels is not None and auc is None:
    notes.append("AUC undefined: the split has only one class")
  return {"tn": tn, "fp": fp, "fn": fn, "tp": tp,
          "accuracy": _ratio(tp + tn, tn + fp + fn + tp), "precision": precision, "recall": recall,
          "specificity": specificity, "f1": _ratio(2 * tp, 2 * tp + fp + fn), "auc": auc, "notes": notes}


# --- The operating point, chosen on validation and applied to test. ---
# A film is called positive when its probability is above the threshold (its logit above logit(threshold)).
THRESHOLD_RULES = ("a probability in (0, 1) such as 0.5", "youden", "recall:R with R in (0, 1]")
METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def parse_threshold(rule: str) -> tuple[str, float | None]:
  """`eval.threshold` as (kind, value): ('fixed', p), ('youden', None) or ('recall', R); UserError otherwise."""
  text = str(rule).strip()
  if text == "youden":
    return "youden", None
  kind, value = ("recall", text.removeprefix("recall:")) if text.startswith("recall:") else ("fixed", text)
  try:
    number = float(value)
  except ValueError:
    number = math.nan
  if (kind == "fixed" and 0.0 < number < 1.0) or (kind == "recall" and 0.0 < number <= 1.0):
    return kind, number
  raise UserError(f"eval.threshold={rule!r}; use {', '.join(THRESHOLD_RULES)}")


def needs_scores(rule: str) -> bool:
  """Whether `rule` picks its threshold from validation scores (a fixed probability does not)."""
  return parse_threshold(rule)[0] != "fixed"


def choose_threshold(labels: np.ndarray, scores: np.ndarray | None, rule: str) -> dict:
  """The operating point `rule` picks on these (validation) labels and scores: {rule, value (a probability),
  chosen (whether the data chose it), note (why not, where the rule could not apply: then 0.5)}.

  `youden` maximises sensitivity + specificity - 1; `recall:R` is the highest
  threshold that still finds at least a fraction R of the positives.
  """
  kind, value = parse_threshold(rule)
  if kind == "fixed":
    return {"rule": str(rule), "value": value, "chosen": False, "note": None}
  labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return {"rule": str(rule), "value": 0.5, "chosen": False,
            "note": f"eval.threshold={rule} needs both classes in the validation split; 0.5 used"}
  # Candidates: below every score (all positive), then each distinct score (positive = strictly above it).
  candidates = np.concatenate([[-np.inf], np.unique(scores)])
  order = np.sort(scores)
  pos_sorted = np.sort(scores[labels])
  tp = n_pos - np.searchsorted(pos_sorted, candidates, side="right")
  fp = (len(order) - np.searchsorted(order, candidates, side="right")) - tp
  if kind == "youden":
    best = int(np.argmax(tp / n_pos - fp / n_neg))
  else:
    best = int(np.flatnonzero(tp >= value * n_pos - 1e-9).max())
  return {"rule": str(rule), "value": max(float(candidates[best]), 0.0), "chosen": True, "note": None}


def logit(probability: float) -> float:
  """The logit a probability threshold corresponds to (-inf for 0: every film positive)."""
  return -math.inf if probability <= 0.0 else math.log(probability / (1.0 - probability))


def called(logits: np.ndarray, threshold: float) -> np.ndarray:
  """Which films are called positive at a probability `threshold`: the logit above the threshold's, compared in
  the logits' own precision (the test report's and predict's one rule)."""
  return np.asarray(logits) > logit(threshold)


def confusion(labels: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int, int]:
  """(tn, fp, fn, tp) of boolean predictions against 0/1 labels."""
  labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
  return (int(np.sum(~predicted & ~labels)), int(np.sum(predicted & ~labels)), int(np.sum(~predicted & labels)),
          int(np.sum(predicted & labels)))


def patient_resamples(patients: list[str], resamples: int, seed: int) -> Iterator[np.ndarray]:
  """Film indices of each of `resamples` bootstrap draws of the *patients* (all of a drawn patient's films,
  as often as the patient is drawn); the same seed and patients give the same draws."""
  _, owner = np.unique(np.asarray(patients, dtype=object).astype(str), return_inverse=True)
  n_patients = owner.max() + 1
  rng = np.random.default_rng(seed)
  for _ in range(resamples):
    copies = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)[owner]
    yield np.repeat(np.arange(len(owner)), copies)


def _percentile_interval(values: list[float], confidence: float) -> list[float] | None:
  """The central `confidence` interval of the defined (non-NaN) values; None when none is defined."""
  values = np.asarray(values, np.float64)
  defined = values[~np.isnan(values)]
  tail = 100.0 * (1.0 - confidence) / 2.0
  return [float(np.percentile(defined, tail)), float(np.percentile(defined, 100.0 - tail))] if len(defined) \
      else None


def bootstrap_intervals(labels: np.ndarray, scores: np.ndarray, predicted: np.ndarray, patients: list[str],
                        resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
  """Percentile intervals of every metric over `resamples` bootstrap draws of the patients
  (`patient_resamples`), so films of one patient are not counted as independent.

  A metric undefined in a draw (AUC with one class) is left out of that draw; one undefined in every draw is
  None.
  """
  labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
  scores = np.asarray(scores, np.float64)
  draws = {m: [] for m in METRICS}
  for films in patient_resamples(patients, resamples, seed):
    report = classification_report(*confusion(labels[films], predicted[films]), labels[films], scores[films])
    for m in METRICS:
      draws[m].append(np.nan if report[m] is None else report[m])
  return {m: _percentile_interval(values, confidence) for m, values in draws.items()}


def auc_difference_interval(labels: np.ndarray, scores: np.ndarray, patients: list[str], other_labels: np.ndarray,
                            other_scores: np.ndarray, other_patients: list[str], resamples: int = 1000,
                            confidence: float = 0.95, seed: int = 0) -> list[float] | None:
  """The interval of AUROC(labels, scores) - AUROC(other_labels, other_scores), two independent sets of films:
  draw b resamples the patients of each (`patient_resamples`, this seed), so the first set's draws are those of
  its own `bootstrap_intervals`. A draw where either AUROC is undefined is left out."""
  labels, other_labels = np.asarray(labels).astype(bool), np.asarray(other_labels).astype(bool)
  scores, other_scores = np.asarray(scores, np.float64), np.asarray(other_scores, np.float64)
  differences = []
  for films, others in zip(patient_resamples(patients, resamples, seed),
                           patient_resamples(other_patients, resamples, seed + 1)):
    a, b = roc_auc(labels[films], scores[films]), roc_auc(other_labels[others], other_scores[others])
    differences.append(np.nan if a is None or b is None else a - b)
  return _percentile_interval(differences, confidence)


# --- Several targets at once (NIH's 14 findings): each target is reported as one binary task. ---
def per_target_auc(labels: np.ndarray, scores: np.ndarray) -> list[float | None]:
  """ROC AUC of each column of (N, K) labels and scores over the films labelled for it (a label below 0,
  `findings.MISSING`, is no label); None for a column with one class."""
  return [roc_auc(labels[known, k], scores[known, k]) for k in range(labels.shape[1])
          for known in [labels[:, k] >= 0]]


def mean_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
  """The mean AUROC over the targets where it is defined (CheXNet's summary figure); None if nowhere."""
  defined = [a for a in per_target_auc(labels, scores) if a is not None]
  return float(np.mean(defined)) if defined else None


def mean_auc_interval(labels: np.ndarray, scores: np.ndarray, patients: list[str], resamples: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> list[float] | None:
  """The interval of `mean_auc` over the same patient draws `bootstrap_intervals` makes with this seed.

  The mean is always over the same findings, those defined on the whole split: a draw in which one of them
  has a single class is left out, rather than averaging that draw over fewer findings.
  """
  labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
  kept = [k for k, auc in enumerate(per_target_auc(labels, scores)) if auc is not None]
  means = []
  for films in patient_resamples(patients, resamples, seed):
    draw = per_target_auc(labels[films][:, kept], scores[films][:, kept])
    means.append(np.nan if not kept or any(a is None for a in draw) else float(np.mean(draw)))
  return _percentile_interval(means, confidence)


# --- Curves for the report: what a reader looks at, from the same labels and scores as the figures above. ---
def _counts_above(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """For each candidate threshold (above every score, then each distinct score from the highest down), the
  true and false positives of calling a film positive when its score is strictly above it."""
  labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, np.float64)
  candidates = np.concatenate([[np.inf], np.unique(scores)[::-1], [-np.inf]])
  positives, everything = np.sort(scores[labels]), np.sort(scores)
  tp = len(positives) - np.searchsorted(positives, candidates, side="right")
  fp = len(everything) - np.searchsorted(everything, candidates, side="right") - tp
  return candidates, tp, fp


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
  """(false positive rate, true positive rate) from (0, 0) to (1, 1); None with one class. Its trapezoid
  area is `roc_auc` (ties fall on one segment, counting one half)."""
  _, tp, fp = _counts_above(labels, scores)
  if tp[-1] == 0 or fp[-1] == 0:
    return None
  return fp / fp[-1], tp / tp[-1]


def precision_recall_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
  """(recall, precision) over every threshold that calls at least one film positive; None without positives."""
  _, tp, fp = _counts_above(labels, scores)
  called = (tp + fp) > 0
  if tp[-1] == 0:
    return None
  return tp[called] / tp[-1], tp[called] / (tp[called] + fp[called])


def reliability(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict:
  """Calibration in equal-width probability bins: each non-empty bin's mean predicted probability, observed
  fraction of positives and film count, and the expected calibration error (count-weighted |gap|)."""
  labels, scores = np.asarray(labels, np.float64).ravel(), np.asarray(scores, np.float64).ravel()
  which = np.minimum((scores * bins).astype(int), bins - 1)
  counts = np.bincount(which, minlength=bins)
  kept = counts > 0
  predicted = np.bincount(which, weights=scores, minlength=bins)[kept] / counts[kept]
  observed = np.bincount(which, weights=labels, minlength=bins)[kept] / counts[kept]
  ece = float(np.sum(counts[kept] * np.abs(predicted - observed)) / max(len(scores), 1))
  return {"predicted": predicted, "observed": observed, "counts": counts[kept], "ece": ece}
