"""The backbones' CPU convolution (`jaxcxr.conv.backbone.Conv`) against flax's own `nn.Conv`: the same
parameters, values, both gradients, and parameters after 10 Adam steps, on each of its paths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcxr import conv, models
from jaxcxr.configs import tiny
from jaxcxr.conv import backbone
from jaxcxr.errors import UserError

SAME3 = ((1, 1), (1, 1))
STEM = ((3, 3), (3, 3))
# (kernel, strides, padding, lowering, the path it takes, images). The fast tier keeps one case per path; the
# variants of a path, and the wing's lowerings (tested against XLA's in test_conv.py too), are slow.
SLOW = pytest.mark.slow
CASES = [pytest.param((1, 1), 1, "VALID", conv.XLA, backbone.MATMUL, 4, id="1x1"),
         pytest.param((1, 1), 2, "VALID", conv.XLA, backbone.MATMUL, 4, id="1x1-stride2"),
         pytest.param((3, 3), 2, SAME3, "gemm", backbone.PATCHES, 4, id="3x3-stride2"),
         pytest.param((7, 7), 2, STEM, "gemm", backbone.PATCHES, 4, id="7x7-stem", marks=SLOW),
         pytest.param((7, 7), 2, STEM, "gemm", backbone.PATCHES, 3, id="7x7-stem-odd-batch", marks=SLOW),
         pytest.param((7, 7), 2, STEM, conv.XLA, conv.XLA, 4, id="7x7-stem-xla", marks=SLOW),
         pytest.param((3, 3), 2, ((0, 1), (2, 1)), "gemm", backbone.PATCHES, 4, id="3x3-stride2-uneven-padding",
                      marks=SLOW),
         pytest.param((3, 3), 1, SAME3, "direct", "direct", 4, id="3x3-direct"),
         *(pytest.param((3, 3), 1, SAME3, lowering, lowering, 4, id=f"3x3-{lowering}", marks=SLOW)
           for lowering in ("gemm", "winograd"))]


@pytest.mark.parametrize("kernel,strides,padding,lowering,path,images", CASES)
def test_the_backbone_conv_is_nn_conv_in_parameters_values_gradients_and_training(kernel, strides, padding,
                                                                                   lowering, path, images):
  if lowering not in conv.runnable("cpu"):
    pytest.skip(f"{lowering} cannot run here (no C++ compiler)")
  # Odd sides: a stride-2 1x1 keeps ceil(11 / 2). 32 channels in and out: the wide layers' algorithms take them.
  # An odd batch: the strided kernel gradient's image pairs become single images.
  x = jax.random.normal(jax.random.key(1), (images, 11, 11, 32))
  ours = backbone.Conv(32, kernel, strides, padding=padding, use_bias=False, lowering=lowering)
  theirs = nn.Conv(32, kernel, strides, padding=padding, use_bias=False)
  assert ours.path() == path
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


def test_a_bias_is_added_on_the_reformulated_paths():
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 8))
  for kernel, padding in (((1, 1), "VALID"), ((3, 3), SAME3)):
    ours, theirs = backbone.Conv(8, kernel, padding=padding, lowering="gemm"), nn.Conv(8, kernel, padding=padding)
    params = theirs.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: p + 0.5, params)  # a non-zero bias
    np.testing.assert_allclose(ours.apply(params, x), theirs.apply(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [dict(kernel_size=(3, 3), padding="VALID"), dict(kernel_size=(3, 3), padding=SAME3,
                                   feature_group_count=2), dict(kernel_size=(1, 1), padding=((1, 1), (1, 1))),
                                   dict(kernel_size=(3, 3), padding=SAME3, kernel_dilation=2)],
                         ids=["unpadded-3x3", "grouped", "padded-1x1", "dilated"])
def test_what_neither_reformulation_computes_is_left_to_nn_conv(layer):
  assert backbone.Conv(8, lowering="direct", **layer).path() == conv.XLA
  assert backbone.Conv(8, strides=2, lowering="direct", **{**layer, "padding": 1}).path() == conv.XLA


def test_the_cpu_backbones_take_the_reformulations_and_the_gpu_keeps_xla():
  module, name = conv.backbone_module("cpu", cores=2)
  assert module.func is backbone.Conv and module.keywords["lowering"] == conv.resolve(conv.AUTO, "cpu", cores=2)
  assert name == f"{module.keywords['lowering']}, 1x1 as matmul"
  assert conv.backbone_module("cpu", devices=2)[1] == "xla, 1x1 as matmul"  # the direct kernel is one device's
  assert conv.backbone_module("cpu", cores=16)[1] == "xla, 1x1 as matmul"
  assert conv.backbone_module("cpu", "xla")[1] == "xla, 1x1 as matmul"  # the matmuls are XLA operations too
  assert conv.backbone_module("gpu") == (nn.Conv, conv.XLA)
  with pytest.raises(UserError, match="model.lowering=direct is a CPU kernel"):
    conv.backbone_module("gpu", "direct")


def test_a_backbone_run_written_before_backbones_had_a_lowering_key_builds_with_auto():
  config = tiny.get_config("resnet18").model
  del config["lowering"]
  assert models.config_problems(config, 32) == []
  assert models.create_model(config)[1] == conv.backbone_module("cpu")[1]
