"""1x1 convolutions as matmuls, for the backbones on the CPU.

XLA:CPU runs a 1x1 convolution and its gradients on its convolution path, well below the matmul rate the same
arithmetic reaches as a `dot_general` over the channels (docs/performance.md, "Backbone convolutions"). A 1x1
convolution of stride s is exactly that matmul on every s-th pixel, so `Conv` computes it so and leaves every
other convolution to `flax.linen.Conv`. Its parameters are nn.Conv's (`kernel`, (1, 1, in, out)), so
checkpoints and imported weights move between it and nn.Conv; autodiff turns the matmul's gradients into
matmuls too.
"""

import flax.linen as nn
import jax

from flax.linen import dtypes


class Conv(nn.Conv):
  """`nn.Conv` whose unpadded, ungrouped, undilated 1x1 convolutions run as one matmul over the channels."""

  def _strides(self) -> tuple[int, ...]:
    return (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides or (1, 1))

  def _is_pointwise(self) -> bool:
    strides = self._strides()
    ones = all(d in (None, 1) or d == (1, 1) for d in (self.input_dilation, self.kernel_dilation))
    return tuple(self.kernel_size) == (1, 1) and self.padding == "VALID" and self.feature_group_count == 1 and \
        ones and len(strides) == 2 and not self.mask

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    if not self._is_pointwise():
      return super().__call__(inputs)
    strides = self._strides()
    kernel = self.param("kernel", self.kernel_init, (1, 1, inputs.shape[-1], self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    picked = inputs[:, ::strides[0], ::strides[1], :] if strides != (1, 1) else inputs
    y = jax.lax.dot_general(picked, kernel[0, 0], (((picked.ndim - 1,), (0,)), ((), ())),
                            precision=self.precision)
    return y + bias.reshape((1,) * (y.ndim - 1) + (-1,)) if bias is not None else y



