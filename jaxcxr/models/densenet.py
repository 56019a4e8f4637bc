"""DenseNet-121 as torchvision builds it (Huang et al. 2017; CheXNet's network), NHWC.

Module names follow torchvision's `state_dict` names below `features.` with `_` for `.`
(`denseblock1_denselayer1_conv1`), so ImageNet weights map onto them one to one (`weights.py`).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcxr.models.layers import explained_stage, torchvision_layers


class DenseNetFeatures(nn.Module):
  """Stem, dense blocks joined by transitions, the final BatchNorm and global average pooling."""
  block_sizes: Sequence[int] = (6, 12, 24, 16)
  growth_rate: int = 32
  init_features: int = 64
  bn_size: int = 4
  dtype: Any = jnp.float32
  conv_module: Any = nn.Conv

  @nn.compact
  def __call__(self, x, *, train: bool):
    conv, norm = torchvision_layers(self.dtype, train, self.conv_module)
    x = conv(self.init_features, (7, 7), 2, padding=((3, 3), (3, 3)), name="conv0")(x)
    x = nn.relu(norm(name="norm0")(x))
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for b, size in enumerate(self.block_sizes):
      for i in range(size):
        name = f"denseblock{b + 1}_denselayer{i + 1}"
        y = nn.relu(norm(name=f"{name}_norm1")(x))
        y = conv(self.bn_size * self.growth_rate, (1, 1), name=f"{name}_conv1")(y)
        y = nn.relu(norm(name=f"{name}_norm2")(y))
        y = conv(self.growth_rate, (3, 3), padding=((1, 1), (1, 1)), name=f"{name}_conv2")(y)
        x = jnp.concatenate([x, y], axis=-1)
      if b < len(self.block_sizes) - 1:
        x = nn.relu(norm(name=f"transition{b + 1}_norm")(x))
        x = conv(x.shape[-1] // 2, (1, 1), name=f"transition{b + 1}_conv")(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(norm(name="norm5")(x))
    return jnp.mean(explained_stage(self, x), axis=(1, 2))
