"""The convolution as a Flax module with flax.linen.Conv's parameters, computed by a chosen lowering.

Each pass (forward, input gradient, kernel gradient) runs the algorithm
`policy.choose` names for the layer's shape, behind one `custom_vjp`.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcxr.conv import policy
from jaxcxr.conv.algorithms import ALGORITHMS


def _forward(x: jax.Array, kernel: jax.Array, lowering: str) -> jax.Array:
  name = policy.choose(lowering, policy.FORWARD, x.shape, kernel.shape, x.dtype)
  return ALGORITHMS[name].forward(x, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _convolve(x: jax.Array, kernel: jax.Array, lowering: str) -> jax.Array:
  return _forward(x, kernel, lowering)


def _convolve_fwd(x, kernel, lowering):
  return _forward(x, kernel, lowering), (x, kernel)


def _convolve_bwd(lowering, residuals, g):
  x, kernel = residuals
  # The input gradient is the 'SAME' convolution of g with the flipped, transposed kernel (odd sizes).
  dx = _forward(g, jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2), lowering)
  name = policy.choose(lowering, policy.KERNEL_GRAD, x.shape, kernel.shape, x.dtype)
  return dx, ALGORITHMS[name].kernel_grad(x, g, kernel).astype(kernel.dtype)


_convolve.defvjp(_convolve_fwd, _convolve_bwd)


def convolution(lowering: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Stride-1 'SAME' convolution of NHWC `x` with an HWIO kernel, computed and differentiated by `lowering`.

  `xla` is XLA's own convolution, differentiated by XLA; the others route every pass through the table.
  """
  if lowering == policy.XLA:
    return ALGORITHMS["xla"].forward
  return functools.partial(_convolve, lowering=lowering)


class Conv(nn.Module):
  """A stride-1 'SAME' conv with flax.linen.Conv's parameters (`kernel` HWIO, `bias`) and numerics.

  Every lowering gives the same values and the same parameter tree, so
  checkpoints move between them; all but `xla` need odd kernel sizes.
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  dtype: Any = jnp.float32
  lowering: str = policy.XLA

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.lowering != policy.XLA and not all(k % 2 for k in self.kernel_size):
      raise ValueError(f"the {self.lowering} lowering needs odd kernel sizes, got {self.kernel_size}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return convolution(self.lowering)(x, kernel) + bias


def module(lowering: str) -> Callable[..., nn.Module]:
  """The conv module a network builds its layers with (`conv: ModuleDef`), for a resolved lowering."""
  if lowering not in policy.LOWERINGS:
    raise ValueError(f"unresolved lowering {lowering!r}; resolve it with conv.resolve first")
  return functools.partial(Conv, lowering=lowering)
