"""Which lowering a run uses, and, per lowering, which algorithm runs each pass of each layer.

A lowering is a name for one row set of the table below: `xla` (XLA's own
convolution for every pass), `gemm` (row-lag GEMMs), `winograd` (`gemm` with
Winograd F(2x2, 3x3) for the wide 3x3 layers) and `direct` (`winograd` with a
compiled direct convolution for the narrow 3x3 float32 layers). All compute
the same function to float32 rounding and share one parameter tree, so
checkpoints move between them. `auto` resolves per platform and core count.

The table's thresholds are where one algorithm timed faster than the next row's
for that pass and layer shape in the per-layer benchmark, `python -m
jaxcxr.perf.bench --layers` (its figures: README, "Where the time goes").
"""

import dataclasses
import math

from jaxcxr import devices as devices_lib
from jaxcxr.conv import direct
from jaxcxr.conv.algorithms import ALGORITHMS
from jaxcxr.errors import UserError

XLA, GEMM, WINOGRAD, DIRECT = "xla", "gemm", "winograd", "direct"
LOWERINGS = (XLA, GEMM, WINOGRAD, DIRECT)
AUTO = "auto"
# The passes the table covers: the input gradient is a forward pass (of the output gradient, with the
# flipped and transposed kernel), so it follows the forward rows for its own channel counts.
FORWARD, KERNEL_GRAD = "forward", "kernel_grad"

# `auto` on a CPU with at most this many cores picks `direct` (`winograd` where no C++ compiler can build
# the direct kernel), above it `xla`: the gemm and winograd code runs a few images at a time, too little
# work to spread over many cores, while XLA's own convolutions take the whole batch and scale with the
# cores (README, the vCPU scaling table). `direct` splits the batch by image but has been measured on
# 2 cores only.
OWN_LOWERINGS_MAX_CORES = 2


@dataclasses.dataclass(frozen=True)
class Rule:
  """Run `algorithm` on a layer whose input channels, min(ci, co) and ci + co lie in these ranges."""
  algorithm: str
  inputs: tuple[float, float] = (1, math.inf)
  min_channels: float = 1
  total: tuple[float, float] = (0, math.inf)

  def matches(self, ci: int, co: int) -> bool:
    return (self.inputs[0] <= ci <= self.inputs[1] and min(ci, co) >= self.min_channels
            and self.total[0] <= ci + co <= self.total[1])


# Single-channel inputs: shifted multiply-adds forward; a K=3 GEMM's kernel gradient loses to XLA's.
_TAPS = Rule("taps", inputs=(1, 1))
_XLA_ONE_CHANNEL = Rule("xla", inputs=(1, 1))
# Row-lag GEMMs beat XLA's forward pass and input gradient only over this range of ci + co.
_LAG = Rule("lag", total=(48, 192))
# Winograd's transforms cost memory traffic: forward passes pay from 32 channels, kernel gradients
# from 64 (and 192 in total).
_WINOGRAD = Rule("winograd", min_channels=32)
_WINOGRAD_KERNEL_GRAD = Rule("winograd", min_channels=64, total=(192, math.inf))

# First row whose channel ranges match and whose algorithm fits the layer wins; XLA's own takes the rest.
TABLE: dict[str, dict[str, tuple[Rule, ...]]] = {
    XLA: {FORWARD: (), KERNEL_GRAD: ()},
    GEMM: {FORWARD: (_TAPS, _LAG), KERNEL_GRAD: (_XLA_ONE_CHANNEL, Rule("lag"))},
    WINOGRAD: {FORWARD: (_TAPS, _WINOGRAD, _LAG),
               KERNEL_GRAD: (_WINOGRAD_KERNEL_GRAD, _XLA_ONE_CHANNEL, Rule("lag"))},
    # The direct kernel's weights outgrow the L1 cache above these widths, where Winograd's fewer
    # multiplies win.
    DIRECT: {FORWARD: (_TAPS, Rule("direct", total=(0, 128)), _WINOGRAD, _LAG),
             KERNEL_GRAD: (Rule("direct", total=(0, 256)), _WINOGRAD_KERNEL_GRAD, _XLA_ONE_CHANNEL, Rule("lag"))},
}


def choose(lowering: str, pass_name: str, x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], dtype) -> str:
  """The algorithm `lowering` runs for this pass of a layer with input `x_shape` and an HWIO `kernel_shape`."""
  ci, co = kernel_shape[2:]
  for rule in TABLE[lowering][pass_name]:
    if rule.matches(ci, co) and ALGORITHMS[rule.algorithm].fits(x_shape, kernel_shape, dtype):
      return rule.algorithm
  return "xla"


def resolve(requested: str, platform: str, cores: int | None = None, devices: int = 1) -> str:
  """The concrete lowering for `model.lowering=requested` on `platform` over `devices` devices, refusing what
  cannot run there.

  `auto` is `direct` (`winograd` without a compiler) on one CPU device of at most
  `OWN_LOWERINGS_MAX_CORES` cores (this process's, unless `cores` is given), else `xla`: the direct kernel
  is a custom call XLA cannot split over devices, and the own lowerings are tuned for one 2-core device.
  """
  if requested not in (*LOWERINGS, AUTO):
    raise UserError(f"model.lowering={requested!r}; choose one of {', '.join((*LOWERINGS, AUTO))}")
  lowering = requested
  if requested == AUTO:
    cores = devices_lib.host_cores() if cores is None else cores
    if platform != devices_lib.CPU or cores > OWN_LOWERINGS_MAX_CORES or devices > 1:
      lowering = XLA
    else:
      lowering = DIRECT if direct.available() else WINOGRAD
  if lowering == DIRECT:
    if platform != devices_lib.CPU:
      raise UserError(f"model.lowering=direct is a CPU kernel and cannot run on {platform}; use auto or xla there")
    if devices > 1:
      raise UserError(f"model.lowering=direct computes on one device, not over {devices}; use auto or xla with "
                      "several devices (or train.num_devices=1)")
    direct.require()
  return lowering


def runnable(platform: str) -> tuple[str, ...]:
  """The lowerings that can run on `platform` in this process: all of them on a CPU that can build the
  direct kernel, all but `direct` elsewhere."""
  return tuple(l for l in LOWERINGS if l != DIRECT or (platform == devices_lib.CPU and direct.available()))
