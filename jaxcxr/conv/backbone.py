"""The backbones' convolution on the CPU: `nn.Conv`, with each layer XLA:CPU runs slowly reformulated.

XLA:CPU runs a 1x1 convolution and its gradients on its convolution path, well below the matmul rate the same
arithmetic reaches as a `dot_general` over the channels, and it runs the kernel gradient of every convolution
several times slower than the forward pass (docs/performance.md, "Backbone convolutions"). So `Conv`:
- computes an unpadded 1x1 convolution of stride s as one matmul over the channels on every s-th pixel
  (autodiff turns its gradients into matmuls too);
- sends a stride-1 convolution padded to its own size ('same', odd kernel) through the convolution wing's
  `lowering` (`module.convolution`): each pass then runs the algorithm `policy.py`'s table names for its shape;
- computes a strided convolution with explicit padding (the strided 3x3s, the 7x7 stem) with XLA's own
  forward pass and input gradient, but its kernel gradient as a matmul of each image pair's patches against the
  output gradient (`strided_kernel_grad`), where XLA runs it 3-4x slower;
- leaves every other convolution to `flax.linen.Conv`.
With `lowering=xla` only the matmuls of the 1x1s are kept: every other layer is nn.Conv's.
Its parameters are nn.Conv's (`kernel` HWIO, `bias`), so checkpoints and imported weights move between it and
nn.Conv.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import dtypes

from jaxcxr import devices as devices_lib
from jaxcxr.conv import gemm, module, policy

MATMUL = "matmul"  # the 1x1 path's name in the per-layer benchmark
PATCHES = "patches"  # the strided path's


def _conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def strided_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...], strides: tuple[int, ...],
                        padding) -> jax.Array:
  """d(loss)/d(kernel) of `_conv(x, kernel, strides, padding)` given its output gradient `g`: for each
  `gemm.CHUNK_IMAGES` images, the (pixels x kh*kw*ci) patch matrix of the padded input, one strided view per
  kernel tap, times the output gradient; summed over the chunks (`lax.scan`), so each patch matrix stays
  cache-sized."""
  kh, kw, ci, co = kernel_shape
  (sh, sw), (oh, ow) = strides, g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))

  def one(total, chunk):
    xc, gc = chunk
    patches = jnp.concatenate([xc[:, a:a + sh * (oh - 1) + 1:sh, b:b + sw * (ow - 1) + 1:sw]
                               for a in range(kh) for b in range(kw)], axis=-1)
    return total + jnp.einsum("bijk,bijo->ko", patches, gc, preferred_element_type=jnp.float32), None

  total, _ = jax.lax.scan(one, jnp.zeros((kh * kw * ci, co), jnp.float32), (gemm.chunked(xp), gemm.chunked(g)))
  return total.reshape(kh, kw, ci, co)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided(x: jax.Array, kernel: jax.Array, strides: tuple[int, ...], padding) -> jax.Array:
  return _conv(x, kernel, strides, padding)


def _strided_fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding), (x, kernel)


def _strided_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  dx = jax.vjp(lambda x_: _conv(x_, kernel, strides, padding), x)[1](g)[0]  # XLA's own input gradient
  return dx, strided_kernel_grad(x, g, kernel.shape, strides, padding).astype(kernel.dtype)


_strided.defvjp(_strided_fwd, _strided_bwd)


def strides_of(layer: nn.Module) -> tuple[int, ...]:
  """A convolution layer's strides, one per spatial dimension (`module.Conv`'s are 1)."""
  strides = getattr(layer, "strides", 1)
  return (strides,) * 2 if isinstance(strides, int) else tuple(strides or (1, 1))


class Conv(nn.Conv):
  """`nn.Conv` whose 1x1 convolutions run as matmuls, whose stride-1 'same' ones run `lowering`, and whose
  strided ones take their kernel gradient from patch matmuls (unless `lowering` is xla)."""
  lowering: str = policy.XLA

  def _plain(self) -> bool:
    """Ungrouped, undilated and unmasked, in two spatial dimensions: what every reformulation needs."""
    ones = all(d in (None, 1) or d == (1, 1) for d in (self.input_dilation, self.kernel_dilation))
    return self.feature_group_count == 1 and ones and len(strides_of(self)) == 2 and not self.mask

  def path(self) -> str:
    """How this layer is computed: `MATMUL`, the wing's `lowering`, `PATCHES`, or `policy.XLA` (nn.Conv's own)."""
    kernel = tuple(self.kernel_size)
    if not self._plain():
      return policy.XLA
    if kernel == (1, 1) and self.padding == "VALID":
      return MATMUL
    if self.lowering == policy.XLA:
      return policy.XLA
    pairs = self._padding_pairs()
    if all(k % 2 for k in kernel) and strides_of(self) == (1, 1) and (
        self.padding == "SAME" or pairs == tuple((k // 2, k // 2) for k in kernel)):
      return self.lowering
    if strides_of(self) != (1, 1) and pairs is not None:
      return PATCHES
    return policy.XLA

  def _padding_pairs(self) -> tuple[tuple[int, int], ...] | None:
    """The padding as (low, high) per spatial dimension where it is given so explicitly, else None."""
    padding = self.padding
    if not isinstance(padding, (tuple, list)) or len(padding) != 2:
      return None
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in padding):
      return None
    return tuple(tuple(p) for p in padding)

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
    elif path == PATCHES:
      y = _strided(inputs, kernel, strides_of(self), self._padding_pairs())
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
