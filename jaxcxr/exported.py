"""A trained run as an export folder (`python run.py --mode=export`), and loading one without the model code.

  RUN/export/model.jax       jax.export's serialized StableHLO: uint8 films (B, S, S) in, logits (B, targets)
                             out, for any batch size B, on each platform it was exported for
  RUN/export/manifest.json   how to prepare a film as training did, how to read the logits (each target's
                             temperature and operating point), the checkpoint step, the versions, the hash

  from jaxcxr import exported
  network = exported.load("runs/default-cpu/export")
  probabilities = network.readout.probabilities(network.logits(films))   # films: (N, S, S) uint8

Loading needs jax, numpy and the film decoders only: nothing here imports flax, orbax or `jaxcxr.models`, so a
deployment carries no training code (tests/test_export.py checks it in a process that cannot import them).
The manifest's SHA-256 of model.jax is checked before the file is deserialized.
"""

import dataclasses
import hashlib
import json
import pathlib

import jax
import jax.export
import numpy as np

from jaxcxr.errors import UserError
from jaxcxr.readout import Readout

FORMAT = "jaxcxr-export"
FORMAT_VERSION = 1
MODEL_FILE = "model.jax"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class ExportedNetwork:
  """An exported network: films in, logits out, read by its `readout`. It applies in batches of at most
  `batch_size` films (any count compiles once per distinct batch shape)."""
  exported: jax.export.Exported
  readout: Readout
  step: int
  image_size: int
  aspect: str
  views: tuple[str, ...]
  manifest: dict
  batch_size: int = 64

  def logits(self, films: np.ndarray) -> np.ndarray:
    """(N, targets) logits for (N, size, size) uint8 films already at the run's size."""
    films = np.asarray(films, np.uint8)
    out = [np.asarray(self.exported.call(films[start:start + self.batch_size]))
           for start in range(0, len(films), self.batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(self.readout.targets)), np.float32)


def is_export(folder: str | pathlib.Path) -> bool:
  """Whether `folder` is an export folder (it holds a manifest) rather than a run folder."""
  return (pathlib.Path(folder).expanduser() / MANIFEST).is_file()


def _manifest(folder: pathlib.Path) -> dict:
  path = folder / MANIFEST
  if not path.is_file():
    raise UserError(f"{folder} is not a jaxcxr export (no {MANIFEST}); export a run with python run.py "
                    "--mode=export --workdir=RUN, and pass RUN/export")
  try:
    manifest = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise UserError(f"{path} is damaged ({type(e).__name__}: {e}); export the run again "
                    "(python run.py --mode=export --workdir=RUN)") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise UserError(f"{path} is not a jaxcxr export manifest (its format is not {FORMAT!r}); pass the export "
                    "folder python run.py --mode=export wrote")
  if manifest.get("format_version") != FORMAT_VERSION:
    raise UserError(f"{path} is export format version {manifest.get('format_version')}; this jaxcxr reads "
                    f"version {FORMAT_VERSION}: export the run again with this jaxcxr")
  return manifest


def _check_calling_convention(path: pathlib.Path, manifest: dict) -> None:
  """An export from a JAX whose calling convention this JAX no longer (or not yet) reads stops in one line."""
  version = manifest.get("calling_convention_version")
  low = jax.export.minimum_supported_calling_convention_version
  high = jax.export.maximum_supported_calling_convention_version
  if not isinstance(version, int) or not low <= version <= high:
    raise UserError(f"{path} was exported by JAX {manifest.get('jax_version')} with calling convention "
                    f"{version}; this JAX {jax.__version__} reads versions {low}-{high}: export the run again "
                    "with this JAX, or load it with the JAX that exported it")


def load(folder: str | pathlib.Path) -> ExportedNetwork:
  """The export in `folder`, its hash checked, ready to apply on this machine's default platform (which must be
  one it was exported for)."""
  folder = pathlib.Path(folder).expanduser()
  manifest = _manifest(folder)
  path = folder / MODEL_FILE
  _check_calling_convention(folder / MANIFEST, manifest)
  try:
    serialized = path.read_bytes()
  except OSError as e:
    raise UserError(f"{path} cannot be read ({e.strerror or e}); export the run again") from e
  digest = hashlib.sha256(serialized).hexdigest()
  if digest != manifest.get("sha256"):
    raise UserError(f"{path} does not match its manifest (SHA-256 {digest[:12]}..., the manifest says "
                    f"{str(manifest.get('sha256'))[:12]}...): the file was changed or damaged; export the run again")
  try:
    exported = jax.export.deserialize(bytearray(serialized))
  except Exception as e:  # flatbuffers and MLIR raise their own types for a damaged module
    raise UserError(f"{path} cannot be deserialized ({type(e).__name__}: {e}); export the run again") from e
  platform = jax.export.default_export_platform()
  if platform not in exported.platforms:
    raise UserError(f"{folder} was exported for {', '.join(exported.platforms)}, not this machine's {platform}; "
                    f"export it again with --platforms={','.join((*exported.platforms, platform))}")
  try:
    prepared = manifest["input"]
    return ExportedNetwork(exported, Readout.from_dict(manifest["readout"]), int(manifest["checkpoint_step"]),
                           int(prepared["image_size"]), str(prepared["aspect"]), tuple(prepared["views"]), manifest)
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"{folder / MANIFEST} is damaged ({type(e).__name__}: {e}); export the run again "
                    "(python run.py --mode=export --workdir=RUN)") from e
