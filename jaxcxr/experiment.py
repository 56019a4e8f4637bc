"""A whole run, as `python run.py` makes it: train (or resume), then evaluate the final state on the test split,
write the run report and, last, summary.json.

  summary = experiment.train_and_evaluate(config, workdir, jax.devices("cpu"))

The config is validated before anything else, and the run folder is held by this process throughout: a second
run on it stops at once instead of rebuilding the data under this one. The summary is written last: it marks
the run complete, so a run killed before it reports again when rerun, and a finished run reruns as a no-op.
"""

import contextlib
import functools
import logging
import pathlib
import resource
import statistics
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from jaxcxr import checkpoints, devices, evaluate, inference, train, workdir
from jaxcxr import config as config_lib
from jaxcxr.data import datasets
from jaxcxr.fsutil import ensure_writable_dir, exclusive
from jaxcxr.report import console, run_report

log = logging.getLogger(__name__)


def train_and_evaluate(config: ml_collections.ConfigDict, folder: str | pathlib.Path,
                       device: jax.Device | Sequence[jax.Device], data_dir: str | None = None) -> dict:
  """Trains (or resumes) on `device` (data parallel over several: `devices.data_parallel`), evaluates on the
  test split, writes report.html and summary.json in `folder`; returns the summary."""
  config_lib.validate(config, weights_needed=not checkpoints.saved_in(folder))
  used = [device] if isinstance(device, jax.Device) else list(device)
  config_lib.check_device_count(config, len(used))
  folder = ensure_writable_dir(pathlib.Path(folder), "--workdir")
  # The run's processes share its folder: the first holds it for them all.
  with exclusive(folder, "--workdir") if devices.is_primary() else contextlib.nullcontext():
    trained = train.train(config, folder, used, data_dir)
    if trained.compile_s is None:  # the checkpoint was at the last step already
      step, total = int(trained.state.step), trained.run.total_steps
      if step > total:  # train.epochs lowered below a finished run's: it is not cut back
        log.warning("The checkpoint is at step %d, past this config's %d steps (train.epochs=%d): the run is "
                    "reported as it finished; use a new --workdir for a shorter run", step, total, config.train.epochs)
      previous = workdir.previous_summary(folder)
      # A finished run reruns as a no-op, unless the test report is asked for with other eval.* settings (or its
      # test scores are missing: a run from before they were written, or a damaged file).
      if previous is not None and previous.get("step") == int(trained.state.step) and \
          _eval_settings(previous) == config.eval.to_dict() and workdir.test_scores_intact(folder):
        try:
          text = console.summary_text(previous)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
          log.warning("%s is damaged (%s: %s): the test split is reported again to rewrite it",
                      folder / workdir.SUMMARY, type(e).__name__, e)
        else:
          log.info("Run already complete at step %d; nothing to do.", int(trained.state.step))
          if devices.is_primary():
            print(text)
          return previous
      log.info("Run complete at step %d; reporting the test split again with this run's eval settings",
               int(trained.state.step))
    return _evaluate_and_report(trained, used, data_dir)


def _eval_settings(summary: dict) -> dict | None:
  """The eval.* settings a finished run's summary was reported with; None where it records none."""
  config = summary.get("config")
  return config.get("eval") if isinstance(config, dict) else None


def _peak_device_memory_mb(used: list[jax.Device]) -> float | None:
  """The most memory this process's first device held at once, where its platform counts it (GPUs; not the CPU).

  Only a process's own devices report memory: over several processes, the others' raise."""
  stats = next(d for d in used if d.process_index == jax.process_index()).memory_stats() or {}
  return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None


def _timing(history: list[dict], compile_s: float | None, used: list[jax.Device]) -> dict:
  full = [r for r in history if r["steps_timed"] > 0]
  return {"compile_s": compile_s if compile_s is not None else 0.0,
          "mean_sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in full) if full else None,
          "median_ms_per_step": statistics.median(r["ms_per_step"] for r in full) if full else None,
          "data_wait_fraction": statistics.fmean(r["data_wait_fraction"] for r in full) if full else None,
          "epochs_timed": len(full), "peak_device_memory_mb": _peak_device_memory_mb(used),
          # Linux reports kilobytes: the process's peak resident memory, for the RSS benchmark.
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _whole_batch(films: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A batch every process holds whole (a gallery's films), placed over the run's devices."""
  return devices.global_batch(films[devices.process_rows(len(films))], sharding)


def _evaluate_and_report(trained: train.Trained, used: list[jax.Device], data_dir: str | None) -> dict:
  run, state = trained.run, trained.state
  config, splits = run.config, run.splits
  test, test_logits = evaluate.report_test_split(config.eval, run.score, state, splits["val"], splits["test"])
  summary = {"step": int(state.step), "test": test, "timing": _timing(trained.history, trained.compile_s, used),
             "device": devices.record(used), "lowering": trained.lowering,
             "synthetic": datasets.uses_synthetic(config.data, data_dir),
             "pos_weight": trained.pos_weight, "neg_weight": trained.neg_weight,
             "split_sizes": {k: len(v) for k, v in splits.items()},
             "split_positives": {k: v.positives_per_target() if v.targets else v.num_positive
                                 for k, v in splits.items()},
             "split_patients": {k: len(set(v.patient_ids)) for k, v in splits.items()},
             "epochs": trained.history, "config": config.to_dict(), "localisation": None}
  report = None
  if config.logging.report:
    # The final network as `predict` applies it, on the run's devices, at the test report's operating points.
    network = inference.from_state(config, state, summary, functools.partial(_whole_batch,
                                                                              sharding=run.batch_sharding))
    # Every process computes the maps (they are collectives); the first writes them.
    summary["localisation"] = run_report.localisation(
        network, splits["test"], datasets.synthetic_opacities(config.data, data_dir, run.workdir),
        config.data.synthetic.image_size, datasets.localisation_boxes(config.data, data_dir, splits["test"].image_ids))
    logits = test_logits.reshape(len(splits["test"]), -1)
    scores = run_report.test_scores(network, splits["test"], logits)
    report = scores, run_report.gallery(network, splits["test"], scores, logits)
  if devices.is_primary():
    path = run_report.write(run.workdir, summary, *report) if report else None
    workdir.write_test_scores(run.workdir, int(state.step), splits["test"].labels, test_logits,
                              splits["test"].patient_ids)
    workdir.write_summary(run.workdir, summary)
    print(console.summary_text(summary))
    if path:
      log.info("Report: %s", path)
  return summary
