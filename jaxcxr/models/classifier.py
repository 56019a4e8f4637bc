"""A backbone's pooled features into this task's logits: one linear head, initialised fresh."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class Classifier(nn.Module):
  """`backbone` maps (B, H, W, C) films to (B, F) features; the head maps them to one logit per film."""
  backbone: nn.Module
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    features = self.backbone(x, train=train)
    return nn.Dense(1, dtype=jnp.float32, name="head")(features)[:, 0].astype(jnp.float32)
