"""The run folder's own files, besides its checkpoints, cache and report: each is written atomically, and read
here only.

  config.json      the config the checkpoints were written with (what `predict` rebuilds the network from)
  metrics.jsonl    one record per epoch, rewritten from the checkpoint's history
  summary.json     the finished run: test report, timing, data; written last, so it marks the run complete
  test_scores.npz  the test split's labels, logits and patients (what an external evaluation compares with)
  predictions/     what `predict` writes: <name>.csv and <name>/ explanations
"""

import io
import json
import logging
import pathlib
import zipfile

import numpy as np

from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

CONFIG, METRICS, SUMMARY, PREDICTIONS = "config.json", "metrics.jsonl", "summary.json", "predictions"
TEST_SCORES = "test_scores.npz"


def write_history(workdir: pathlib.Path, history: list[dict]) -> None:
  """Rewrites metrics.jsonl from the history, so it always matches the checkpoint it resumed from."""
  atomic_write_text(workdir / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))


def write_summary(workdir: pathlib.Path, summary: dict) -> None:
  atomic_write_json(workdir / SUMMARY, summary)


def write_config(workdir: pathlib.Path, config: dict) -> None:
  """The config the run's checkpoints were written with, for whoever applies the run later (`predict`)."""
  atomic_write_json(workdir / CONFIG, config)


def _read(path: pathlib.Path, fix: str) -> dict:
  try:
    value = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from e
  if not isinstance(value, dict):
    raise UserError(f"{path} is damaged (it holds a {type(value).__name__}, not a JSON object); {fix}")
  return value


def rerun_fix(workdir: pathlib.Path) -> str:
  return f"rerun training with the same command and --workdir={workdir} to rewrite it from the checkpoints"


def read_config(workdir: pathlib.Path) -> dict | None:
  """The run's config: config.json, else (a run from before it was written) the finished run's summary."""
  path = workdir / CONFIG
  if path.is_file():
    return _read(path, rerun_fix(workdir))
  summary = read_summary(workdir)
  return summary["config"] if summary else None


def read_summary(workdir: pathlib.Path) -> dict | None:
  """The finished run's summary.json; None where there is none yet. UserError where it is damaged."""
  path = workdir / SUMMARY
  return _read(path, rerun_fix(workdir)) if path.is_file() else None


def previous_summary(workdir: pathlib.Path) -> dict | None:
  """For training, which rewrites it: the summary, or None where there is none or it is damaged (then the test
  report is made again, as for a run killed before its summary)."""
  try:
    return read_summary(workdir)
  except UserError:
    log.warning("%s is damaged: the test split is reported again to rewrite it", workdir / SUMMARY)
    return None


def write_test_scores(workdir: pathlib.Path, step: int, labels: np.ndarray, logits: np.ndarray,
                      patients: list[str]) -> None:
  """The test split's (N, targets) labels and logits at `step`, and each film's patient."""
  buffer = io.BytesIO()
  np.savez(buffer, labels=labels.reshape(len(labels), -1), logits=logits.reshape(len(labels), -1),
           patients=np.asarray(patients, dtype=str), step=np.asarray(step))
  atomic_write_bytes(workdir / TEST_SCORES, buffer.getvalue())


def read_test_scores(workdir: pathlib.Path) -> dict | None:
  """What `write_test_scores` wrote; None for a run from before it was written. UserError where it is damaged."""
  path = workdir / TEST_SCORES
  if not path.is_file():
    return None
  try:
    with np.load(path) as saved:
      scores = {"labels": saved["labels"], "logits": saved["logits"], "patients": [str(p) for p in saved["patients"]],
                "step": int(saved["step"])}
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # an .npz is a zip archive
    raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); {rerun_fix(workdir)}") from e
  if not len(scores["labels"]) == len(scores["logits"]) == len(scores["patients"]):
    raise UserError(f"{path} is damaged (its arrays differ in length); {rerun_fix(workdir)}")
  return scores


def test_scores_intact(workdir: pathlib.Path) -> bool:
  try:
    return read_test_scores(workdir) is not None
  except UserError:
    return False


def predictions_dir(workdir: pathlib.Path) -> pathlib.Path:
  return workdir / PREDICTIONS
