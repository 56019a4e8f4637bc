import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcxr import models, train_step
from tests.support import tiny_batch, tiny_state


def _eval(state, batch, mask=None):
  b = dict(batch, mask=np.ones(len(batch["label"]), bool) if mask is None else mask)
  step = jax.jit(functools.partial(train_step.eval_step, pos_weight=1.0, dtype=jnp.float32))
  return step(state, b)


def test_train_steps_lower_the_loss_on_a_fixed_batch():
  train, _ = train_step.jit_steps(pos_weight=1.0, dtype=jnp.float32)
  state, batch = tiny_state(), tiny_batch()
  before = float(_eval(state, batch)[0]["loss"])
  for _ in range(10):
    state = train(state, batch)
  after = float(_eval(state, batch)[0]["loss"])
  assert int(state.step) == 10 and int(state.sums["count"]) == 80
  assert after < 0.5 * before


def test_eval_confusion_counts_match_hand_count():
  state, batch = tiny_state(), tiny_batch(n=10)
  mask = np.arange(10) < 7  # the last three rows are padding
  sums, logits = _eval(state, batch, mask)
  predicted, labels = np.asarray(logits) > 0, batch["label"] > 0
  real = mask
  assert int(sums["tp"]) == np.sum(predicted & labels & real)
  assert int(sums["fp"]) == np.sum(predicted & ~labels & real)
  assert int(sums["tn"]) == np.sum(~predicted & ~labels & real)
  assert int(sums["fn"]) == np.sum(~predicted & labels & real)
  assert int(sums["tp"] + sums["fp"] + sums["tn"] + sums["fn"]) == 7


def test_pos_weight_scales_only_positive_losses():
  logits, labels = jnp.array([0.3, -0.2]), jnp.array([1, 0])
  base = train_step.weighted_bce(logits, labels, 1.0)
  weighted = train_step.weighted_bce(logits, labels, 4.0)
  np.testing.assert_allclose(weighted, base * jnp.array([4.0, 1.0]), rtol=1e-6)


def test_dropout_depends_on_the_step_not_on_history():
  model = models.PaperCNN(widths=(4,), convs_per_block=1, dense=(16,), dropout=0.5)
  state = train_step.create_state(model, optax.sgd(0.0), image_size=8, seed=0)
  train, _ = train_step.jit_steps(pos_weight=1.0, dtype=jnp.float32)
  batch = tiny_batch(n=4)
  batch = {"image": batch["image"][:, :8, :8], "label": batch["label"]}
  a = train(state, batch)  # donated: rebuild the initial state for the second call
  b = train(train_step.create_state(model, optax.sgd(0.0), image_size=8, seed=0), batch)
  np.testing.assert_array_equal(a.sums["loss"], b.sums["loss"])
  first = float(a.sums["loss"])
  c = train(a, batch)  # step 1 draws another dropout mask on the same weights (lr 0)
  assert float(c.sums["loss"]) - first != first


def test_nonfinite_loss_records_the_first_bad_step():
  train, _ = train_step.jit_steps(pos_weight=float("nan"), dtype=jnp.float32)
  state = train(train(tiny_state(), tiny_batch()), tiny_batch())
  assert int(state.sums["first_nonfinite_step"]) == 0
