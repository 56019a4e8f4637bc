"""How a trained network's logits become what a user reads: per target, a probability (the logit divided by the
temperature fitted on validation, `calibration`) and a label (that probability above the operating point chosen
on validation). The test report, the run report, `predict` and the export's loader all read logits through one
`Readout`, so they call every film alike. Numpy only: the export's loader uses it without the model code.
"""

import dataclasses

import numpy as np

from jaxcxr import calibration, metrics

UNFINISHED_THRESHOLD = 0.5


class MalformedSummary(ValueError):
  """A run's summary whose test report lacks what a readout is read from (a hand-edited or foreign file)."""


@dataclasses.dataclass(frozen=True)
class Readout:
  targets: tuple[str, ...]
  thresholds: tuple[float, ...]     # each target's operating point, a calibrated probability
  temperatures: tuple[float, ...]   # each target's temperature (1.0: uncalibrated)
  note: str                         # where the operating points come from, for a user to read

  def calibrated(self, logits: np.ndarray) -> np.ndarray:
    """(N, targets) logits divided by each target's temperature."""
    return np.asarray(logits, np.float64) / np.asarray(self.temperatures, np.float64)

  def probabilities(self, logits: np.ndarray) -> np.ndarray:
    return calibration.sigmoid(self.calibrated(logits))

  def labels(self, logits: np.ndarray) -> np.ndarray:
    """1 where a film is called positive, compared as the test report does (the calibrated logit above the
    threshold's logit)."""
    calibrated = self.calibrated(logits)
    columns = [metrics.called(calibrated[:, k], t) for k, t in enumerate(self.thresholds)]
    return np.stack(columns, axis=1).astype(np.int32) if columns else np.zeros(calibrated.shape, np.int32)

  def caption(self, logits: np.ndarray, target: int) -> str:
    """What an explained film's overlay says: the target, its probability and the call at the threshold."""
    verdict = "positive" if self.labels(logits[None])[0, target] else "negative"
    return (f"{self.targets[target]} p={float(self.probabilities(logits[None])[0, target]):.3f}: {verdict} "
            f"(threshold {self.thresholds[target]:.3f})")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, fields: dict) -> "Readout":
    """The readout `to_dict` wrote; ValueError naming what is wrong where `fields` is not one."""
    try:
      targets = tuple(fields["targets"])
      thresholds = tuple(map(float, fields["thresholds"]))
      temperatures = tuple(map(float, fields["temperatures"]))
      note = str(fields["note"])
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"its readout is not targets, thresholds, temperatures and a note ({type(e).__name__}: {e})"
                       ) from e
    if not targets or not all(isinstance(t, str) for t in targets):
      raise ValueError(f"its readout's targets are {list(targets)}, not a list of finding names")
    if not len(thresholds) == len(temperatures) == len(targets):
      raise ValueError(f"its readout has {len(targets)} targets but {len(thresholds)} thresholds and "
                       f"{len(temperatures)} temperatures")
    if not all(np.isfinite(t) and t > 0 for t in temperatures) or not all(np.isfinite(thresholds)):
      raise ValueError("its readout holds a threshold that is not finite or a temperature that is not positive")
    return cls(targets, thresholds, temperatures, note)


def from_summary(summary: dict | None, targets: tuple[str, ...], step: int) -> Readout:
  """Each target's temperature and operating point as the run chose them on validation, if `summary` (the run's)
  is of checkpoint `step`; else temperature 1 and threshold 0.5, with a note saying why."""
  if summary is None or summary.get("step") != step:
    why = "the run has not finished" if summary is None else f"its summary is of step {summary.get('step')}"
    return Readout(targets, (UNFINISHED_THRESHOLD,) * len(targets), (1.0,) * len(targets),
                   f"uncalibrated, labels at {UNFINISHED_THRESHOLD}: {why}, so no temperature or operating point "
                   f"was chosen on validation for step {step}")
  try:
    test = summary["test"]
    chosen = [test["findings"][t] for t in targets] if "findings" in test else [test]
    rules = sorted({c["threshold"]["rule"] for c in chosen})
    thresholds = tuple(float(c["threshold"]["value"]) for c in chosen)
    # A summary written before calibration existed has none: its probabilities are the network's own.
    temperatures = tuple(float(c.get("calibration", {}).get("temperature", 1.0)) for c in chosen)
    methods = sorted({c.get("calibration", {}).get("method", calibration.NONE) for c in chosen})
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise MalformedSummary(f"its test report has no operating point for {', '.join(targets)} "
                           f"({type(e).__name__}: {e})") from e
  shown = f"temperature {temperatures[0]:.3f}" if len(temperatures) == 1 else \
      f"temperatures {min(temperatures):.3f}-{max(temperatures):.3f}"
  return Readout(targets, thresholds, temperatures,
                 f"labels at the run's operating point (eval.threshold={', '.join(rules)}), probabilities "
                 f"calibrated by eval.calibration={', '.join(methods)} ({shown})")
