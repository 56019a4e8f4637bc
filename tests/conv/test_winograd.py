"""Winograd F(2x2, 3x3) against XLA's direct convolution: values, both gradients, chunking, odd sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcxr.conv import gemm, winograd


def _relative_error(a, b):
  return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.mark.parametrize("shape, co", [((3, 8, 8, 5), 7), ((2, 7, 9, 4), 6), ((1, 2, 2, 3), 2), ((4, 5, 6, 16), 8)])
def test_conv_and_kernel_grad_match_the_direct_convolution(shape, co):
  x = jax.random.normal(jax.random.key(0), shape)
  kernel = jax.random.normal(jax.random.key(1), (3, 3, shape[3], co))
  g = jax.random.normal(jax.random.key(2), (*shape[:3], co))
  y, vjp = jax.vjp(gemm.conv_xla, x, kernel)
  _, dk = vjp(g)
  assert _relative_error(winograd.conv(x, kernel), y) < 1e-5
  assert _relative_error(winograd.kernel_grad(x, g), dk) < 1e-5


def test_chunking_over_images_changes_nothing(monkeypatch):
  x = jax.random.normal(jax.random.key(3), (6, 6, 6, 4))
  kernel = jax.random.normal(jax.random.key(4), (3, 3, 4, 5))
  g = jax.random.normal(jax.random.key(5), (6, 6, 6, 5))
  whole = winograd.conv(x, kernel), winograd.kernel_grad(x, g)
  assert winograd._images_per_chunk(x) == 6  # the whole batch is smaller than one chunk
  monkeypatch.setattr(winograd, "CHUNK_BYTES", x[0].nbytes * 2)  # two images at a time, three chunks
  assert winograd._images_per_chunk(x) == 2
  for a, b in zip((winograd.conv(x, kernel), winograd.kernel_grad(x, g)), whole):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_kernel_transform_round_trip_is_its_transpose():
  """<G k Gᵀ, U> == <k, Gᵀ U G>: the kernel gradient's transform is the adjoint of the forward one."""
  k = jax.random.normal(jax.random.key(6), (3, 3, 2, 3))
  u = jax.random.normal(jax.random.key(7), (16, 2, 3))
  lhs = jnp.vdot(winograd._kernel_tiles(k), u)
  rhs = jnp.vdot(k, winograd._kernel_from_tiles(u))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-5)
