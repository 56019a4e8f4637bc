"""Classification metrics on the host, from confusion counts and scores (the paper's Table 6).

Undefined values (a precision with no positive predictions, an AUC on a split
with one class) are reported as None with the reason in `notes`, never as a
misleading 0 and never as a crash.
"""

import numpy as np
import pandas as pd


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
