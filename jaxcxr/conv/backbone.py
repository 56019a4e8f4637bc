"""The backbones' convolution on the CPU: `nn.Conv`, with each layer XLA:CPU runs slowly reformulated.

XLA:CPU runs a 1x1 convolution and its gradients on its convolution path, well below the matmul rate the same
arithmetic reaches as a `dot_general` over the channels, and it runs the kernel gradient of every convolution
several times slower than the forward pass (docs/performance.md, "Backbone convolutions"). So `Conv`:
- computes an unpadded 1x1 convolution of stride s as one matmul over the channels on every s-th pixel
  (autodiff turns its gradients into matmuls too);
- sends a stride-1 convolution padded to its own size ('same', odd kernel) through the convolution wing's
  `lowering` (`module.convolution`): each pass then runs the algorithm `policy.py`'s table names for its shape;
- leaves every other convolution (the strided 3x3s and the 7x7 stem) to `flax.linen.Conv`.
Its parameters are nn.Conv's (`kernel` HWIO, `bias`), so checkpoints and imported weights move between it and
nn.Conv.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
from flax.linen import dtypes

from jaxcxr import devices as devices_lib
from jaxcxr.conv import module, policy

MATMUL = "matmul"  # the 1x1 path's name in the per-layer benchmark


def strides_of(layer: nn.Module) -> tuple[int, ...]:
  """A convolution layer's strides, one per spatial dimension (`module.Conv`'s are 1)."""
  strides = getattr(layer, "strides", 1)
  return (strides,) * 2 if isinstance(strides, int) else tuple(strides or (1, 1))


class Conv(nn.Conv):
  """`nn.Conv` whose 1x1 convolutions run as matmuls and whose stride-1 'same' ones run `lowering`."""
  lowering: str = policy.XLA

  def _plain(self) -> bool:
    """Ungrouped, undilated and unmasked, in two spatial dimensions: what both reformulations need."""
    ones = all(d in (None, 1) or d == (1, 1) for d in (self.input_dilation, self.kernel_dilation))
    return self.feature_group_count == 1 and ones and len(strides_of(self)) == 2 and not self.mask

  def path(self) -> str:
    """How this layer is computed: `MATMUL`, the wing's `lowering`, or `policy.XLA` (nn.Conv's own)."""
    kernel = tuple(self.kernel_size)
    if not self._plain():
      return policy.XLA
    if kernel == (1, 1) and self.padding == "VALID":
      return MATMUL
    same = tuple((k // 2, k // 2) for k in kernel)
    padding = tuple(tuple(p) for p in self.padding) if not isinstance(self.padding, str) else self.padding
    if all(k % 2 for k in kernel) and strides_of(self) == (1, 1) and padding in (same, "SAME"):
      return self.lowering
    return policy.XLA

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    path = self.path()
    if path == policy.XLA:
      return super().__call__(inputs)
    kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = dtypes.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    if path == MATMUL:
      strides = strides_of(self)
      picked = inputs[:, ::strides[0], ::strides[1], :] if strides != (1, 1) else inputs
      y = jax.lax.dot_general(picked, kernel[0, 0], (((picked.ndim - 1,), (0,)), ((), ())),
                              precision=self.precision)
    else:
      y = module.convolution(path)(inputs, kernel)
    return y + bias.reshape((1,) * (y.ndim - 1) + (-1,)) if bias is not None else y


def backbone_module(platform: str, requested: str = policy.AUTO, devices: int = 1,
                    cores: int | None = None) -> tuple[Callable[..., nn.Module], str]:
  """The convolution module a torchvision backbone runs with on `platform` over `devices` devices for
  `model.lowering=requested`, and the lowering's name. On the CPU, `Conv` with the resolved lowering
  (`policy.resolve`) for the stride-1 'same' layers; `xla` there keeps the 1x1 matmuls, which are XLA's own
  operations too. Elsewhere XLA's own convolutions (`nn.Conv`)."""
  lowering = policy.resolve(requested, platform, cores, devices)
  if platform != devices_lib.CPU:
    return nn.Conv, lowering
  return functools.partial(Conv, lowering=lowering), f"{lowering}, 1x1 as {MATMUL}"


def variants(layer: nn.Module, platform: str) -> dict[str, nn.Module]:
  """`layer` (a `module.Conv`, or an `nn.Conv` or `Conv` as a backbone builds it) in each formulation that
  computes it differently on `platform`, by name, unbound: what the per-layer benchmark times side by side. All
  take the same parameters."""
  if isinstance(layer, module.Conv):
    return {name: layer.clone(parent=None, lowering=name) for name in policy.runnable(platform)}
  fields = {f.name: getattr(layer, f.name) for f in dataclasses.fields(nn.Conv)
            if f.init and f.name not in ("parent", "name")}
  found = {policy.XLA: nn.Conv(**fields)}
  for lowering in policy.runnable(platform):
    candidate = Conv(**fields, lowering=lowering)
    found.setdefault(candidate.path(), candidate)
  return found


def formulation_of(layer: nn.Module) -> str:
  """The name, among `variants(layer)`, of the formulation `layer` computes itself with."""
  if isinstance(layer, module.Conv):
    return layer.lowering
  return layer.path() if isinstance(layer, Conv) else policy.XLA
