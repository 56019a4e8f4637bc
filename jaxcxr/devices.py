"""Choosing the devices a run trains on, and how its arrays are laid out over them.

Training is placed by putting its state and batches on the devices; the jitted
step follows its inputs. Over several devices the run is data parallel: a 1-D
mesh with axis `data`, each batch split along it, the state replicated
(`data_parallel`). Over several processes (hosts), `start_processes` joins them
through `jax.distributed` first; the mesh then spans every process's devices,
each process holds its own rows of every batch (`process_rows`) and builds the
global batch from them (`global_batch`). This module turns a platform name
into devices, or into a clear error when JAX has no such backend.
"""

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxcxr import hostmem
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

CPU, GPU = "cpu", "gpu"
PLATFORMS = (CPU, GPU)
DATA_AXIS = "data"
# --coordinator_address=cluster: JAX reads the processes from the cluster's environment (SLURM, Open MPI, ...).
FROM_CLUSTER = "cluster"
# A process whose peers stop answering gives up after this long instead of waiting for them for ever (JAX's
# default is 100 s).
HEARTBEAT_TIMEOUT_S = 30


def start_processes(platform: str, coordinator_address: str | None, num_processes: int, process_id: int) -> None:
  """Joins this process to a run of several (`jax.distributed`), before any device is used; a no-op for one.
  On CPUs, the processes' collectives go through gloo."""
  if not coordinator_address:
    if num_processes != 1:
      raise UserError(f"--num_processes={num_processes} needs --coordinator_address=HOST:PORT (process 0's "
                      f"address), or --coordinator_address={FROM_CLUSTER} on a cluster JAX detects (SLURM, ...)")
    return
  if coordinator_address != FROM_CLUSTER and not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
  if platform == CPU:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    if coordinator_address == FROM_CLUSTER:
      jax.distributed.initialize(heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
    else:
      jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                 heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
  except Exception as e:  # pylint: disable=broad-except  # JAX raises RuntimeError or ValueError
    reason = (str(e).splitlines() or [type(e).__name__])[0]
    processes = "processes" if coordinator_address == FROM_CLUSTER else f"{num_processes} processes"
    raise UserError(f"could not join the run's {processes} through {coordinator_address} "
                    f"({reason}); start every process with the same --coordinator_address and --num_processes, "
                    "each with its own --process_id") from e
  log.info("Process %d of %d joined through %s", jax.process_index(), jax.process_count(), coordinator_address)


def is_primary() -> bool:
  """Whether this process writes the run's files and logs (process 0; the only one of a one-process run)."""
  return jax.process_index() == 0


def process_rows(batch_size: int) -> slice:
  """This process's rows of every global batch of `batch_size`: an equal share, in process order (the mesh
  lists process 0's devices first)."""
  share = batch_size // jax.process_count()
  return slice(jax.process_index() * share, (jax.process_index() + 1) * share)


def global_batch(local: dict, sharding: jax.sharding.Sharding) -> dict:
  """The global batch from this process's rows of it (`process_rows`), split over the mesh by `sharding`."""
  return jax.tree.map(lambda rows: jax.make_array_from_process_local_data(sharding, rows), local)


def host_array(x: jax.Array) -> np.ndarray:
  """`x` whole on this host, gathered from the other processes where it is split across them."""
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def barrier(name: str) -> None:
  """Waits until every process of the run reaches the same point (a no-op for one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _first_device(platform: str) -> jax.Device:
  """The first device of `platform`, or UserError explaining how to get one.

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
  """The first `count` devices of `platform` (`train.num_devices`; 0 = every visible one, of every process),
  or UserError."""
  first = _first_device(platform)
  visible = jax.devices(first.platform)
  if jax.process_count() > 1 and count not in (0, len(visible)):
    raise UserError(f"train.num_devices={count} with {jax.process_count()} processes: a run over several "
                    f"processes uses all their {len(visible)} devices (train.num_devices=0)")
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


def record(used: Sequence[jax.Device]) -> dict:
  """What the logs, the summary and the benchmarks record about the devices a run used: the first one's kind
  and platform, how many and their names."""
  device = used[0]
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
  info = record(used)
  log.info("Running on %s (%s), JAX %s: %d of %d %s device(s) visible", ", ".join(info["devices"]),
           info["device_kind"], info["jax_version"], info["num_devices"], info["local_device_count"],
           info["platform"])
