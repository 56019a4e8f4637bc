"""A backbone's pooled features into this task's logits: one linear head, initialised fresh."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Classifier(nn.Module):
  """`backbone` maps (B, H, W, C) films to (B, F) features; the head maps them to `outputs` logits per film."""
  backbone: nn.Module
  dtype: Any = jnp.float32
  outputs: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    return logits_head(self.backbone(x, train=train), self.outputs)


def logits_head(features: jnp.ndarray, outputs: int) -> jnp.ndarray:
  """The float32 linear head: (B,) logits for one target, (B, outputs) for several."""
  logits = nn.Dense(outputs, dtype=jnp.float32, name="head")(features).astype(jnp.float32)
  return logits[:, 0] if outputs == 1 else logits
