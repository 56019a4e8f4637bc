"""Choosing the device a run is pinned to.

Training is placed on a device by putting its state and batches there with
`jax.device_put`; the jitted step follows its inputs. This module only turns a
platform name into a `jax.Device`, or into a clear error when JAX has no such backend.
"""

import logging
import os

import jax

from jaxcxr import hostmem
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

CPU, GPU = "cpu", "gpu"
PLATFORMS = (CPU, GPU)


def select_device(platform: str) -> jax.Device:
  """Returns the first device of `platform`, or raises UserError explaining how to get one.

  It changes nothing else: the CPU entry points apply the host allocator
  setting (`hostmem.retain_freed_memory`) themselves, before this starts the backend.
  """
  if platform not in PLATFORMS:
    raise UserError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
  try:
    devices = jax.devices(platform)
  except Exception as e:  # pylint: disable=broad-except  # JAX raises RuntimeError, or AssertionError
    # when JAX_PLATFORMS names a backend it lacks; either way the user needs the same sentence.
    reason = (str(e).splitlines() or [type(e).__name__])[0] or type(e).__name__
    if platform == GPU:
      raise UserError(
          f"--platform=gpu but JAX has no GPU backend here ({reason}); install JAX's CUDA build with "
          "pip install '.[gpu]' on a machine with an NVIDIA GPU, or use --platform=cpu") from e
    raise UserError(f"JAX could not start the {platform} backend ({reason}); check JAX_PLATFORMS") from e
  return devices[0]


def host_cores() -> int:
  """Cores this process may run on: its affinity mask where the OS has one (Linux; `taskset` narrows it)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe(device: jax.Device) -> dict:
  """What the logs and the summary record about the device a run used."""
  return {
      "platform": device.platform,
      "device_kind": device.device_kind,
      "device": str(device),
      "jax_version": jax.__version__,
      "local_device_count": jax.local_device_count(device.platform),
      "host_memory_retained": hostmem.retained(),
      "host_cores": host_cores(),
  }


def log_device(device: jax.Device) -> None:
  info = describe(device)
  log.info("Running on %s (%s), JAX %s, %d %s device(s) visible", info["device"],
               info["device_kind"], info["jax_version"], info["local_device_count"], info["platform"])
