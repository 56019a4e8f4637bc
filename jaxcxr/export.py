"""The export command: a run's newest intact checkpoint as `RUN/export/` (`jaxcxr.exported` documents the folder
and loads it without the model code).

  python run.py --mode=export --workdir=runs/default-cpu [--platforms=cpu,cuda]

The function exported is the network's evaluation pass, films in and logits out, with its input scaling inside
and its convolutions as XLA's own operations (the CPU wing's kernels are not portable StableHLO; every lowering
gives the same values). The batch dimension is symbolic, so one export serves every batch size. The folder is
written under a temporary name and renamed into place, so an interrupted export leaves the previous one intact.
"""

import hashlib
import importlib.metadata
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

import jax
import jax.export
import jax.numpy as jnp

from jaxcxr import conv, devices, exported, inference
from jaxcxr.workdir import PREDICTIONS
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from jaxcxr.models import prepare_input

PLATFORMS = ("cpu", "cuda", "rocm")  # jax.export's names for the platforms it lowers to
EXPORT_DIR = "export"


def parse_platforms(text: str) -> tuple[str, ...]:
  """`--platforms=cpu,cuda` as a tuple of jax.export platform names; UserError for any other."""
  names = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
  unknown = [p for p in names if p not in PLATFORMS]
  if not names or unknown:
    raise UserError(f"--platforms={text!r} must name one or more of {', '.join(PLATFORMS)}, comma-separated")
  return names


def serialize(network: inference.TrainedNetwork, platforms: Sequence[str]) -> tuple[bytes, int]:
  """`network`'s films-to-logits function as jax.export bytes for `platforms`, and its calling convention."""
  size = network.image_size
  variables, apply_fn, dtype = network.variables, network.apply_fn, network.dtype

  def logits(films):
    return apply_fn(variables, prepare_input(films, dtype), train=False).reshape(films.shape[0], -1).astype(
        jnp.float32)

  batch, = jax.export.symbolic_shape("batch")
  spec = jax.ShapeDtypeStruct((batch, size, size), jnp.uint8)
  done = jax.export.export(jax.jit(logits), platforms=tuple(platforms))(spec)
  return bytes(done.serialize()), done.calling_convention_version


def run(folder: str | pathlib.Path, platforms: Sequence[str] = ("cpu",)) -> pathlib.Path:
  """Exports the run in `folder` to `folder/export/`; returns that path."""
  folder = pathlib.Path(folder).expanduser()
  network = inference.from_checkpoint(folder, devices.CPU, lowering=conv.XLA)
  ensure_writable_dir(folder, "--workdir")
  serialized, convention = serialize(network, platforms)
  manifest = {
      "format": exported.FORMAT, "format_version": exported.FORMAT_VERSION, "model_file": exported.MODEL_FILE,
      "sha256": hashlib.sha256(serialized).hexdigest(), "platforms": list(platforms),
      "calling_convention_version": convention, "jax_version": jax.__version__,
      "jaxcxr_version": importlib.metadata.version("jaxcxr"), "checkpoint_step": network.step,
      "network": network.config.model.name, "dtype": network.config.model.dtype,
      # What a loader needs to prepare a film exactly as training did; the scaling itself is inside model.jax.
      "input": {"image_size": network.image_size, "aspect": network.aspect, "views": list(network.views),
                "films": "uint8 greyscale (B, image_size, image_size), fitted by jaxcxr.data.images",
                "scaling": "(pixel - 127.5) / 64, inside the exported function"},
      "readout": network.readout.to_dict(),
  }
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{EXPORT_DIR}-", dir=folder))
  target = folder / EXPORT_DIR
  try:
    staging.chmod(folder.stat().st_mode & 0o777)  # mkdtemp's is private; the export is as shared as its run
    atomic_write_bytes(staging / exported.MODEL_FILE, serialized)
    atomic_write_json(staging / exported.MANIFEST, manifest)
    if target.exists():  # the previous export stays whole until the new one is complete
      if (target / PREDICTIONS).is_dir():  # what predict wrote with the previous export is kept
        (target / PREDICTIONS).rename(staging / PREDICTIONS)
      old = pathlib.Path(tempfile.mkdtemp(prefix=f".{EXPORT_DIR}-old-", dir=folder))
      target.rename(old / EXPORT_DIR)
      staging.rename(target)
      shutil.rmtree(old)
    else:
      staging.rename(target)
  except OSError as e:
    raise UserError(f"cannot write {target} ({e.strerror or e}); free space or fix permissions in {folder}") from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  print(f"exported the checkpoint of step {network.step} for {', '.join(platforms)}: {target} "
        f"({len(serialized) / 2**20:.1f} MB); {network.readout.note}")
  return target
