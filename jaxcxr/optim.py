"""Optimizers and learning-rate schedules, chosen by name in `config.train`."""

import ml_collections
import optax

from jaxcxr.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "warmup_cosine")


def create_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  if cfg.schedule == "constant":
    return optax.constant_schedule(cfg.learning_rate)
  if cfg.schedule == "warmup_cosine":
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(total_steps, warmup + 1))
  raise UserError(f"train.schedule={cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def create_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """SGD (with momentum, optionally Nesterov), Adam or AdamW over the configured schedule."""
  if cfg.learning_rate <= 0:
    raise UserError(f"train.learning_rate={cfg.learning_rate} must be positive")
  lr = create_schedule(cfg, total_steps)
  if cfg.optimizer == "sgd":
    return optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov)
  if cfg.optimizer == "adam":
    return optax.adam(lr)
  if cfg.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=cfg.weight_decay)
  raise UserError(f"train.optimizer={cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
