"""Model definitions only: no training code. Models are chosen by name from `config.model.name`."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxcxr import direct_conv
from jaxcxr.conv import LOWERINGS, Conv
from jaxcxr.devices import host_cores
from jaxcxr.errors import UserError


def prepare_input(images: jnp.ndarray, dtype: Any = jnp.float32) -> jnp.ndarray:
  """uint8 (B, H, W) films to roughly zero-mean, unit-scale (B, H, W, 1) inputs.

  Batches travel to the device as uint8 (4x less transfer than float32) and
  are converted here, inside the jitted step.
  """
  return ((images.astype(dtype) - 127.5) / 64.0)[..., None]


def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2/stride-2 max-pooling ('VALID': an odd last row or column is dropped) as reshape + max.

  Its gradient is an elementwise compare that XLA fuses, where flax's
  `max_pool` differentiates through `select_and_scatter`, 2-6x slower on CPU.
  Forward values are identical; on an exact tie inside a window the gradient
  is shared between the tied inputs instead of going to the first one.
  """
  b, h, w, c = x.shape
  x = x[:, :h // 2 * 2, :w // 2 * 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class PaperCNN(nn.Module):
  """The paper's CNN: blocks of 3x3 conv + ReLU, each block closed by 2x2 max-pooling,
  then a dense head with dropout and one logit (sigmoid is applied in the loss).

  `lowering` picks how the same function is computed: `xla` (flax's Conv and
  max_pool as XLA lowers them), `gemm` (`conv.conv_gemm`, pooling as
  reshape + max), about 2x faster on CPU, `winograd` (`gemm` plus Winograd
  convs for the wide layers, faster still) or `direct` (`winograd` plus a
  compiled direct conv for the narrow layers, fastest; README, "Performance").
  Parameters are the same.
  """
  widths: Sequence[int] = (16, 32, 64, 128)
  convs_per_block: int = 2
  dense: Sequence[int] = (128,)
  dropout: float = 0.5
  dtype: Any = jnp.float32
  lowering: str = "xla"

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    for b, width in enumerate(self.widths):
      for c in range(self.convs_per_block):
        x = nn.relu(Conv(width, dtype=self.dtype, impl=self.lowering, name=f"conv{b}_{c}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2)) if self.lowering == "xla" else max_pool_2x2(x)
    x = x.reshape((x.shape[0], -1))
    for d, units in enumerate(self.dense):
      x = nn.relu(nn.Dense(units, dtype=self.dtype, name=f"dense{d}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(1, dtype=jnp.float32, name="head")(x)[:, 0].astype(jnp.float32)


MODELS = {"paper_cnn": PaperCNN}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# `auto` on a CPU with at most this many cores picks `direct` (or `winograd` where no C++ compiler can
# build the direct kernel), above it `xla`. The gemm/winograd convolutions loop over a few images at a
# time, work too small to spread over many cores; XLA's own convolutions take the whole batch at once
# and scale with the cores. (`direct` splits the batch by image; it has been measured on 2 cores only.)
# Paper CNN, 224 px, batch 32 (`python -m jaxcxr.bench`), ms/step xla vs winograd: 3485 vs 1442 on the
# 2-core development machine (AMD EPYC); on a 16-core Xeon (Sapphire Rapids) pinned with taskset to 2,
# 4, 8 and 16 cores: 3267 vs 2301, 1576 vs 1862, 888 vs 1558, 629 vs 1422.
OWN_LOWERINGS_MAX_CORES = 2


def resolve_lowering(lowering: str, platform: str, cores: int | None = None) -> str:
  """The concrete lowering for `auto`: `direct` (or `winograd` without a compiler) on a CPU of few cores,
  else `xla` (GPU, many-core CPU)."""
  if lowering != "auto":
    return lowering
  cores = host_cores() if cores is None else cores
  if platform != "cpu" or cores > OWN_LOWERINGS_MAX_CORES:
    return "xla"
  return "direct" if direct_conv.available() else "winograd"


def create_model(cfg: ml_collections.ConfigDict, platform: str = "cpu") -> nn.Module:
  """Instantiates `cfg.name` with the remaining keys of `cfg` as its fields, `lowering='auto'` resolved for
  `platform` and this process's cores (`resolve_lowering`)."""
  if cfg.name not in MODELS:
    raise UserError(f"model.name={cfg.name!r} is unknown; choose one of {', '.join(MODELS)}")
  if cfg.dtype not in DTYPES:
    raise UserError(f"model.dtype={cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
  if cfg.lowering not in LOWERINGS:
    raise UserError(f"model.lowering={cfg.lowering!r}; choose one of {', '.join(LOWERINGS)}")
  fields = {k: v for k, v in cfg.to_dict().items() if k != "name"}
  fields["dtype"] = DTYPES[fields["dtype"]]
  fields["lowering"] = resolve_lowering(fields["lowering"], platform)
  if fields["lowering"] == "direct":
    if platform != "cpu":
      raise UserError(f"model.lowering=direct is a CPU kernel and cannot run on {platform}; use auto or xla there")
    direct_conv.require()
  return MODELS[cfg.name](**fields)
