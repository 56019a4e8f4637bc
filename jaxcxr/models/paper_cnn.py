"""The paper's CNN (Mochurad et al., 2021), as a pure Flax definition."""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcxr.models.classifier import logits_head
from jaxcxr.models.layers import explained_stage, max_pool_2x2

ModuleDef = Any


class PaperCNN(nn.Module):
  """Blocks of 3x3 conv + ReLU, each block closed by 2x2 max-pooling, then a dense head with dropout
  and one logit per target (sigmoid is applied in the loss).

  `conv` builds each convolution (`flax.linen.Conv` or a drop-in with its
  parameters, such as `jaxcxr.conv.module(lowering)`), so how a convolution is
  computed never changes the network or its parameters.
  """
  widths: Sequence[int] = (16, 32, 64, 128)
  convs_per_block: int = 2
  dense: Sequence[int] = (128,)
  dropout: float = 0.5
  dtype: Any = jnp.float32
  conv: ModuleDef = nn.Conv
  outputs: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv = functools.partial(self.conv, kernel_size=(3, 3), dtype=self.dtype)
    for b, width in enumerate(self.widths):
      for c in range(self.convs_per_block):
        x = nn.relu(conv(width, name=f"conv{b}_{c}")(x))
      if b == len(self.widths) - 1:  # before the last pooling: twice the resolution to explain with
        x = explained_stage(self, x)
      x = max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    for d, units in enumerate(self.dense):
      x = nn.relu(nn.Dense(units, dtype=self.dtype, name=f"dense{d}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return logits_head(x, self.outputs)
