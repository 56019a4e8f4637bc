"""A stride-1 'SAME' convolution through the matmul path: row-lag GEMMs, and shifted multiply-adds for one channel.

XLA:CPU runs a convolution's kernel gradient (a convolution that contracts
over batch and space) several times slower than its forward pass, and its
forward pass is slow for narrow layers. These formulations compute the same
function as matmuls instead:

* "row-lag" GEMM: a 3x3 conv is one matmul of each pixel's *row* of 3
  neighbours (3*ci values) against all 3 kernel rows at once (3*co outputs),
  followed by a sum of the 3 results shifted by one row each. The patch
  matrix is 3x the input instead of im2col's 9x, and the GEMM is 3ci x 3co
  instead of 9ci x co, which keeps the narrow layers' matmuls wide;
* the kernel gradient as the transposed GEMM of those row patches against the
  output gradient shifted by 0..2 rows;
* a single-channel input layer as 9 shifted multiply-adds ("taps"): a GEMM with
  K=9 cannot use the matmul units, and the multiply-adds fuse with the bias and ReLU.

Any odd kernel size works. Which layers use them is `policy.py`'s table.
"""

import jax
import jax.numpy as jnp
from jax import lax

# Images per GEMM in the row-lag loops: few enough that the 3x patch matrix stays cache-sized
# (the size was picked with `python -m jaxcxr.perf.bench --layers`).
CHUNK_IMAGES = 2


def conv_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' convolution of NHWC inputs with an HWIO kernel, as flax.linen.Conv computes it."""
  return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla_kernel_grad(x: jax.Array, g: jax.Array, kernel: jax.Array) -> jax.Array:
  """d(loss)/d(kernel) of `conv_xla` as XLA differentiates it."""
  return jax.vjp(lambda k: conv_xla(x, k), kernel)[1](g)[0]


def _pad_same(x: jax.Array, kh: int, kw: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))


def _row_patches(xp: jax.Array, width: int, kw: int) -> jax.Array:
  """(B, H, width+kw-1, C) -> (B, H, width, kw*C): each pixel's row of kw neighbours, channels ordered (j, c)."""
  return jnp.concatenate([xp[:, :, j:j + width] for j in range(kw)], axis=-1)


def chunked(x: jax.Array) -> jax.Array:
  """(B, ...) -> (B / chunk, chunk, ...): `CHUNK_IMAGES` images per chunk, or 1 for an odd batch."""
  chunk = CHUNK_IMAGES if x.shape[0] % CHUNK_IMAGES == 0 else 1
  return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def lag_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_xla` as row-patch GEMMs, `CHUNK_IMAGES` images at a time."""
  kh, kw, ci, co = kernel.shape
  b, h, w, _ = x.shape
  weights = kernel.transpose(1, 2, 0, 3).reshape(kw * ci, kh * co)  # rows (j, c), columns (i, d)

  def one(_, xc):
    z = jnp.dot(_row_patches(_pad_same(xc, kh, kw), w, kw), weights)
    z = z.reshape(*z.shape[:3], kh, co)
    return None, sum(z[:, i:i + h, :, i] for i in range(kh))

  return lax.scan(one, None, chunked(x))[1].reshape(b, h, w, co)


def lag_kernel_grad(x: jax.Array, g: jax.Array, kernel: jax.Array) -> jax.Array:
  """d(loss)/d(kernel): row patches of x against g shifted by each kernel row, as transposed GEMMs.

  Row h' of the shifted gradient holds g[h' - i] in column block i, so one
  (kw*ci) x (kh*co) GEMM yields all kh*kw taps. Only `kernel`'s shape is used.
  """
  kh, kw, ci, co = kernel.shape
  _, h, w, _ = x.shape
  rows = h + kh - 1

  def one(acc, xg):
    xc, gc = xg
    patches = _row_patches(_pad_same(xc, kh, kw), w, kw)
    gp = jnp.pad(gc, ((0, 0), (kh - 1, kh - 1), (0, 0), (0, 0)))
    shifted = jnp.concatenate([gp[:, kh - 1 - i:kh - 1 - i + rows] for i in range(kh)], axis=-1)
    return acc + jnp.dot(patches.reshape(-1, kw * ci).T, shifted.reshape(-1, kh * co),
                         preferred_element_type=jnp.float32), None

  acc, _ = lax.scan(one, jnp.zeros((kw * ci, kh * co), jnp.float32), (chunked(x), chunked(g)))
  return acc.reshape(kw, ci, kh, co).transpose(2, 0, 1, 3)


def taps_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`conv_xla` of a single-channel input as kh*kw shifted multiply-adds."""
  kh, kw, _, _ = kernel.shape
  _, h, w, _ = x.shape
  xp = _pad_same(x, kh, kw)
  return sum(xp[:, i:i + h, j:j + w] * kernel[i, j, 0] for i in range(kh) for j in range(kw))
