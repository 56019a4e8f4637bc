"""The convolution wing: how this project computes a stride-1 'SAME' convolution on each platform.

Networks receive their convolution as a module (`module(lowering)`, a drop-in
for `flax.linen.Conv`); `resolve` turns `model.lowering` into the lowering a
platform runs. Everything else here is how: the per-pass table (`policy`),
the algorithms (`gemm`, `winograd`, and `direct` with its compiled kernel).
"""

from jaxcxr.conv.module import Conv, convolution, module
from jaxcxr.conv.policy import AUTO, LOWERINGS, XLA, resolve, runnable

__all__ = ["AUTO", "LOWERINGS", "XLA", "Conv", "convolution", "module", "resolve", "runnable"]
