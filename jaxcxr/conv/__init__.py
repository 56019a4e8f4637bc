"""The convolution wing: how this project computes its networks' convolutions on each platform.

Networks receive their convolution as a module: the paper CNN's stride-1 'SAME' one is `module(lowering)`, a
drop-in for `flax.linen.Conv`; the backbones' is `backbone_module(platform)` (`backbone.py`: 1x1s as matmuls,
stride-1 'same' layers through the same lowerings, the rest flax's own). `resolve` turns `model.lowering` into
the lowering a platform runs; `variants` and `formulation_of` name the formulations the per-layer benchmark compares.
Everything else here is how: the per-pass table (`policy`), the algorithms (`gemm`, `winograd`, and `direct`
with its compiled kernel).
"""

from jaxcxr.conv.backbone import backbone_module, formulation_of, strides_of, variants
from jaxcxr.conv.module import Conv, convolution, module
from jaxcxr.conv.policy import AUTO, LOWERINGS, XLA, resolve, runnable

__all__ = ["AUTO", "LOWERINGS", "XLA", "Conv", "backbone_module", "convolution", "module", "resolve", "runnable",
           "formulation_of", "strides_of", "variants"]
