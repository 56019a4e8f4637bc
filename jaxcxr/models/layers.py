"""Small pieces the networks share: the input scaling, the 2x2 max-pooling, PyTorch-style layers, and the mark
on the feature map that explanations read."""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def prepare_input(images: jnp.ndarray, dtype: Any = jnp.float32) -> jnp.ndarray:
  """uint8 (B, H, W) films to roughly zero-mean, unit-scale (B, H, W, 1) inputs.

  Batches travel to the device as uint8 (4x less transfer than float32) and
  are converted here, inside the jitted step.
  """
  return ((images.astype(dtype) - 127.5) / 64.0)[..., None]


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2/stride-2 max-pooling ('VALID': an odd last row or column is dropped) as reshape + max.

  Its gradient is an elementwise compare that XLA fuses, where flax's
  `max_pool` differentiates through `select_and_scatter`, several times slower
  on CPU. Forward values are identical; on an exact tie inside a window the
  gradient is shared between the tied inputs instead of going to the first one.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def torchvision_layers(dtype: Any, train: bool, conv_module: Any = nn.Conv) -> tuple[Any, Any]:
  """The convolution and BatchNorm of torchvision's backbones: bias-free convolutions (`conv_module`, a drop-in
  for `nn.Conv` that the convolution wing picks per platform) whose padding is given explicitly (flax's 'SAME'
  pads a stride-2 convolution of an even input asymmetrically, PyTorch symmetrically), and BatchNorm with
  PyTorch's defaults (running averages moved by 0.1 of each batch's statistics, epsilon 1e-5)."""
  conv = functools.partial(conv_module, use_bias=False, padding="VALID", dtype=dtype)
  norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)
  return conv, norm


# Where each network's last convolutional stage ends: the feature map class activation maps explain (`jaxcxr.explain`).
EXPLAINED_STAGE = "last_conv_stage"


def explained_stage(module: nn.Module, x: jax.Array) -> jax.Array:
  """Marks `x` as the network's last convolutional feature map and returns it unchanged.

  A no-op in training and evaluation. Applied with the `intermediates` collection mutable, the map is recorded;
  given a `perturbations` collection, a zero is added to it there, so the gradient of a logit with respect to
  that collection is the gradient with respect to the map (flax's `sow` and `perturb`).
  """
  if module.is_initializing():  # a network's variables are its parameters and statistics only
    return x
  module.sow("intermediates", EXPLAINED_STAGE, x)
  return module.perturb(EXPLAINED_STAGE, x)
