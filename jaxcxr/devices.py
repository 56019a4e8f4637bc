"""Choosing the devices a run trains on, and how its arrays are laid out over them.

Training is placed by putting its state and batches on the devices with
`jax.device_put`; the jitted step follows its inputs. Over several devices the
run is data parallel: a 1-D mesh with axis `data`, each batch split along it,
the state replicated (`data_parallel`). This module turns a platform name into
devices, or into a clear error when JAX has no such backend.
"""

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np

from jaxcxr import hostmem
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

CPU, GPU = "cpu", "gpu"
PLATFORMS = (CPU, GPU)
DATA_AXIS = "data"


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


def select_devices(platform: str, count: int = 0) -> list[jax.Device]:
  """The first `count` devices of `platform` (`train.num_devices`; 0 = every visible one), or UserError."""
  first = select_device(platform)
  visible = jax.devices(first.platform)
  if count > len(visible):
    raise UserError(f"train.num_devices={count} but only {len(visible)} {platform} device(s) are visible; "
                    f"use at most {len(visible)} (0 = all)")
  return visible[:count or len(visible)]


def data_parallel(used: Sequence[jax.Device]) -> tuple[jax.sharding.Sharding, jax.sharding.Sharding]:
  """(state, batch) shardings over `used`: the state replicated on each device, every batch split along its
  first axis, a slice per device. One device is the same layout with nothing to split."""
  mesh = jax.sharding.Mesh(np.asarray(used), (DATA_AXIS,))
  return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS)))


def host_cores() -> int:
  """Cores this process may run on: its affinity mask where the OS has one (Linux; `taskset` narrows it)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe(device: jax.Device, used: Sequence[jax.Device] = ()) -> dict:
  """What the logs and the summary record about the device a run used (`device`, the first of `used` where
  it trains on several: `num_devices` and their names)."""
  used = list(used) or [device]
  return {
      "num_devices": len(used),
      "devices": [str(d) for d in used],
      "platform": device.platform,
      "device_kind": device.device_kind,
      "device": str(device),
      "jax_version": jax.__version__,
      "local_device_count": jax.local_device_count(device.platform),
      "host_memory_retained": hostmem.retained(),
      "host_cores": host_cores(),
  }


def log_devices(used: Sequence[jax.Device]) -> None:
  info = describe(used[0], used)
  log.info("Running on %s (%s), JAX %s: %d of %d %s device(s) visible", ", ".join(info["devices"]),
           info["device_kind"], info["jax_version"], info["num_devices"], info["local_device_count"],
           info["platform"])
