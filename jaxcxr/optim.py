"""Optimizers and learning-rate schedules, chosen by name in `config.train`.

`plateau` is CheXNet's schedule: the learning rate is cut by `plateau_factor` each
time the validation loss has not improved for `plateau_patience` epochs. It is
decided on the host at each epoch's end from the run's history
(`plateau_learning_rate`) and written into the optimizer state, so a checkpoint
holds it and a resumed run continues with it.
"""

import logging
import math
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
import optax

from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine", "plateau")
PLATEAU = "plateau"


def create_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  if cfg.schedule in ("constant", PLATEAU):
    return optax.constant_schedule(cfg.learning_rate)
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(total_steps, warmup + 1))


def spans_the_run(cfg: ml_collections.ConfigDict) -> bool:
  """Whether the schedule depends on the run's total length (so `train.epochs` changes every step's rate)."""
  return cfg.schedule == "warmup_cosine"


def check_steps(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> None:
  """What only the dataset's size can refute: a warmup that never ends leaves the peak learning rate unreached."""
  if spans_the_run(cfg) and cfg.warmup_steps >= total_steps:
    raise UserError(f"train.warmup_steps={cfg.warmup_steps} is not below this run's {total_steps} steps "
                    f"({cfg.epochs} epochs of {steps_per_epoch}), so the learning rate would never reach "
                    f"train.learning_rate; lower train.warmup_steps (a tenth of the steps is usual)")


def create_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """SGD (with momentum, optionally Nesterov), Adam or AdamW over the configured schedule."""
  lr = create_schedule(cfg, total_steps)
  if cfg.schedule == PLATEAU:  # the learning rate becomes part of the state, set between epochs
    return optax.inject_hyperparams(_optimizer)(cfg, learning_rate=cfg.learning_rate)
  return _optimizer(cfg, lr)


def _optimizer(cfg: ml_collections.ConfigDict, learning_rate) -> optax.GradientTransformation:
  if cfg.optimizer == "sgd":
    return optax.sgd(learning_rate, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  if cfg.optimizer == "adam":
    return optax.adam(learning_rate)
  return optax.adamw(learning_rate, weight_decay=cfg.weight_decay)


def plateau_learning_rate(cfg: ml_collections.ConfigDict, val_losses: Sequence[float]) -> float:
  """The learning rate after these epochs' validation losses: `learning_rate`, times `plateau_factor` for every
  `plateau_patience` epochs in a row that did not lower the best loss so far."""
  best, waited, cuts = np.inf, 0, 0
  for loss in val_losses:
    if loss < best:
      best, waited = loss, 0
    else:
      waited += 1
      if waited >= cfg.plateau_patience:
        cuts, waited = cuts + 1, 0
  return cfg.learning_rate * cfg.plateau_factor ** cuts


def learning_rate(cfg: ml_collections.ConfigDict, total_steps: int, step: int, val_losses: Sequence[float]) -> float:
  """The rate the optimizer applies at `step`, after these epochs' validation losses (what `plateau` decides
  from; every other schedule is a function of the step alone)."""
  if cfg.schedule == PLATEAU:
    return plateau_learning_rate(cfg, val_losses)
  return float(create_schedule(cfg, total_steps)(step))


def after_epoch(cfg: ml_collections.ConfigDict, opt_state, val_losses: Sequence[float],
                sharding: jax.sharding.Sharding):
  """The optimizer state for the next epoch: `plateau` sets its learning rate from the validation losses so
  far (placed like the rest of the state); every other schedule is already a function of the step."""
  if cfg.schedule != PLATEAU:
    return opt_state
  hyperparams = dict(opt_state.hyperparams)
  old = hyperparams["learning_rate"]
  new = plateau_learning_rate(cfg, val_losses)
  if not math.isclose(float(old), new, rel_tol=1e-5):
    log.info("Validation loss has not improved for %d epoch(s): learning rate %.3g -> %.3g",
             cfg.plateau_patience, float(old), new)
  hyperparams["learning_rate"] = jax.device_put(np.asarray(new, old.dtype), sharding)
  return opt_state._replace(hyperparams=hyperparams)
