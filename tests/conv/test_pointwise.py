"""The backbones' 1x1 convolutions as matmuls (`jaxcxr.conv.pointwise.Conv`) against flax's own `nn.Conv`: the
same parameters, values, both gradients, and parameters after 10 Adam steps."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcxr import conv
from jaxcxr.conv import pointwise

CASES = [((1, 1), 1, "VALID"), ((1, 1), 2, "VALID"), ((3, 3), 2, ((1, 1), (1, 1))), ((7, 7), 2, ((3, 3), (3, 3)))]


@pytest.mark.parametrize("kernel,strides,padding", CASES, ids=["1x1", "1x1-stride2", "3x3-stride2", "7x7-stem"])
def test_a_pointwise_conv_is_nn_conv_in_parameters_values_gradients_and_training(kernel, strides, padding):
  x = jax.random.normal(jax.random.key(1), (4, 11, 11, 24))  # odd sides: a stride-2 1x1 keeps ceil(11 / 2)
  ours, theirs = (m(16, kernel, strides, padding=padding, use_bias=False) for m in (pointwise.Conv, nn.Conv))
  params = theirs.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, params)
  np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)

  def loss(module):
    return lambda p, x: jnp.mean(jnp.sin(module.apply(p, x)))

  for a, b in zip(jax.grad(loss(ours), argnums=(0, 1))(params, x), jax.grad(loss(theirs), argnums=(0, 1))(params, x)):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
  tx = optax.adam(1e-2)

  def train(module):
    p, state = params, tx.init(params)
    for _ in range(10):
      updates, state = tx.update(jax.grad(loss(module))(p, x), state, p)
      p = optax.apply_updates(p, updates)
    return p

  np.testing.assert_allclose(train(ours)["params"]["kernel"], train(theirs)["params"]["kernel"], rtol=1e-4,
                             atol=1e-5)


def test_the_cpu_backbones_take_the_matmul_and_the_gpu_keeps_xla():
  assert conv.backbone_module("cpu") == (pointwise.Conv, conv.BACKBONE_CPU)
  assert conv.backbone_module("gpu") == (nn.Conv, conv.XLA)
