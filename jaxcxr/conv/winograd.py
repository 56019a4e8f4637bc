"""Winograd F(2x2, 3x3) convolution: a 3x3 'SAME' conv with 2.25x fewer multiplies, for wide layers on CPU.

Each 4x4 input tile d (stride 2) and the kernel k are carried into a 4x4
transform domain, V = Bᵀ d B and U = G k Gᵀ, where one 2x2 output tile is
Aᵀ (U ⊙ V) A. Summed over input channels, the 16 elementwise products become
16 matmuls of (tiles x ci) by (ci x co): 16 per 4 outputs instead of 9 per
output, so 2.25x less matmul work than the direct conv. The price is the
transforms, which read and write the activations (the tile matrix is 4x the
input); on a memory-bound CPU that pays only where channels are wide enough,
and only when a few images are transformed at a time, so the tiles stay in
cache. `policy.py`'s table chooses the layers.

The kernel gradient stays in the transform domain too: dU = Σ Vᵀ (A dY Aᵀ)
over tiles, then dK = Gᵀ dU G. F(2x2, 3x3) is the well-conditioned member of
the family: float32 results differ from the direct conv by rounding
(~1e-6 relative; tests/test_winograd.py checks values and both gradients).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))  # input transform Bᵀ
_G = ((1, 0, 0), (.5, .5, .5), (.5, -.5, .5), (0, 0, 1))  # kernel transform G
_AT = ((1, 1, 1, 0), (0, 1, -1, -1))  # output transform Aᵀ

# Images transformed at a time: the smallest batch divisor whose input reaches this
# many bytes (the tile matrix is 4x that), so the tiles stay in cache; chunks of this size
# timed faster than the whole batch and than half or twice the size (`python -m jaxcxr.perf.bench`).
CHUNK_BYTES = 1_500_000


def _combine(xs: Sequence[jax.Array], coeffs: Sequence[float]) -> jax.Array:
  """Σ coeffs[i] * xs[i], skipping zero terms and multiplications by ±1 (they fuse into one XLA loop)."""
  terms = [(c, x) for c, x in zip(coeffs, xs) if c]
  total = None
  for c, x in terms:
    term = x if abs(c) == 1 else abs(c) * x
    total = (term if c > 0 else -term) if total is None else (total + term if c > 0 else total - term)
  return total


def _input_tiles(x: jax.Array) -> jax.Array:
  """(n, h, w, c), h and w even -> (16, n*h/2*w/2, c): Bᵀ d B of every stride-2 4x4 tile of the padded input."""
  n, h, w, c = x.shape
  pairs = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(n, h // 2 + 1, 2, w + 2, c)
  rows = [pairs[:, :h // 2, 0], pairs[:, :h // 2, 1], pairs[:, 1:, 0], pairs[:, 1:, 1]]
  tiles = []
  for bt_row in _BT:
    t = _combine(rows, bt_row).reshape(n, h // 2, w // 2 + 1, 2, c)
    cols = [t[:, :, :w // 2, 0], t[:, :, :w // 2, 1], t[:, :, 1:, 0], t[:, :, 1:, 1]]
    tiles += [_combine(cols, bt_col) for bt_col in _BT]
  return jnp.stack(tiles).reshape(16, -1, c)


def _kernel_tiles(kernel: jax.Array) -> jax.Array:
  """(3, 3, ci, co) -> (16, ci, co): G k Gᵀ."""
  rows = [_combine(kernel, g_row) for g_row in _G]
  return jnp.stack([_combine(r, g_row) for r in rows for g_row in _G])


def _kernel_from_tiles(tiles: jax.Array) -> jax.Array:
  """(16, ci, co) -> (3, 3, ci, co): Gᵀ dU G, the transpose of `_kernel_tiles`."""
  grid = tiles.reshape(4, 4, *tiles.shape[1:])
  g_cols = list(zip(*_G))
  rows = [_combine(grid, col) for col in g_cols]
  return jnp.stack([jnp.stack([_combine(r, col) for col in g_cols]) for r in rows])


def _output(m: jax.Array, shape: tuple[int, int, int, int]) -> jax.Array:
  """(16, tiles, co) -> (n, h, w, co): Aᵀ M A of every tile, interleaved back into the image."""
  n, h, w, co = shape
  grid = m.reshape(4, 4, n, h // 2, w // 2, co)
  rows = [_combine(grid, at_row) for at_row in _AT]
  out = jnp.stack([jnp.stack([_combine(r, at_col) for at_col in _AT], 3) for r in rows], 2)
  return out.reshape(n, h, w, co)


def _output_transposed(g: jax.Array) -> jax.Array:
  """(n, h, w, co) -> (16, tiles, co): A dY Aᵀ, the transpose of `_output` (the gradient of the products)."""
  quads = [[g[:, i::2, j::2] for j in range(2)] for i in range(2)]
  a_cols = list(zip(*_AT))
  rows = [[_combine([quads[0][j], quads[1][j]], col) for j in range(2)] for col in a_cols]
  return jnp.stack([_combine(r, col) for r in rows for col in a_cols]).reshape(16, -1, g.shape[-1])


def _batched_dot(a: jax.Array, b: jax.Array, contract: tuple[int, int]) -> jax.Array:
  """The 16 transform-domain matmuls, one per tile position (leading axis)."""
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((0,), (0,))),
                         preferred_element_type=jnp.float32)


def _images_per_chunk(x: jax.Array) -> int:
  b = x.shape[0]
  return next((d for d in range(1, b + 1) if b % d == 0 and d * x[0].nbytes >= CHUNK_BYTES), b)


def _in_chunks(x: jax.Array, n: int) -> jax.Array:
  """(B, ...) -> (B / n, n, ...): the leading axis `lax.scan` steps over."""
  return x.reshape(x.shape[0] // n, n, *x.shape[1:])


def _pad_even(x: jax.Array) -> jax.Array:
  """Adds a zero row/column to an odd height/width: 'SAME' padding is zero anyway, so outputs are unchanged."""
  return jnp.pad(x, ((0, 0), (0, x.shape[1] % 2), (0, x.shape[2] % 2), (0, 0)))


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' convolution of NHWC `x` with a 3x3 HWIO `kernel`, a few images at a time."""
  b, h, w, _ = x.shape
  xe = _pad_even(x)
  n, he, we = _images_per_chunk(xe), xe.shape[1], xe.shape[2]
  u = _kernel_tiles(kernel)
  out_shape = (n, he, we, kernel.shape[3])

  def one(_, xc):
    return None, _output(_batched_dot(_input_tiles(xc), u, (2, 1)), out_shape).astype(x.dtype)

  y = lax.scan(one, None, _in_chunks(xe, n))[1]
  return y.reshape(b, he, we, -1)[:, :h, :w]


def kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  """d(loss)/d(kernel) of `conv` for input `x` and output gradient `g`, accumulated over image chunks."""
  xe, ge = _pad_even(x), _pad_even(g)
  n = _images_per_chunk(xe)
  ci, co = x.shape[3], g.shape[3]

  def one(acc, xg):
    xc, gc = xg
    return acc + _batched_dot(_input_tiles(xc), _output_transposed(gc), (1, 1)), None

  tiles, _ = lax.scan(one, jnp.zeros((16, ci, co), jnp.float32), (_in_chunks(xe, n), _in_chunks(ge, n)))
  return _kernel_from_tiles(tiles)
