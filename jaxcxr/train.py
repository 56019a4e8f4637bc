"""The training loop: data, state, restore, one loop over steps with periodic actions.

`train` returns the final state and the per-epoch history; evaluating it on the test split, the report and
the summary are `jaxcxr.experiment`'s, which calls it. Compile time is taken
apart (ahead-of-time `lower().compile()`), the clock is read only after
`block_until_ready`, and time blocked on the input pipeline is measured apart
from step time, so sec/epoch and ms/step are the paper's steady-state figures.
"""

import dataclasses
import functools
import logging
import pathlib
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from jaxcxr import augment, checkpoints, devices, evaluate, input_pipeline, optim, tensorboard, workdir
from jaxcxr import config as config_lib
from jaxcxr.checkpoints import Checkpointer
from jaxcxr.data import datasets
from jaxcxr.data.cache import CachedSplit
from jaxcxr.errors import UserError
from jaxcxr.models import create_model, weights
from jaxcxr.progress import Progress
from jaxcxr.train_step import TrainState, batch_shapes, jit_steps, placed_shapes, state_template, zero_sums

log = logging.getLogger(__name__)


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
  positives = (columns == 1).sum(axis=0)
  if not split.targets:
    return float((len(split) - positives[0]) / positives[0]), 1.0
  known = np.maximum((columns >= 0).sum(axis=0), 1)  # a finding's labelled films (findings.MISSING masks one)
  absent = [t for t, p, n in zip(split.targets, positives, known) if p in (0, n)]
  if absent:
    log.warning("training split has one class only for %s: it adds no loss", ", ".join(absent))
  return [float(1.0 - p / n) for p, n in zip(positives, known)], [float(p / n) for p, n in zip(positives, known)]


@dataclasses.dataclass(frozen=True)
class Run:
  """What the loop needs beyond the state; built once per process."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  splits: dict[str, CachedSplit]
  source: input_pipeline.SplitSource
  sharding: jax.sharding.Sharding   # the state's: replicated over the run's devices
  batch_sharding: jax.sharding.Sharding  # every batch's: split along the data axis
  put: Callable[[dict], dict]       # a batch from this process's rows of it, placed by batch_sharding
  train_fn: jax.stages.Wrapped      # (state, batch) -> state, the state donated
  score: evaluate.SplitScorer       # the evaluation step over a split
  steps_per_epoch: int
  total_steps: int


def epoch_line(r: dict) -> str:
  """An epoch's record as the log shows it (paper Tables 1, 2 and 5)."""
  return (f"epoch {r['epoch']:3d} | {r['sec_per_epoch']:7.2f} s/epoch | {r['ms_per_step']:8.2f} ms/step | "
          f"data wait {100 * r['data_wait_fraction']:4.1f}% | train loss {r['train_loss']:.4f} "
          f"acc {r['train_accuracy']:.4f} | val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.4f} "
          f"auc {'n/a' if r['val_auc'] is None else format(r['val_auc'], '.4f')}")  # n/a: one class in val


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
  val = evaluate.epoch_metrics(run.score, state, run.splits["val"])
  record = {"epoch": epoch.number, "step": int(state.step), "steps_timed": epoch.steps, "sec_per_epoch": epoch_s,
            "ms_per_step": 1000.0 * epoch_s / epoch.steps,
            "data_wait_fraction": (batches.wait_s - epoch.wait_before_s) / epoch_s,
            "train_loss": float(sums["loss"]) / int(sums["count"]),
            # Over the decisions a label exists for: a masked finding is no decision (exact when each film is
            # seen once an epoch, the expected count under sampling).
            "train_accuracy": int(sums["correct"]) / (int(sums["count"]) * run.splits["train"].known_per_film),
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
          workdir.write_history(run.workdir, history)
        log.info("%s", epoch_line(record))
        epoch = None
      elif is_time(done, cfg.checkpoint.every_steps, run.total_steps):
        _check_finite(state, ckpt.latest_step())
        ckpt.save(state, batches.state, history)
  finally:
    if cfg.data.worker_processes:
      iterator.close()  # stops grain's worker processes, also when training stops on an error
  return state, history


@dataclasses.dataclass(frozen=True)
class Trained:
  """What training hands on: the run, its final state and per-epoch history, and how it got there."""
  run: Run
  state: TrainState
  history: list[dict]
  compile_s: float | None  # None where the checkpoint was already at the last step: nothing was trained
  lowering: str
  pos_weight: float | list[float]
  neg_weight: float | list[float]


def train(config: ml_collections.ConfigDict, folder: pathlib.Path, used: list[jax.Device],
          data_dir: str | None) -> Trained:
  """Trains (or resumes) `config` on the `used` devices (data parallel over several) in the run folder `folder`,
  which the caller holds; a run whose checkpoint is at the last step is restored and returned as it is."""
  # The first process builds the cache; the others then find it built.
  splits = datasets.load_splits(config.data, data_dir, folder) if devices.is_primary() else None
  devices.barrier("cache built")
  splits = splits or datasets.load_splits(config.data, data_dir, folder)
  pos_weight, neg_weight = class_weights(splits["train"], config.train.class_balance)
  source = input_pipeline.train_source(splits["train"], config.train.class_balance)
  spe = len(source) // config.train.batch_size
  if spe == 0:
    raise UserError(f"the training split has {len(source)} images, fewer than "
                    f"train.batch_size={config.train.batch_size}; lower the batch size")
  total = spe * config.train.epochs
  optim.check_steps(config.train, total, spe)
  model, lowering = create_model(config.model, used[0].platform, outputs=splits["train"].outputs,
                                 devices=len(used))
  log.info("Convolutions computed by the %s lowering", lowering)
  tx = optim.create_optimizer(config.train, total)
  train_fn, eval_fn = jit_steps(pos_weight, model.dtype, augment.photometric_params(config.data.augment),
                                neg_weight)
  sharding, batch_sharding = devices.data_parallel(used)
  # Every batch is the global batch, made from this process's rows of it (all of it in a one-process run).
  put = functools.partial(devices.global_batch, sharding=batch_sharding)
  run = Run(config, folder, splits, source, sharding, batch_sharding, put, train_fn,
            evaluate.SplitScorer(eval_fn, put, config_lib.eval_batch_size(config.train)), spe, total)
  init, abstract = state_template(model, tx, config.data.image_size, config.train.seed, sharding)
  ckpt = Checkpointer(folder / checkpoints.FOLDER, config.checkpoint.keep, config_lib.run_signature(config, data_dir))
  compile_s = None
  try:
    restored = ckpt.restore(abstract)
    # Once the checkpoints are known to be this config's: what `predict` rebuilds the network from.
    if devices.is_primary():
      workdir.write_config(folder, config.to_dict())
    state, data_state, history = restored if restored else (_initial_state(config, init, sharding), None, [])
    weights_file = config.model.get("init_from")
    if restored and weights_file and not pathlib.Path(weights_file).expanduser().is_file():
      log.info("model.init_from=%s is gone: the checkpoint holds the weights it started from", weights_file)
    if int(state.step) < total:
      step_fn, compile_s = _compile(run, state)
      scalars = tensorboard.Scalars(folder / "tensorboard", int(state.step)) \
          if config.logging.tensorboard and devices.is_primary() else None
      try:
        state, history = _fit(run, step_fn, state, data_state, history, ckpt, scalars)
      finally:
        if scalars:
          scalars.close()
  finally:
    ckpt.close()
  if devices.is_primary():
    workdir.write_history(folder, history)
  return Trained(run, state, history, compile_s, lowering, pos_weight, neg_weight)
