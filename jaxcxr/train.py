"""The training loop: data, state, restore, one loop over steps with periodic actions, test.

`train_and_evaluate` is the one function `jaxcxr.main` calls. Compile time is taken
apart (ahead-of-time `lower().compile()`), the clock is read only after
`block_until_ready`, and time blocked on the input pipeline is measured apart
from step time, so sec/epoch and ms/step are the paper's steady-state figures.
"""

import contextlib
import dataclasses
import functools
import json
import logging
import pathlib
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcxr import augment, devices, explain, input_pipeline, metrics, optim, predict, reporting
from jaxcxr import config as config_lib
from jaxcxr.checkpoints import Checkpointer
from jaxcxr.data import datasets
from jaxcxr.data.cache import CachedSplit
from jaxcxr.errors import UserError
from jaxcxr.fsutil import ensure_writable_dir, exclusive
from jaxcxr.models import DTYPES, create_model, weights
from jaxcxr.progress import Progress
from jaxcxr.report import run_report, tensorboard
from jaxcxr.train_step import (
  TrainState,
  batch_shapes,
  create_state,
  eval_variables,
  jit_steps,
  placed_shapes,
  zero_sums,
)

log = logging.getLogger(__name__)
PNEUMONIA = "Pneumonia"  # the finding the synthetic films' opacities stand for


def is_time(step: int, every: int, total: int) -> bool:
  """Periodic actions fire every `every` steps and always on the last step."""
  return step == total or (every > 0 and step % every == 0)


def class_weights(split: CachedSplit, class_balance: str) -> tuple[float | list[float], float | list[float]]:
  """Loss weights of a positive and a negative example for `train.class_balance=pos_weight`; weights of 1
  otherwise (`sampling` balances the classes in the input stream instead). One weight each for one target,
  a list of one per finding for several.

  One target (whose training split holds both classes: `datasets.load_splits` refuses it otherwise):
  positives weighted negatives/positives, negatives 1. Several targets, as CheXNet: per finding, positives
  weighted N/(P+N) and negatives P/(P+N), so the two classes weigh the same within a finding and a rare
  finding does not outweigh the common ones (a finding with no positive in training then adds no loss).
  """
  columns = split.labels.reshape(len(split), -1)
  if class_balance != input_pipeline.POS_WEIGHT:
    return ([1.0] * columns.shape[1],) * 2 if split.targets else (1.0, 1.0)
  positives = columns.sum(axis=0)
  if not split.targets:
    return float((len(split) - positives[0]) / positives[0]), 1.0
  absent = [t for t, p in zip(split.targets, positives) if p in (0, len(split))]
  if absent:
    log.warning("training split has one class only for %s: it adds no loss", ", ".join(absent))
  return [float(1.0 - p / len(split)) for p in positives], [float(p / len(split)) for p in positives]


# Keys that change how fast a run goes, how often it saves or how it reports, never what it computes: a run
# may resume across them. model.lowering computes the same gradients another way, and train.num_devices the
# same global batch over more devices (to float rounding).
RESUMABLE_ACROSS = ("data.workers", "data.num_threads", "data.worker_processes", "data.prefetch", "data.cache_dir",
                    "model.lowering", "train.log_step_times", "train.eval_batch_size", "train.num_devices", "eval.",
                    "checkpoint.", "logging.")


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def run_signature(config: ml_collections.ConfigDict, data_dir: str | None) -> dict:
  """Everything that decides what a run computes, as dotted keys: a checkpoint written under another signature
  would mix two runs, so it is not resumed. `train.epochs` counts only where the schedule spans the whole run
  (raising it otherwise continues a finished run)."""
  flat = {k: v for k, v in _flatten(config.to_dict()).items() if not k.startswith(RESUMABLE_ACROSS)}
  if not optim.spans_the_run(config.train):
    flat.pop("train.epochs")
  flat["data_dir"] = str(pathlib.Path(data_dir).expanduser().resolve()) if data_dir else None
  # Through JSON, so tuples compare equal to the lists a restored JSON item holds.
  return json.loads(json.dumps(flat))


@dataclasses.dataclass(frozen=True)
class Run:
  """What the loop needs beyond the state; built once per process."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  splits: dict[str, CachedSplit]
  source: input_pipeline.SplitSource
  sharding: jax.sharding.Sharding   # the state's: replicated over the run's devices
  batch_sharding: jax.sharding.Sharding  # every batch's: split along the data axis
  train_fn: jax.stages.Wrapped      # (state, batch) -> state, the state donated
  eval_fn: jax.stages.Wrapped       # (state, batch) -> (loss and confusion sums, probabilities)
  steps_per_epoch: int
  total_steps: int

  def put(self, batch: dict) -> dict:
    """The global batch from this process's rows of it (all of it in a one-process run)."""
    return devices.global_batch(batch, self.batch_sharding)


def _predict(run: Run, state: TrainState, split: CachedSplit) -> tuple[dict, np.ndarray, np.ndarray]:
  """One pass over a split: the loss and confusion sums at 0.5, and every film's logit and probability,
  fetched once, at the end."""
  batch_size = run.config.train.eval_batch_size or run.config.train.batch_size
  totals, logits = None, []
  for batch in input_pipeline.eval_batches(split, batch_size, devices.process_rows(batch_size)):
    sums, z = run.eval_fn(state, run.put(batch))
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    logits.append(z)
  logits = devices.host_array(jnp.concatenate(logits))[:len(split)]  # a collective: every process runs it
  return jax.device_get(totals), logits, np.asarray(jax.nn.sigmoid(logits))


def evaluate(run: Run, state: TrainState, split: CachedSplit) -> dict:
  """Loss and the metric report on one split at threshold 0.5 (what each epoch reports); for several
  targets, the counts pool every target's decisions and `auc` is the mean AUROC over the targets."""
  totals, _, scores = _predict(run, state, split)
  single = not split.targets
  report = metrics.classification_report(totals["tn"], totals["fp"], totals["fn"], totals["tp"],
                                         split.labels if single else None, scores if single else None)
  if not single:
    report["auc"] = metrics.mean_auc(split.labels, scores)
  return {"loss": float(totals["loss"]) / len(split), **report}


def _operating_point_report(cfg: ml_collections.ConfigDict, val_labels: np.ndarray, val_scores: np.ndarray | None,
                            labels: np.ndarray, logits: np.ndarray, scores: np.ndarray, patients: list[str]) -> dict:
  """One target's test report at the operating point `cfg.threshold` picks on validation, with intervals."""
  threshold = metrics.choose_threshold(val_labels, val_scores, cfg.threshold)
  predicted = metrics.called(logits, threshold["value"])
  report = metrics.classification_report(*metrics.confusion(labels, predicted), labels, scores)
  report["threshold"] = threshold
  report["notes"] += [threshold["note"]] if threshold["note"] else []
  if cfg.bootstrap > 0:
    report["intervals"] = metrics.bootstrap_intervals(labels, scores, predicted, patients, cfg.bootstrap,
                                                      cfg.confidence, cfg.seed)
    report["interval_confidence"] = cfg.confidence
  return report


def test_report(run: Run, state: TrainState) -> tuple[dict, np.ndarray]:
  """The test split at the operating point `eval.threshold` picks on validation, with bootstrap intervals:
  for several targets, one such report per target (CheXNet's Table 2) and their mean AUROC. Also the test
  films' logits, for the run report."""
  cfg = run.config.eval
  val, test = run.splits["val"], run.splits["test"]
  # A fixed threshold needs no pass over the validation split.
  val_scores = _predict(run, state, val)[2] if metrics.needs_scores(cfg.threshold) else None
  _, logits, scores = _predict(run, state, test)
  if not test.targets:
    return _operating_point_report(cfg, val.labels, val_scores, test.labels, logits, scores, test.patient_ids), logits
  findings = {target: _operating_point_report(cfg, val.labels[:, k], None if val_scores is None else val_scores[:, k],
                                              test.labels[:, k], logits[:, k], scores[:, k], test.patient_ids)
              for k, target in enumerate(test.targets)}
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


def _whole_batch(films: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
  """A batch every process holds whole (a gallery's films), placed over the run's devices."""
  return devices.global_batch(films[devices.process_rows(len(films))], sharding)


def _applied_model(run: Run, state: TrainState, summary: dict) -> predict.Model:
  """The final network as `predict` applies it, on the run's devices, at the test report's operating points."""
  config = run.config
  targets = datasets.target_names(config.data)
  thresholds, note = predict.operating_points(summary, targets, summary["step"])
  return predict.Model(run.workdir, config, targets, thresholds, note, summary["step"],
                       config.train.eval_batch_size or config.train.batch_size, eval_variables(state),
                       state.apply_fn, DTYPES[config.model.dtype],
                       functools.partial(_whole_batch, sharding=run.batch_sharding))


def _report(run: Run, model: predict.Model, summary: dict,
            logits: np.ndarray) -> tuple[run_report.TestScores, list[run_report.GalleryFilm]]:
  """What report.html shows beyond the summary: the test split's scores, and a gallery of its films explained by
  the final network."""
  split = run.splits["test"]
  labels = split.labels.reshape(len(split), -1)
  test = run_report.TestScores(model.targets, labels, predict.probability(logits), model.labels(logits),
                               model.thresholds)
  shown = run_report.gallery_target(test)
  picks = run_report.gallery_picks(labels[:, shown], test.scores[:, shown], test.called[:, shown])
  films = np.stack([split.images[i] for i, _ in picks]) if picks else np.zeros((0,) + split.images.shape[1:], np.uint8)
  heatmaps = model.heatmaps(films, np.full(len(picks), shown))
  gallery = [run_report.GalleryFilm(kind, film, heatmap, predict.caption(model, logits[i], shown))
             for (i, kind), film, heatmap in zip(picks, films, heatmaps)]
  return test, gallery


def _localisation(run: Run, model: predict.Model, data_dir: str | None) -> dict | None:
  """On the synthetic films: of the test films with one opacity, how many have their pneumonia map (each
  `explain` method's) peak inside it."""
  opacities = datasets.synthetic_opacities(run.config.data, data_dir, run.workdir)
  if not opacities or PNEUMONIA not in model.targets:
    return None
  split = run.splits["test"]
  single = [(i, opacities[name][0]) for i, name in enumerate(split.image_ids) if len(opacities.get(name, ())) == 1]
  if not single:
    return None
  films = np.stack([split.images[i] for i, _ in single])
  targets = np.full(len(single), model.targets.index(PNEUMONIA))
  inside = {method: sum(explain.peak_inside(h, o, run.config.data.synthetic.image_size)
                        for h, (_, o) in zip(model.heatmaps(films, targets, method), single))
            for method in explain.METHODS}
  return {"films": len(single), "inside": {method: int(n) for method, n in inside.items()}}


def _check_finite(state: TrainState, last_good: int | None) -> None:
  bad = int(jax.device_get(state.sums["first_nonfinite_step"]))
  if bad >= 0:
    kept = f"the last good checkpoint (step {last_good}) is kept" if last_good is not None else \
        "no checkpoint was written"
    raise UserError(f"training diverged: the loss or update became NaN/inf at step {bad + 1}; {kept}; lower "
                    "train.learning_rate or check the input data")


def _initial_state(config: ml_collections.ConfigDict, init: Callable[[], TrainState],
                   sharding: jax.sharding.Sharding) -> TrainState:
  """A fresh state: random initialisation, then the backbone's pretrained weights where `model.init_from` names
  a file (the head stays fresh)."""
  state = jax.jit(init, out_shardings=sharding)()
  path = config.model.get("init_from")
  if not path:
    return state
  loaded = weights.load_backbone(path, {"params": state.params, "batch_stats": state.batch_stats})
  log.info("Backbone initialised from %s", path)
  return state.replace(params=jax.device_put(loaded["params"], sharding),
                       batch_stats=jax.device_put(loaded.get("batch_stats", {}), sharding))


def _compile(run: Run, state: TrainState) -> tuple[jax.stages.Compiled, float]:
  """The train step compiled ahead of time for the run's batch shapes, and the seconds that took."""
  batch = placed_shapes(batch_shapes(run.config.train.batch_size, run.config.data.image_size,
                                     run.splits["train"].outputs), run.batch_sharding)
  start = time.perf_counter()
  step_fn = run.train_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  log.info("Compiled the train step in %.2f s", compile_s)
  return step_fn, compile_s


@dataclasses.dataclass
class _Epoch:
  """The epoch in progress, as far as this process runs it (a resumed run joins it mid-way)."""
  number: int
  bar: Progress
  start_s: float
  wait_before_s: float
  steps: int = 0
  step_ms: list[float] = dataclasses.field(default_factory=list)


def _end_epoch(run: Run, epoch: _Epoch, state: TrainState, batches: input_pipeline.DevicePrefetcher,
               last_good: int | None) -> dict:
  """Closes the epoch's timing (after the device finishes it), checks the loss stayed finite and validates:
  the epoch's record."""
  jax.block_until_ready(state)
  epoch.bar.close()
  epoch_s = time.perf_counter() - epoch.start_s
  _check_finite(state, last_good)
  sums = jax.device_get(state.sums)
  val = evaluate(run, state, run.splits["val"])
  record = {"epoch": epoch.number, "step": int(state.step), "steps_timed": epoch.steps, "sec_per_epoch": epoch_s,
            "ms_per_step": 1000.0 * epoch_s / epoch.steps,
            "data_wait_fraction": (batches.wait_s - epoch.wait_before_s) / epoch_s,
            "train_loss": float(sums["loss"]) / int(sums["count"]),
            "train_accuracy": int(sums["correct"]) / (int(sums["count"]) * run.splits["train"].outputs),
            "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_auc": val["auc"]}
  if run.config.train.log_step_times:
    record["step_ms"] = epoch.step_ms
  return record


def _fit(run: Run, step_fn: jax.stages.Compiled, state: TrainState, data_state: dict | None,
         history: list[dict], ckpt: Checkpointer, scalars: tensorboard.Scalars | None) -> tuple[TrainState, list[dict]]:
  """Trains from `state.step` to the last step; returns the final state and the per-epoch history.

  One loop over steps. Periodic actions: an epoch's end (validation, a
  checkpoint, the metrics file, the log line) every `steps_per_epoch` steps, a
  checkpoint every `checkpoint.every_steps` steps in between.
  """
  cfg, spe = run.config, run.steps_per_epoch
  stream = input_pipeline.train_dataset(run.source, cfg.train.batch_size, cfg.train.epochs,
                                        cfg.train.seed, cfg.data.augment, devices.process_rows(cfg.train.batch_size))
  iterator = input_pipeline.train_iterator(stream, cfg.data.num_threads, cfg.data.prefetch,
                                          cfg.data.worker_processes)
  if data_state is not None:
    iterator.set_state(data_state)
  batches = input_pipeline.DevicePrefetcher(iterator, run.put)
  batches.fill()  # the pipeline's start-up stays out of the first epoch's time, as compilation does
  epoch = None
  try:
    for step in range(int(state.step), run.total_steps):
      if epoch is None:
        if step % spe == 0:  # a fresh epoch; one resumed mid-way keeps its sums from the checkpoint
          state = state.replace(sums=zero_sums())
        number = step // spe + 1
        bar = Progress(spe, f"epoch {number}/{cfg.train.epochs}", unit="step", shown=devices.is_primary())
        bar.done = step % spe
        epoch = _Epoch(number, bar, time.perf_counter(), batches.wait_s)
      batch = next(batches)
      start = time.perf_counter()
      state = step_fn(state, batch)
      epoch.steps += 1
      # The host waits for the device only where it needs a result: after every step when the paper's
      # per-step times are recorded, before the progress bar draws (so it counts executed steps, not
      # dispatched ones), and at checkpoints and epoch ends, which read the state.
      if cfg.train.log_step_times:
        jax.block_until_ready(state.step)
        epoch.step_ms.append(1000.0 * (time.perf_counter() - start))
      elif epoch.bar.due():
        jax.block_until_ready(state.step)
      epoch.bar.update()
      done = step + 1
      if done % spe == 0:
        record = _end_epoch(run, epoch, state, batches, ckpt.latest_step())
        history = [*history, record]
        state = state.replace(opt_state=optim.after_epoch(cfg.train, state.opt_state,
                                                          [r["val_loss"] for r in history], run.sharding))
        if scalars:  # before the checkpoint: a rerun from it drops them (purge_step) and logs the epoch again
          # The rate of the epoch's last step (`plateau` decides it from the epochs before this one).
          scalars.epoch(record, optim.learning_rate(cfg.train, run.total_steps, done - 1,
                                                    [r["val_loss"] for r in history[:-1]]))
        ckpt.save(state, batches.state, history)
        if devices.is_primary():
          reporting.write_history(run.workdir, history)
        log.info("%s", reporting.epoch_line(record))
        epoch = None
      elif is_time(done, cfg.checkpoint.every_steps, run.total_steps):
        _check_finite(state, ckpt.latest_step())
        ckpt.save(state, batches.state, history)
  finally:
    if cfg.data.worker_processes:
      iterator.close()  # stops grain's worker processes, also when training stops on an error
  return state, history


def _timing(history: list[dict], compile_s: float | None) -> dict:
  full = [r for r in history if r["steps_timed"] > 0]
  return {"compile_s": compile_s if compile_s is not None else 0.0,
          "mean_sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in full) if full else None,
          "median_ms_per_step": statistics.median(r["ms_per_step"] for r in full) if full else None,
          "data_wait_fraction": statistics.fmean(r["data_wait_fraction"] for r in full) if full else None,
          "epochs_timed": len(full),
          # Linux reports kilobytes: the process's peak resident memory, for the RSS benchmark.
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       device: jax.Device | Sequence[jax.Device], data_dir: str | None = None) -> dict:
  """Trains (or resumes) on `device` (data parallel over several: `devices.data_parallel`), evaluates on the
  test split, writes summary.json; returns it.

  The config is validated before anything else, and the workdir is held by this process throughout: a second
  run on it stops at once instead of rebuilding the data under this one.
  """
  config_lib.validate(config)
  used = [device] if isinstance(device, jax.Device) else list(device)
  for key in ("batch_size", "eval_batch_size"):
    if config.train[key] % len(used):
      raise UserError(f"train.{key}={config.train[key]} does not divide over the run's {len(used)} devices "
                      f"(the batch size is global); use a multiple of {len(used)}, or train.num_devices")
  workdir = ensure_writable_dir(pathlib.Path(workdir), "--workdir")
  # The run's processes share its folder: the first holds it for them all.
  with exclusive(workdir, "--workdir") if devices.is_primary() else contextlib.nullcontext():
    return _train_and_evaluate(config, workdir, used, data_dir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: pathlib.Path, used: list[jax.Device],
                        data_dir: str | None) -> dict:
  device = used[0]
  # The first process builds the cache; the others then find it built.
  splits = datasets.load_splits(config.data, data_dir, workdir) if devices.is_primary() else None
  devices.barrier("cache built")
  splits = splits or datasets.load_splits(config.data, data_dir, workdir)
  pos_weight, neg_weight = class_weights(splits["train"], config.train.class_balance)
  source = input_pipeline.train_source(splits["train"], config.train.class_balance)
  spe = len(source) // config.train.batch_size
  if spe == 0:
    raise UserError(f"the training split has {len(source)} images, fewer than "
                    f"train.batch_size={config.train.batch_size}; lower the batch size")
  total = spe * config.train.epochs
  optim.check_steps(config.train, total, spe)
  model, lowering = create_model(config.model, device.platform, outputs=splits["train"].outputs,
                                 devices=len(used))
  log.info("Convolutions computed by the %s lowering", lowering)
  tx = optim.create_optimizer(config.train, total)
  train_fn, eval_fn = jit_steps(pos_weight, model.dtype, augment.photometric_params(config.data.augment),
                                neg_weight)
  sharding, batch_sharding = devices.data_parallel(used)
  run = Run(config, workdir, splits, source, sharding, batch_sharding, train_fn, eval_fn, spe, total)
  init = functools.partial(create_state, model, tx, config.data.image_size, config.train.seed)
  abstract = placed_shapes(jax.eval_shape(init), sharding)
  ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint.keep, run_signature(config, data_dir))
  compile_s = None
  try:
    restored = ckpt.restore(abstract)
    # Once the checkpoints are known to be this config's: what `predict` rebuilds the network from.
    if devices.is_primary():
      reporting.write_config(workdir, config.to_dict())
    state, data_state, history = restored if restored else (_initial_state(config, init, sharding), None, [])
    if int(state.step) >= total:
      previous = reporting.read_summary(workdir)
      # A finished run reruns as a no-op, unless the test report is asked for with other eval.* settings.
      if previous is not None and previous.get("step") == int(state.step) and \
          previous["config"].get("eval") == config.eval.to_dict():
        log.info("Run already complete at step %d; nothing to do.", int(state.step))
        if devices.is_primary():
          print(reporting.summary_table(previous))
        return previous
      log.info("Run complete at step %d; reporting the test split again with this run's eval settings",
               int(state.step))
    else:
      step_fn, compile_s = _compile(run, state)
      scalars = tensorboard.Scalars(workdir / "tensorboard", int(state.step)) \
          if config.logging.tensorboard and devices.is_primary() else None
      try:
        state, history = _fit(run, step_fn, state, data_state, history, ckpt, scalars)
      finally:
        if scalars:
          scalars.close()
  finally:
    ckpt.close()
  if devices.is_primary():
    reporting.write_history(workdir, history)
  test, test_logits = test_report(run, state)
  summary = {"step": int(state.step), "test": test, "timing": _timing(history, compile_s),
             "device": devices.describe(device, used), "lowering": lowering, "synthetic": data_dir is None,
             "pos_weight": pos_weight, "neg_weight": neg_weight, "split_sizes": {k: len(v) for k, v in splits.items()},
             "split_positives": {k: v.positives_per_target() if v.targets else v.num_positive
                                 for k, v in splits.items()},
             "split_patients": {k: len(set(v.patient_ids)) for k, v in splits.items()},
             "epochs": history, "config": config.to_dict()}
  model = _applied_model(run, state, summary)
  summary["localisation"] = _localisation(run, model, data_dir)
  report = _report(run, model, summary, test_logits.reshape(len(splits["test"]), -1))  # every process computes
  if devices.is_primary():
    # The summary last: it marks the run complete, so a run killed before it reports again when rerun.
    path = run_report.write(workdir, summary, *report)
    reporting.write_summary(workdir, summary)
    print(reporting.summary_table(summary))
    log.info("Report: %s", path)
  return summary
