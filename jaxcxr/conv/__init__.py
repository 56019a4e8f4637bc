"""The convolution wing: how this project computes a stride-1 'SAME' convolution on each platform.

Networks receive their convolution as a module (`module(lowering)`, a drop-in
for `flax.linen.Conv`; the backbones' is `backbone_module(platform)`);
`resolve` turns `model.lowering` into the lowering a platform runs. Everything else here is how: the per-pass table (`policy`),
the algorithms (`gemm`, `winograd`, and `direct` with its compiled kernel).
"""

from jaxcxr.conv.module import Conv, convolution, module
from jaxcxr.conv.policy import AUTO, BACKBONE_CPU, LOWERINGS, XLA, backbone_module, resolve, runnable

__all__ = ["AUTO", "BACKBONE_CPU", "LOWERINGS", "XLA", "Conv", "backbone_module", "convolution", "module", "resolve",
           "runnable"]
