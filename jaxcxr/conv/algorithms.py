"""The equal-valued algorithms a convolution pass can run, each with the layers it can take.

Every algorithm computes the stride-1 'SAME' convolution of NHWC `x` with an
HWIO kernel (`forward`) and its kernel gradient (`kernel_grad(x, g, kernel)`)
to float32 rounding; `fits` says whether it can take a layer at all. Which one
runs where is `policy.py`'s table. The input gradient is the forward pass of
the output gradient with the flipped, transposed kernel, so it needs no
algorithm of its own.
"""

import dataclasses
from collections.abc import Callable

import jax

from jaxcxr.conv import direct, gemm, winograd


def _odd(kernel_shape) -> bool:
  return all(k % 2 for k in kernel_shape[:2])


def _three_by_three(kernel_shape) -> bool:
  return tuple(kernel_shape[:2]) == (3, 3)


@dataclasses.dataclass(frozen=True)
class Algorithm:
  forward: Callable[[jax.Array, jax.Array], jax.Array]
  kernel_grad: Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None
  fits: Callable[[tuple[int, ...], tuple[int, ...], object], bool]


ALGORITHMS = {
    "xla": Algorithm(gemm.conv_xla, gemm.xla_kernel_grad, lambda x_shape, kernel_shape, dtype: True),
    # A single input channel's kernel gradient is a 1-row GEMM patch: the policy sends it to XLA's.
    "taps": Algorithm(gemm.taps_conv, None, lambda x_shape, kernel_shape, dtype: x_shape[3] == 1
                      and _odd(kernel_shape)),
    "lag": Algorithm(gemm.lag_conv, gemm.lag_kernel_grad, lambda x_shape, kernel_shape, dtype: _odd(kernel_shape)),
    "winograd": Algorithm(winograd.conv, lambda x, g, kernel: winograd.kernel_grad(x, g),
                          lambda x_shape, kernel_shape, dtype: _three_by_three(kernel_shape)),
    "direct": Algorithm(direct.conv, lambda x, g, kernel: direct.kernel_grad(x, g), direct.fits),
}
