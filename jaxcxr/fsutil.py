"""Atomic file writes (a crash or a full disk never leaves a half-written file under its final name), and one
process per run folder."""

import contextlib
import fcntl
import itertools
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from jaxcxr.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, fsyncs it, then renames it over `path`."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  _remove_abandoned(path.parent, f".{path.name}.*.tmp", f".{path.name}.")
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


LOCK_FILE = ".lock"


@contextlib.contextmanager
def exclusive(folder: pathlib.Path, what: str) -> Iterator[None]:
  """Holds `folder` for this process: a second process that asks for it stops at once with one line naming the
  holder. The lock is the kernel's (`flock`), so it dies with its process, also on `kill -9`: nothing to clean."""
  path = folder / LOCK_FILE
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise UserError(f"another run is using {what} {folder} (process {holder}); wait for it to finish, or pass "
                    f"another {what}") from None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def _remove_abandoned(parent: pathlib.Path, pattern: str, marker: str) -> None:
  """Deletes the temporaries in `parent` matching `pattern`, whose names carry their process id right after
  `marker`, of processes that no longer exist (killed between creating and renaming one); those of live
  processes, perhaps another run's in a shared folder, are left alone."""
  for stale in parent.glob(pattern):
    pid = "".join(itertools.takewhile(str.isdigit, stale.name.split(marker, 1)[1]))
    if pid and int(pid) != os.getpid() and not _alive(int(pid)):
      shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def building_folder(parent: pathlib.Path, label: str) -> pathlib.Path:
  """A new private folder in `parent` to build something in before renaming it into place, named
  `.<label>-building-<pid>-*`; abandoned building folders are deleted first (`_remove_abandoned`)."""
  _remove_abandoned(parent, ".*-building-*", "-building-")
  return pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=f".{label}-building-{os.getpid()}-"))
