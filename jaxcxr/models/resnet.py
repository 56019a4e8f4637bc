"""ResNet-18/50 as torchvision builds them (He et al. 2016, the v1.5 bottleneck: stride on the 3x3 conv), NHWC.

Module names follow torchvision's `state_dict` names with `_` for `.` (`layer2_0/downsample_0`), so
ImageNet weights map onto them one to one (`weights.py`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcxr.models.layers import explained_stage, torchvision_layers

ModuleDef = Any


def _pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  return ((kernel // 2, kernel // 2),) * 2


class _Block(nn.Module):
  """A residual block's fields: its width, its stride, and the layers it builds with."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef


class BasicBlock(_Block):
  """Two 3x3 convolutions and a shortcut (a 1x1 projection where the shape changes)."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.features, (3, 3), self.strides, padding=_pad(3), name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.norm(name="bn2")(self.conv(self.features, (3, 3), padding=_pad(3), name="conv2")(y))
    return nn.relu(y + _shortcut(self, x, y))


class Bottleneck(_Block):
  """1x1 down to `features`, 3x3 (carrying the stride), 1x1 up to 4x `features`, and a shortcut."""

  @nn.compact
  def __call__(self, x):
    y = nn.relu(self.norm(name="bn1")(self.conv(self.features, (1, 1), name="conv1")(x)))
    y = self.conv(self.features, (3, 3), self.strides, padding=_pad(3), name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.norm(name="bn3")(self.conv(self.features * 4, (1, 1), name="conv3")(y))
    return nn.relu(y + _shortcut(self, x, y))


def _shortcut(block: _Block, x, y):
  """The identity, or torchvision's `downsample` (1x1 conv with the block's stride, then BatchNorm)."""
  if x.shape == y.shape:
    return x
  x = block.conv(y.shape[-1], (1, 1), block.strides, name="downsample_0")(x)
  return block.norm(name="downsample_1")(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetFeatures(nn.Module):
  """Stem, four stages and global average pooling: (B, H, W, C) films to (B, features) vectors."""
  stage_sizes: Sequence[int]
  block: str
  width: int = 64
  dtype: Any = jnp.float32
  conv_module: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x, *, train: bool):
    conv, norm = torchvision_layers(self.dtype, train, self.conv_module)
    x = conv(self.width, (7, 7), 2, padding=_pad(7), name="conv1")(x)
    x = nn.relu(norm(name="bn1")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    block = BLOCKS[self.block]
    for stage, size in enumerate(self.stage_sizes):
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        x = block(self.width * 2 ** stage, strides, conv, norm, name=f"layer{stage + 1}_{index}")(x)
    return jnp.mean(explained_stage(self, x), axis=(1, 2))
