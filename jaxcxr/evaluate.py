"""Scoring a trained state on a split: each epoch's validation figures, and the test report with the temperature
and the operating point chosen on validation, with patient-bootstrap intervals (for several targets, one report per finding, as
CheXNet's Table 2, and their mean AUROC). Callers hand it a state; it never trains.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcxr import calibration, devices, input_pipeline, metrics
from jaxcxr.data.cache import CachedSplit
from jaxcxr.train_step import TrainState


@dataclasses.dataclass(frozen=True)
class SplitScorer:
  """One pass of the jitted evaluation step over a split, in batches of `batch_size` placed by `put` (each
  process reading its rows of every batch)."""
  eval_fn: jax.stages.Wrapped                 # (state, batch) -> (loss and confusion sums at 0.5, logits)
  put: Callable[[dict], dict]
  batch_size: int

  def __call__(self, state: TrainState, split: CachedSplit) -> tuple[dict, np.ndarray, np.ndarray]:
    """The loss and confusion sums at 0.5, and every film's logit and probability, fetched once, at the end."""
    totals, logits = None, []
    for batch in input_pipeline.eval_batches(split, self.batch_size, devices.process_rows(self.batch_size)):
      sums, z = self.eval_fn(state, self.put(batch))
      totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
      logits.append(z)
    logits = devices.host_array(jnp.concatenate(logits))[:len(split)]  # a collective: every process runs it
    return jax.device_get(totals), logits, np.asarray(jax.nn.sigmoid(logits))


def epoch_metrics(score: SplitScorer, state: TrainState, split: CachedSplit) -> dict:
  """Loss and the metric report on one split at threshold 0.5 (what each epoch reports); for several
  targets, the counts pool every target's decisions and `auc` is the mean AUROC over the targets."""
  totals, _, scores = score(state, split)
  single = not split.targets
  report = metrics.classification_report(totals["tn"], totals["fp"], totals["fn"], totals["tp"],
                                         split.labels if single else None, scores if single else None)
  if not single:
    report["auc"] = metrics.mean_auc(split.labels, scores)
  return {"loss": float(totals["loss"]) / len(split), **report}


def _calibration(cfg: ml_collections.ConfigDict, val_labels: np.ndarray,
                 val_logits: np.ndarray | None) -> tuple[float, str | None]:
  """The temperature `cfg.calibration` fits on validation (1.0 for none), and a note where it could not."""
  if cfg.calibration == calibration.NONE:
    return 1.0, None
  return calibration.fit_temperature(val_labels, val_logits)


def _calibration_report(method: str, temperature: float, labels: np.ndarray, before: np.ndarray,
                        after: np.ndarray) -> dict:
  """ECE and Brier score on the test split before and after the temperature."""
  return {"method": method, "temperature": temperature,
          "ece_before": metrics.reliability(labels, before)["ece"], "ece_after": metrics.reliability(labels, after)["ece"],
          "brier_before": calibration.brier(labels, before), "brier_after": calibration.brier(labels, after)}


def _operating_point_report(cfg: ml_collections.ConfigDict, val_labels: np.ndarray, val_logits: np.ndarray | None,
                            labels: np.ndarray, logits: np.ndarray, patients: list[str]) -> dict:
  """One target's test report: its logits divided by the temperature fitted on validation, called at the
  operating point `cfg.threshold` picks on the calibrated validation scores, with intervals."""
  temperature, calibration_note = _calibration(cfg, val_labels, val_logits)
  val_scores = None if val_logits is None else calibration.sigmoid(val_logits / temperature)
  threshold = metrics.choose_threshold(val_labels, val_scores, cfg.threshold)
  calibrated = logits / temperature
  scores = calibration.sigmoid(calibrated)
  predicted = metrics.called(calibrated, threshold["value"])
  report = metrics.classification_report(*metrics.confusion(labels, predicted), labels, scores)
  report["threshold"] = threshold
  report["calibration"] = _calibration_report(cfg.calibration, temperature, labels, calibration.sigmoid(logits),
                                              scores)
  report["notes"] += [note for note in (threshold["note"], calibration_note) if note]
  if cfg.bootstrap > 0:
    report["intervals"] = metrics.bootstrap_intervals(labels, scores, predicted, patients, cfg.bootstrap,
                                                      cfg.confidence, cfg.seed)
    report["interval_confidence"] = cfg.confidence
  return report


def _finding_report(cfg: ml_collections.ConfigDict, val: CachedSplit, val_logits: np.ndarray | None,
                    test: CachedSplit, logits: np.ndarray, k: int) -> dict:
  """Target `k`'s `_operating_point_report`, over the films labelled for it in each split (a masked label,
  `findings.MISSING`, takes no part in its temperature, threshold, metrics or intervals)."""
  on_val, on_test = val.labels[:, k] >= 0, test.labels[:, k] >= 0
  report = _operating_point_report(cfg, val.labels[on_val, k], None if val_logits is None else val_logits[on_val, k],
                                   test.labels[on_test, k], logits[on_test, k],
                                   [p for p, kept in zip(test.patient_ids, on_test) if kept])
  if not on_test.all():
    report["films"] = int(on_test.sum())
  return report


def report_test_split(cfg: ml_collections.ConfigDict, score: SplitScorer, state: TrainState,
                      val: CachedSplit, test: CachedSplit) -> tuple[dict, np.ndarray]:
  """The `test` split at the operating point `cfg.threshold` (the config's `eval`) picks on `val`, with
  bootstrap intervals; for several targets one such report per target and their mean AUROC. Also the test
  films' logits, for the run report."""
  # A fixed threshold without calibration needs no pass over the validation split.
  needs_val = metrics.needs_scores(cfg.threshold) or cfg.calibration != calibration.NONE
  val_logits = score(state, val)[1] if needs_val else None
  _, logits, scores = score(state, test)
  if not test.targets:
    return _operating_point_report(cfg, val.labels, val_logits, test.labels, logits, test.patient_ids), logits
  findings = {target: _finding_report(cfg, val, val_logits, test, logits, k) for k, target in enumerate(test.targets)}
  undefined = [t for t, r in findings.items() if r["auc"] is None]
  report = {"targets": list(test.targets), "findings": findings, "mean_auc": metrics.mean_auc(test.labels, scores),
            "mean_auc_over": len(findings) - len(undefined),
            "notes": [f"mean AUROC over {len(findings) - len(undefined)} of {len(findings)} findings: AUC "
                      f"undefined for {', '.join(undefined)} (one class in the test split)"] if undefined else []}
  if cfg.bootstrap > 0:
    report["mean_auc_interval"] = metrics.mean_auc_interval(test.labels, scores, test.patient_ids, cfg.bootstrap,
                                                            cfg.confidence, cfg.seed)
    report["interval_confidence"] = cfg.confidence
  return report, logits
