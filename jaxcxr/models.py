"""Model definitions only: no training code. Models are chosen by name from `config.model.name`."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from jaxcxr.errors import UserError


def prepare_input(images: jnp.ndarray, dtype: Any = jnp.float32) -> jnp.ndarray:
  """uint8 (B, H, W) films to roughly zero-mean, unit-scale (B, H, W, 1) inputs.

  Batches travel to the device as uint8 (4x less transfer than float32) and
  are converted here, inside the jitted step.
  """
  return ((images.astype(dtype) - 127.5) / 64.0)[..., None]


def _conv_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' convolution of NHWC inputs with an HWIO kernel, as flax.linen.Conv computes it."""
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


# Batch chunk of the kernel-gradient GEMM: its patch matrix stays about this size (bytes).
_PATCH_BYTES = 16 * 2 ** 20


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
  """d(loss)/d(kernel) as one transposed GEMM per batch chunk: patches(x)^T @ g, summed over chunks.

  XLA:CPU lowers this gradient as a convolution whose contraction runs over
  batch and space, which it executes several times slower than the forward
  pass; the GEMM form runs on its fast matmul path. Chunks keep the patch
  matrix (kh*kw times the input) cache-sized.
  """
  kh, kw, ci, co = kernel_shape
  b, h, w, _ = x.shape
  per_image = h * w * kh * kw * ci * x.dtype.itemsize
  chunk = max((d for d in range(1, b + 1) if b % d == 0 and d * per_image <= _PATCH_BYTES), default=1)
  xp = jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))

  def one(acc, xs_gs):
    xc, gc = xs_gs
    patches = jnp.concatenate([xc[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)], axis=-1)
    return acc + jnp.dot(patches.reshape(-1, kh * kw * ci).T, gc.reshape(-1, co),
                         preferred_element_type=jnp.float32), None

  chunks = (xp.reshape(b // chunk, chunk, *xp.shape[1:]), g.reshape(b // chunk, chunk, *g.shape[1:]))
  acc, _ = lax.scan(one, jnp.zeros((kh * kw * ci, co), jnp.float32), chunks)
  return acc.reshape(kernel_shape)


@jax.custom_vjp
def conv_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`_conv_same` whose kernel gradient is computed by `_kernel_grad` (same values, faster on CPU)."""
  return _conv_same(x, kernel)


def _conv_fwd(x, kernel):
  return _conv_same(x, kernel), (x, kernel)


def _conv_bwd(residuals, g):
  x, kernel = residuals
  dx = jax.vjp(lambda x_: _conv_same(x_, kernel), x)[1](g)[0]
  return dx, _kernel_grad(x, g, kernel.shape).astype(kernel.dtype)


conv_gemm.defvjp(_conv_fwd, _conv_bwd)
LOWERINGS = ("xla", "gemm", "auto")


class Conv(nn.Module):
  """A stride-1 'SAME' conv with flax.linen.Conv's parameters (`kernel` HWIO, `bias`) and numerics.

  `impl` picks the kernel-gradient lowering: `xla` (XLA's own) or `gemm`
  (`conv_gemm`). Both give the same values; the parameter tree is the
  same, so checkpoints move between them.
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  dtype: Any = jnp.float32
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv_gemm(x, kernel) if self.impl == "gemm" else _conv_same(x, kernel)
    return y + bias


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

  `lowering` picks how the same function is differentiated: `xla` (flax's Conv
  and max_pool as XLA lowers them) or `gemm` (kernel gradients as GEMMs,
  pooling as reshape + max), 2x faster on CPU. Parameters are the same.
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
      x = max_pool_2x2(x) if self.lowering == "gemm" else nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    for d, units in enumerate(self.dense):
      x = nn.relu(nn.Dense(units, dtype=self.dtype, name=f"dense{d}")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(1, dtype=jnp.float32, name="head")(x)[:, 0].astype(jnp.float32)


MODELS = {"paper_cnn": PaperCNN}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(cfg: ml_collections.ConfigDict, platform: str = "cpu") -> nn.Module:
  """Instantiates `cfg.name` with the remaining keys of `cfg` as its fields.

  `lowering='auto'` resolves by the platform the model will run on: `gemm` on
  CPU (where XLA's convolution gradients and select_and_scatter are slow), `xla` elsewhere.
  """
  if cfg.name not in MODELS:
    raise UserError(f"model.name={cfg.name!r} is unknown; choose one of {', '.join(MODELS)}")
  if cfg.dtype not in DTYPES:
    raise UserError(f"model.dtype={cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
  if cfg.lowering not in LOWERINGS:
    raise UserError(f"model.lowering={cfg.lowering!r}; choose one of {', '.join(LOWERINGS)}")
  fields = {k: v for k, v in cfg.to_dict().items() if k != "name"}
  fields["dtype"] = DTYPES[fields["dtype"]]
  if fields["lowering"] == "auto":
    fields["lowering"] = "gemm" if platform == "cpu" else "xla"
  return MODELS[cfg.name](**fields)
