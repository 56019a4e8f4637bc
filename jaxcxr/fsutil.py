"""Atomic file writes: a crash or a full disk never leaves a half-written file under its final name."""

import json
import os
import pathlib
import tempfile
from typing import Any

from jaxcxr.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, fsyncs it, then renames it over `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise UserError(f"could not write {path}: {e.strerror or e}; free some disk space or choose "
                    "another --workdir") from e


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def ensure_writable_dir(path: str | os.PathLike, what: str) -> pathlib.Path:
  """Creates `path` if needed and proves it is writable, so a run fails at start, not after an epoch."""
  path = pathlib.Path(path)
  try:
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
      pass
  except OSError as e:
    raise UserError(f"{what} {path} is not writable ({e.strerror or e}); pass a writable directory") from e
  return path
