"""Model definitions only: no training code. Models are chosen by name from `config.model.name`."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxcxr.errors import UserError


def prepare_input(images: jnp.ndarray, dtype: Any = jnp.float32) -> jnp.ndarray:
  """uint8 (B, H, W) films to roughly zero-mean, unit-scale (B, H, W, 1) inputs.

  Batches travel to the device as uint8 (4x less transfer than float32) and
  are converted here, inside the jitted step.
  """
  return ((images.astype(dtype) - 127.5) / 64.0)[..., None]


class PaperCNN(nn.Module):
  """The paper's CNN: blocks of 3x3 conv + ReLU, each block closed by 2x2 max-pooling,
  then a dense head with dropout and one logit (sigmoid is applied in the loss).
  """
  widths: Sequence[int] = (16, 32, 64, 128)
  convs_per_block: int = 2
  dense: Sequence[int] = (128,)
  dropout: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    for width in self.widths:
      for _ in range(self.convs_per_block):
        x = nn.relu(nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for units in self.dense:
      x = nn.relu(nn.Dense(units, dtype=self.dtype)(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(1, dtype=jnp.float32)(x)[:, 0].astype(jnp.float32)


MODELS = {"paper_cnn": PaperCNN}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(cfg: ml_collections.ConfigDict) -> nn.Module:
  """Instantiates `cfg.name` with the remaining keys of `cfg` as its fields."""
  if cfg.name not in MODELS:
    raise UserError(f"model.name={cfg.name!r} is unknown; choose one of {', '.join(MODELS)}")
  if cfg.dtype not in DTYPES:
    raise UserError(f"model.dtype={cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
  fields = {k: v for k, v in cfg.to_dict().items() if k != "name"}
  fields["dtype"] = DTYPES[fields["dtype"]]
  return MODELS[cfg.name](**fields)
