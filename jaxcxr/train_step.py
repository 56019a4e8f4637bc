"""The pure, jit-compiled training and evaluation steps and the state they carry.

Nothing here assumes one device: inputs arrive already placed (on one device
today, or sharded with a `NamedSharding` over a data axis later) and `jit`
follows them. All randomness is a function of (seed, step), so a resumed run
draws the same dropout masks as an uninterrupted one.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxcxr import augment
from jaxcxr.models import prepare_input


@struct.dataclass
class TrainState:
  """Everything a checkpoint must hold to continue bit-for-bit.

  `rng` holds raw key data (uint32) rather than a typed key so that orbax
  stores it as a plain array. `batch_stats` holds BatchNorm's running
  statistics (empty for a network without BatchNorm): training updates them,
  evaluation uses them. `sums` accumulates this epoch's training loss and
  accuracy on device (no host sync per step) and the first step whose loss or
  update was not finite (-1 while all were).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  sums: dict
  apply_fn: Callable = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)


def zero_sums() -> dict:
  return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.int32),
          "count": jnp.zeros((), jnp.int32), "first_nonfinite_step": jnp.full((), -1, jnp.int32)}


def create_state(model: nn.Module, tx: optax.GradientTransformation, image_size: int,
                 seed: int) -> TrainState:
  """Initial state; call under `jax.eval_shape` for shapes only (e.g. as the restore target)."""
  key = jax.random.key(seed)
  init_key, train_key = jax.random.split(key)
  dummy = jnp.zeros((1, image_size, image_size), jnp.uint8)
  variables = model.init(init_key, prepare_input(dummy), train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params),
                    rng=jax.random.key_data(train_key), sums=zero_sums(), apply_fn=model.apply, tx=tx)


def eval_variables(state: TrainState) -> dict:
  """What the network is applied to for evaluation: its parameters, and BatchNorm's running averages."""
  return {"params": state.params, **({"batch_stats": state.batch_stats} if state.batch_stats else {})}


def weighted_bce(logits: jax.Array, labels: jax.Array, pos_weight: Any, neg_weight: Any = 1.0) -> jax.Array:
  """Per-film sigmoid cross-entropy, positives weighted by `pos_weight` and negatives by `neg_weight` against
  class imbalance.

  Logits and labels are (B,) for one target, (B, K) for K targets with the weights (K,) arrays, one per
  target; a film's loss is then the mean over its targets. A label below 0 (`findings.MISSING`: a finding its
  dataset does not label for the film) adds nothing, whatever the logit.
  """
  known = labels >= 0
  labels = labels.astype(jnp.float32)
  weights = jnp.where(labels > 0.5, jnp.asarray(pos_weight, jnp.float32), jnp.asarray(neg_weight, jnp.float32))
  loss = jnp.where(known, weights * optax.sigmoid_binary_cross_entropy(logits, labels), 0.0)
  return loss.reshape(loss.shape[0], -1).mean(axis=1)


def train_step(state: TrainState, batch: dict, *, pos_weight: Any, dtype: Any,
               photometric: tuple[float, float] = (0.0, 0.0), neg_weight: Any = 1.0) -> TrainState:
  """One optimizer update on `batch`; returns the new state (jit with the state donated).

  `photometric` is (contrast, brightness) for the on-device part of augmentation.
  """
  step_key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  dropout_key, augment_key = jax.random.split(step_key)
  images = prepare_input(augment.photometric(batch["image"], augment_key, *photometric), dtype)

  def loss_fn(params):
    if not state.batch_stats:
      logits = state.apply_fn({"params": params}, images, train=True, rngs={"dropout": dropout_key})
      return weighted_bce(logits, batch["label"], pos_weight, neg_weight).mean(), (logits, state.batch_stats)
    # BatchNorm normalises with this batch's statistics and folds them into the running averages.
    logits, updated = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, images, train=True,
                                     rngs={"dropout": dropout_key}, mutable=["batch_stats"])
    return weighted_bce(logits, batch["label"], pos_weight, neg_weight).mean(), (logits, updated["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  n = batch["label"].shape[0]
  sums = state.sums
  # `correct` counts right decisions, one per target per film: accuracy is correct / (count * targets).
  # An overflowing update poisons the parameters a step before the loss shows it: check both.
  finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(updates))
  bad = ~finite & (sums["first_nonfinite_step"] < 0)
  sums = {"loss": sums["loss"] + loss * n,
          "correct": sums["correct"] + jnp.sum(((logits > 0) == (batch["label"] > 0)) & (batch["label"] >= 0)),
          "count": sums["count"] + n,
          "first_nonfinite_step": jnp.where(bad, state.step, sums["first_nonfinite_step"])}
  return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, sums=sums)


def eval_step(state: TrainState, batch: dict, *, pos_weight: Any, dtype: Any,
              neg_weight: Any = 1.0) -> tuple[dict, jax.Array]:
  """Loss sum and integer confusion counts over the real rows of `batch`, plus per-row logits.

  Counts are computed on device at threshold 0.5 (logit 0), over every target
  of a multi-label task together; the logits feed the host-side ROC AUC and any
  other operating point. Padded rows (`mask` False) count nowhere.
  """
  logits = state.apply_fn(eval_variables(state), prepare_input(batch["image"], dtype), train=False)
  labels = batch["label"] > 0
  mask = batch["mask"].reshape(batch["mask"].shape + (1,) * (labels.ndim - 1)) & (batch["label"] >= 0)
  predicted = logits > 0

  def count(cond):
    return jnp.sum(cond & mask, dtype=jnp.int32)

  sums = {"loss": jnp.sum(jnp.where(batch["mask"], weighted_bce(logits, batch["label"], pos_weight, neg_weight), 0.0)),
          "tp": count(predicted & labels), "fp": count(predicted & ~labels),
          "tn": count(~predicted & ~labels), "fn": count(~predicted & labels)}
  return sums, logits


def jit_steps(pos_weight: Any, dtype: Any, photometric: tuple[float, float] = (0.0, 0.0), neg_weight: Any = 1.0):
  """The two steps, jitted; the training state is donated so its buffers are updated in place."""
  train = jax.jit(functools.partial(train_step, pos_weight=pos_weight, dtype=dtype, photometric=photometric,
                                    neg_weight=neg_weight), donate_argnums=0)
  evaluate = jax.jit(functools.partial(eval_step, pos_weight=pos_weight, dtype=dtype, neg_weight=neg_weight))
  return train, evaluate


def placed_shapes(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """`tree` as shapes and dtypes placed by `sharding`, no data: enough to lower a step or restore into."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def batch_shapes(batch_size: int, image_size: int, targets: int = 1) -> dict:
  """Shapes and dtypes of one training batch as the input pipeline delivers it (uint8 films, int32 labels:
  (B,) for one target, (B, targets) for several)."""
  return {"image": jax.ShapeDtypeStruct((batch_size, image_size, image_size), jnp.uint8),
          "label": jax.ShapeDtypeStruct((batch_size,) if targets == 1 else (batch_size, targets), jnp.int32)}


def state_template(model: nn.Module, tx: optax.GradientTransformation, image_size: int, seed: int,
                   sharding: jax.sharding.Sharding) -> tuple[Callable[[], TrainState], TrainState]:
  """A fresh state's initialiser, and its shapes placed by `sharding` (what a checkpoint is restored into):
  training and `inference.from_checkpoint` rebuild a run's state through this one function."""
  init = functools.partial(create_state, model, tx, image_size, seed)
  return init, placed_shapes(jax.eval_shape(init), sharding)
