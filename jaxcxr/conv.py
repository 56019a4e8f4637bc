"""Stride-1 'SAME' convolution with flax.linen.Conv's parameters, and a faster CPU lowering of it.

XLA:CPU runs a convolution's kernel gradient (a convolution that contracts
over batch and space) several times slower than its forward pass, and its
forward pass is slow for narrow layers (16-64 channels). The `gemm` lowering
computes the same function through the matmul path instead:

* "row-lag" GEMM: a 3x3 conv is one matmul of each pixel's *row* of 3
  neighbours (3*ci values) against all 3 kernel rows at once (3*co outputs),
  followed by a sum of the 3 results shifted by one row each. The patch
  matrix is 3x the input instead of im2col's 9x, and the GEMM is 3ci x 3co
  instead of 9ci x co, which keeps the narrow layers' matmuls wide;
* the kernel gradient as the transposed GEMM of those row patches against the
  output gradient shifted by 0..2 rows;
* a single-channel input layer as 9 shifted multiply-adds (a GEMM with K=9
  cannot use the matmul units; the multiply-adds fuse with the bias and ReLU),
  and its kernel gradient as XLA's own convolution, for the same reason.

The `winograd` lowering is `gemm` with one more algorithm for the wide layers:
3x3 convs whose channels are all at least `_WINOGRAD_CHANNELS` run their
forward pass and input gradient as Winograd F(2x2, 3x3) (`winograd.py`,
2.25x fewer multiplies), and wider ones their kernel gradient too.

The `direct` lowering is `winograd` with the narrower 3x3 layers run by a
compiled direct convolution (`direct_conv.py`): all three passes up to
`_DIRECT_CHANNELS`, the kernel gradient up to `_DIRECT_KERNEL_GRAD_CHANNELS`.

All lowerings compute the same values to float32 rounding; tests/test_conv.py
checks forward values, both gradients and 10 Adam steps against flax.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcxr import direct_conv, winograd

LOWERINGS = ("xla", "gemm", "winograd", "direct", "auto")

# Images per GEMM in the row-lag loops: keeps the 3x patch matrix cache-sized
# (2 was fastest of 1-32 at every layer of the paper CNN on the dev machine).
_CHUNK_IMAGES = 2
# Layers whose ci + co lies in this range run their forward pass and input
# gradient as row-lag GEMMs; outside it XLA's own convolution was faster on
# the dev machine (python -m jaxcxr.bench --layers prints the per-layer timings).
_LAG_CHANNELS = (48, 192)
# In the `winograd` lowering, 3x3 layers with at least this many input and output channels run
# forward passes and input gradients as Winograd F(2x2, 3x3), and layers with at least
# (min(ci, co), ci + co) channels their kernel gradients too. Below, the transforms' memory
# traffic outweighed the saved multiplies on the dev machine (python -m jaxcxr.bench --layers).
_WINOGRAD_CHANNELS = 32
_WINOGRAD_KERNEL_GRAD_CHANNELS = (64, 192)
# In the `direct` lowering, 3x3 layers with ci + co up to these run forward passes and input gradients,
# and kernel gradients, as compiled direct convolutions; above, Winograd's fewer multiplies won (the
# direct kernel's weights outgrow the L1 cache) on the dev machine (python -m jaxcxr.bench --layers).
_DIRECT_CHANNELS = 128
_DIRECT_KERNEL_GRAD_CHANNELS = 256


def conv_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' convolution of NHWC inputs with an HWIO kernel, as flax.linen.Conv computes it."""
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))


def _row_patches(xp: jax.Array, width: int, kw: int) -> jax.Array:
  """(B, H, width+kw-1, C) -> (B, H, width, kw*C): each pixel's row of kw neighbours, channels ordered (j, c)."""
  return jnp.concatenate([xp[:, :, j:j + width] for j in range(kw)], axis=-1)


def _chunked(x: jax.Array) -> jax.Array:
  """(B, ...) -> (B / chunk, chunk, ...): `_CHUNK_IMAGES` images per chunk, or 1 for an odd batch."""
  chunk = _CHUNK_IMAGES if x.shape[0] % _CHUNK_IMAGES == 0 else 1
  return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def _lag_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_xla` as row-patch GEMMs, `_CHUNK_IMAGES` images at a time."""
  kh, kw, ci, co = kernel.shape
  b, h, w, _ = x.shape
  weights = kernel.transpose(1, 2, 0, 3).reshape(kw * ci, kh * co)  # rows (j, c), columns (i, d)

  def one(_, xc):
    z = jnp.dot(_row_patches(_pad_same(xc, kh, kw), w, kw), weights)
    z = z.reshape(*z.shape[:3], kh, co)
    return None, sum(z[:, i:i + h, :, i] for i in range(kh))

  return lax.scan(one, None, _chunked(x))[1].reshape(b, h, w, co)


def _taps_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_xla` of a single-channel input as kh*kw shifted multiply-adds."""
  kh, kw, _, _ = kernel.shape
  _, h, w, _ = x.shape
  xp = _pad_same(x, kh, kw)
  return sum(xp[:, i:i + h, j:j + w] * kernel[i, j, 0] for i in range(kh) for j in range(kw))


def _uses_winograd(kernel_shape: tuple[int, ...], min_channels: int, min_total: int = 0) -> bool:
  """Whether a 3x3 layer is wide enough for Winograd: min(ci, co) and ci + co at least these."""
  ci, co = kernel_shape[2:]
  return tuple(kernel_shape[:2]) == (3, 3) and min(ci, co) >= min_channels and ci + co >= min_total


def _uses_direct(x: jax.Array, kernel_shape: tuple[int, ...], impl: str, max_channels: int) -> bool:
  """Whether the `direct` lowering runs this 3x3 layer's pass as compiled code: it fits and ci + co is small."""
  return (impl == "direct" and direct_conv.fits(x.shape, kernel_shape, x.dtype)
          and sum(kernel_shape[2:]) <= max_channels)


def _forward(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
  """The fastest of the equal-valued lowerings for this layer's shape."""
  ci, co = kernel.shape[2:]
  if ci == 1:
    return _taps_conv(x, kernel)
  if _uses_direct(x, kernel.shape, impl, _DIRECT_CHANNELS):
    return direct_conv.conv(x, kernel)
  if impl != "gemm" and _uses_winograd(kernel.shape, _WINOGRAD_CHANNELS):
    return winograd.conv(x, kernel)
  if _LAG_CHANNELS[0] <= ci + co <= _LAG_CHANNELS[1]:
    return _lag_conv(x, kernel)
  return conv_xla(x, kernel)


def _lag_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
  """d(loss)/d(kernel): row patches of x against g shifted by each kernel row, as transposed GEMMs.

  Row h' of the shifted gradient holds g[h' - i] in column block i, so one
  (kw*ci) x (kh*co) GEMM yields all kh*kw taps.
  """
  kh, kw, ci, co = kernel_shape
  _, h, w, _ = x.shape
  rows = h + kh - 1

  def one(acc, xg):
    xc, gc = xg
    patches = _row_patches(_pad_same(xc, kh, kw), w, kw)
    gp = jnp.pad(gc, ((0, 0), (kh - 1, kh - 1), (0, 0), (0, 0)))
    shifted = jnp.concatenate([gp[:, kh - 1 - i:kh - 1 - i + rows] for i in range(kh)], axis=-1)
    return acc + jnp.dot(patches.reshape(-1, kw * ci).T, shifted.reshape(-1, kh * co),
                         preferred_element_type=jnp.float32), None

  acc, _ = lax.scan(one, jnp.zeros((kw * ci, kh * co), jnp.float32), (_chunked(x), _chunked(g)))
  return acc.reshape(kw, ci, kh, co).transpose(2, 0, 1, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul_conv(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
  """`conv_xla` with hand-picked lowerings for each pass; `impl` (gemm, winograd, direct) says which may run."""
  return _forward(x, kernel, impl)


def _matmul_conv_fwd(x, kernel, impl):
  return _forward(x, kernel, impl), (x, kernel)


def _matmul_conv_bwd(impl, residuals, g):
  x, kernel = residuals
  # The input gradient is the 'SAME' convolution of g with the flipped, transposed kernel (odd sizes).
  dx = _forward(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), impl)
  if _uses_direct(x, kernel.shape, impl, _DIRECT_KERNEL_GRAD_CHANNELS):
    dk = direct_conv.kernel_grad(x, g)
  elif impl != "gemm" and _uses_winograd(kernel.shape, *_WINOGRAD_KERNEL_GRAD_CHANNELS):
    dk = winograd.kernel_grad(x, g)
  elif kernel.shape[2] == 1:  # a 1-row GEMM patch cannot use the matmul units; XLA's own was faster
    dk = jax.vjp(lambda k: conv_xla(x, k), kernel)[1](g)[0]
  else:
    dk = _lag_kernel_grad(x, g, kernel.shape)
  return dx, dk.astype(kernel.dtype)


_matmul_conv.defvjp(_matmul_conv_fwd, _matmul_conv_bwd)


def conv_gemm(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_xla`, computed and differentiated through the matmul path (same values, faster on CPU)."""
  return _matmul_conv(x, kernel, "gemm")


def conv_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_gemm`, with Winograd F(2x2, 3x3) for the wide 3x3 layers (same values to rounding, faster on CPU)."""
  return _matmul_conv(x, kernel, "winograd")


def conv_direct(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_winograd`, with narrow 3x3 float32 layers run by the compiled direct kernel (`direct_conv.py`)."""
  return _matmul_conv(x, kernel, "direct")


IMPLS = {"xla": conv_xla, "gemm": conv_gemm, "winograd": conv_winograd, "direct": conv_direct}


class Conv(nn.Module):
  """A stride-1 'SAME' conv with flax.linen.Conv's parameters (`kernel` HWIO, `bias`) and numerics.

  `impl` picks the lowering: `xla` (XLA's own), `gemm` (`conv_gemm`, odd
  kernel sizes), `winograd` (`conv_winograd`, likewise) or `direct`
  (`conv_direct`, likewise). All give the same values; the parameter tree is
  the same, so checkpoints move between them.
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  dtype: Any = jnp.float32
  impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.impl != "xla" and not all(k % 2 for k in self.kernel_size):
      raise ValueError(f"the {self.impl} lowering needs odd kernel sizes, got {self.kernel_size}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = IMPLS[self.impl](x, kernel)
    return y + bias
