"""The training loop: data, state, restore, epochs with timing, validation, checkpoints, test.

`train_and_evaluate` is the one function `run.py` calls. Compile time is taken
apart (ahead-of-time `lower().compile()`), the clock is read only after
`block_until_ready`, and time blocked on the input pipeline is measured apart
from step time, so sec/epoch and ms/step are the paper's steady-state figures.
"""

import dataclasses
import functools
import json
import logging
import pathlib
import resource
import statistics
import time

import jax
import ml_collections
import numpy as np

from jaxcxr import augment, devices, input_pipeline, metrics, reporting
from jaxcxr.checkpoints import Checkpointer
from jaxcxr.data import datasets
from jaxcxr.data.cache import CachedSplit
from jaxcxr.errors import UserError
from jaxcxr.fsutil import ensure_writable_dir
from jaxcxr.models import create_model
from jaxcxr.optim import create_optimizer
from jaxcxr.progress import Progress
from jaxcxr.train_step import (
  TrainState,
  create_state,
  jit_steps,
  placed_shapes,
  step_flops,
  zero_sums,
)

log = logging.getLogger(__name__)


def is_time(step: int, every: int, total: int) -> bool:
  """Periodic actions fire every `every` steps and always on the last step."""
  return step == total or (every > 0 and step % every == 0)


CLASS_BALANCE = ("pos_weight", "sampling", "none")


def positive_weight(split: CachedSplit, class_balance: str) -> float:
  """Loss weight of a positive example: negatives/positives in training for `pos_weight`, else 1
  (`sampling` balances the classes in the input stream instead)."""
  if class_balance not in CLASS_BALANCE:
    raise UserError(f"train.class_balance={class_balance!r}; choose one of {', '.join(CLASS_BALANCE)}")
  if class_balance != "pos_weight":
    return 1.0
  pos = split.num_positive
  if pos in (0, len(split)):
    log.warning("training split has one class only; positive weight left at 1")
    return 1.0
  return (len(split) - pos) / pos


def model_signature(config: ml_collections.ConfigDict) -> dict:
  """What fixes the parameter shapes: a checkpoint with another signature cannot be resumed."""
  # Through JSON, so tuples compare equal to the lists a restored JSON item holds.
  # lowering changes how gradients are computed, not the parameters: a run may resume across it.
  model = {k: v for k, v in config.model.to_dict().items() if k != "lowering"}
  return json.loads(json.dumps({**model, "image_size": config.data.image_size}))


@dataclasses.dataclass
class Run:
  """What the loop needs beyond the state; built once per process."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  splits: dict[str, CachedSplit]
  source: input_pipeline.SplitSource
  model: object
  pos_weight: float
  sharding: jax.sharding.Sharding
  train_fn: object
  eval_fn: object
  steps_per_epoch: int
  total_steps: int

  def put(self, batch: dict) -> dict:
    return jax.device_put(batch, self.sharding)


def evaluate(run: Run, state: TrainState, split: CachedSplit) -> dict:
  """Loss and the full metric report on one split; scores are fetched once, at the end."""
  batch_size = run.config.train.eval_batch_size or run.config.train.batch_size
  totals, probs = None, []
  for batch in input_pipeline.eval_batches(split, batch_size):
    sums, p = run.eval_fn(state, run.put(batch))
    totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    probs.append(p)
  totals = jax.device_get(totals)
  scores = np.concatenate(jax.device_get(probs))[:len(split)]
  report = metrics.classification_report(totals["tn"], totals["fp"], totals["fn"], totals["tp"],
                                         split.labels, scores)
  return {"loss": float(totals["loss"]) / len(split), **report}


def _check_finite(state: TrainState, last_good: int | None) -> None:
  bad = int(jax.device_get(state.sums["first_nonfinite_step"]))
  if bad >= 0:
    kept = f"the last good checkpoint (step {last_good}) is kept" if last_good is not None else \
        "no checkpoint was written"
    raise UserError(f"training diverged: the loss or update became NaN/inf at step {bad + 1}; {kept}; lower "
                    "train.learning_rate or check the input data")


def _train_epochs(run: Run, state: TrainState, data_state: dict | None, history: list[dict],
                  ckpt: Checkpointer) -> tuple[TrainState, list[dict], float, float | None]:
  """Runs the remaining epochs; returns the final state, the history, compile time and step FLOPs."""
  cfg = run.config
  stream = input_pipeline.train_dataset(run.source, cfg.train.batch_size, cfg.train.epochs,
                                        cfg.train.seed, cfg.data.augment)
  iterator = input_pipeline.train_iterator(stream, cfg.data.num_threads, cfg.data.prefetch,
                                          cfg.data.worker_processes)
  if data_state is not None:
    iterator.set_state(data_state)
  try:
    return _run_epochs(run, state, history, ckpt, input_pipeline.DevicePrefetcher(iterator, run.put))
  finally:
    if cfg.data.worker_processes:
      iterator.close()  # stops grain's worker processes, also when training stops on an error


def _run_epochs(run: Run, state: TrainState, history: list[dict], ckpt: Checkpointer,
                batches: input_pipeline.DevicePrefetcher) -> tuple[TrainState, list[dict], float, float | None]:
  """The epoch loop of `_train_epochs`, over its already positioned batch stream."""
  cfg = run.config
  pending = next(batches)
  start = time.perf_counter()
  step_fn = run.train_fn.lower(state, pending).compile()
  compile_s = time.perf_counter() - start
  flops = step_flops(run.model, state, pending, run.pos_weight, augment.photometric_params(cfg.data.augment))
  log.info("Compiled the train step in %.2f s (%s FLOPs per step)", compile_s, _fmt_flops(flops))
  step = int(state.step)
  spe = run.steps_per_epoch
  for epoch in range(step // spe, cfg.train.epochs):
    if step % spe == 0:
      state = state.replace(sums=zero_sums())
    wait_before, t0, steps_run, step_ms = batches.wait_s, time.perf_counter(), 0, []
    with Progress(spe, f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step") as bar:
      bar.done = step % spe
      while step < (epoch + 1) * spe:
        batch = pending if pending is not None else next(batches)
        pending = None
        t_step = time.perf_counter()
        state = step_fn(state, batch)
        step, steps_run = step + 1, steps_run + 1
        if cfg.train.log_step_times:  # the paper's per-step times: a sync after every step
          jax.block_until_ready(state.step)
          step_ms.append(1000.0 * (time.perf_counter() - t_step))
        elif bar.due():  # A logging point: sync so the bar shows executed, not dispatched, steps.
          jax.block_until_ready(state.step)
        bar.update()
        if step < (epoch + 1) * spe and is_time(step, cfg.checkpoint.every_steps, run.total_steps):
          _check_finite(state, ckpt.latest_step())
          ckpt.save(state, batches.state, history)
      jax.block_until_ready(state)
    epoch_s = time.perf_counter() - t0
    _check_finite(state, ckpt.latest_step())
    sums = jax.device_get(state.sums)
    val = evaluate(run, state, run.splits["val"])
    record = {"epoch": epoch + 1, "step": step, "steps_timed": steps_run, "sec_per_epoch": epoch_s,
              "ms_per_step": 1000.0 * epoch_s / steps_run,
              "data_wait_fraction": (batches.wait_s - wait_before) / epoch_s,
              "train_loss": float(sums["loss"]) / int(sums["count"]),
              "train_accuracy": int(sums["correct"]) / int(sums["count"]),
              "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_auc": val["auc"]}
    if cfg.train.log_step_times:
      record["step_ms"] = step_ms
    history = [*history, record]
    ckpt.save(state, batches.state, history)
    reporting.write_history(run.workdir, history)
    log.info("%s", reporting.epoch_line(record))
  return state, history, compile_s, flops


def _fmt_flops(flops: float | None) -> str:
  return "unknown" if flops is None else f"{flops / 1e9:.2f} G"


def _timing(history: list[dict], compile_s: float | None, flops: float | None) -> dict:
  full = [r for r in history if r["steps_timed"] > 0]
  return {"compile_s": compile_s if compile_s is not None else 0.0, "flops_per_step": flops,
          "mean_sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in full) if full else None,
          "median_ms_per_step": statistics.median(r["ms_per_step"] for r in full) if full else None,
          "data_wait_fraction": statistics.fmean(r["data_wait_fraction"] for r in full) if full else None,
          "epochs_timed": len(full),
          # Linux reports kilobytes: the process's peak resident memory, for the RSS benchmark.
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       device: jax.Device, data_dir: str | None = None) -> dict:
  """Trains (or resumes) on `device`, evaluates on the test split, writes summary.json; returns it."""
  workdir = ensure_writable_dir(pathlib.Path(workdir), "--workdir")
  if config.train.batch_size < 1 or config.train.epochs < 1:
    raise UserError(f"train.batch_size={config.train.batch_size} and train.epochs={config.train.epochs} "
                    "must both be at least 1")
  splits = datasets.load_splits(config.data, data_dir, workdir)
  pos_weight = positive_weight(splits["train"], config.train.class_balance)
  source = input_pipeline.train_source(splits["train"], config.train.class_balance)
  spe = len(source) // config.train.batch_size
  if spe == 0:
    raise UserError(f"the training split has {len(source)} images, fewer than "
                    f"train.batch_size={config.train.batch_size}; lower the batch size")
  total = spe * config.train.epochs
  model, lowering = create_model(config.model, device.platform)
  log.info("Convolutions computed by the %s lowering (model.lowering=%s)", lowering, config.model.lowering)
  tx = create_optimizer(config.train, total)
  train_fn, eval_fn = jit_steps(pos_weight, model.dtype, augment.photometric_params(config.data.augment))
  sharding = jax.sharding.SingleDeviceSharding(device)
  run = Run(config, workdir, splits, source, model, pos_weight, sharding, train_fn, eval_fn, spe, total)
  init = functools.partial(create_state, model, tx, config.data.image_size, config.train.seed)
  abstract = placed_shapes(jax.eval_shape(init), sharding)
  ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint.keep, model_signature(config))
  try:
    restored = ckpt.restore(abstract)
    state, data_state, history = restored if restored else (
        jax.jit(init, out_shardings=sharding)(), None, [])
    if int(state.step) >= total:
      previous = reporting.read_summary(workdir)
      if previous is not None and previous.get("step") == int(state.step):
        log.info("Run already complete at step %d; nothing to do.", int(state.step))
        print(reporting.summary_table(previous))
        return previous
      compile_s = flops = None
    else:
      state, history, compile_s, flops = _train_epochs(run, state, data_state, history, ckpt)
  finally:
    ckpt.close()
  reporting.write_history(workdir, history)
  test = evaluate(run, state, splits["test"])
  test.pop("loss")
  summary = {"step": int(state.step), "test": test, "timing": _timing(history, compile_s, flops),
             "device": devices.describe(device), "lowering": lowering, "synthetic": data_dir is None,
             "pos_weight": pos_weight, "split_sizes": {k: len(v) for k, v in splits.items()},
             "split_positives": {k: v.num_positive for k, v in splits.items()},
             "epochs": history, "config": config.to_dict()}
  reporting.write_summary(workdir, summary)
  print(reporting.summary_table(summary))
  return summary
