"""Atomic file writes (a crash or a full disk never leaves a half-written file under its final name), and one
process per run folder."""

import contextlib
import fcntl
import itertools
import json
import os
import pathlib
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from jaxcxr.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to a temporary file beside `path`, fsyncs it, then renames it over `path`."""
  path, tmp = pathlib.Path(path), None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path.parent, f".{path.name}.*.tmp", f".{path.name}.")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_OWNER}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    if tmp is not None:
      pathlib.Path(tmp).unlink(missing_ok=True)
    raise UserError(f"could not write {path}: {e.strerror or e}; free some disk space or choose "
                    "another --workdir") from e


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


_CREATED: set[pathlib.Path] = set()  # folders `ensure_writable_dir` made in this process


def ensure_writable_dir(path: str | os.PathLike, what: str) -> pathlib.Path:
  """Creates `path` if needed and proves it is writable, so a run fails at start, not after an epoch."""
  path = pathlib.Path(path)
  if path.is_symlink() and not path.exists():
    raise UserError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist; create it or "
                    "pass another directory")
  if path.exists() and not path.is_dir():
    raise UserError(f"{what} {path} is a file, not a directory; pass a directory")
  try:
    if not path.exists():
      path.mkdir(parents=True)
      _CREATED.add(path.resolve())
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
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UserError(f"cannot create the lock file {path} ({e.strerror or e}); pass a writable {what}") from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise UserError(f"another run is using {what} {folder} (process {holder}); wait for it to finish, or pass "
                    f"another {what}") from None
  except OSError as e:  # a filesystem without locks (some network mounts)
    os.close(fd)
    raise UserError(f"cannot lock {path} ({e.strerror or e}): the filesystem does not support locks; pass a "
                    f"local {what}") from e
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    yield
  except BaseException:
    if folder.resolve() in _CREATED:  # refused before it wrote anything: leave no folder holding only a lock
      _remove_if_only_the_lock(folder)
    raise
  finally:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _remove_if_only_the_lock(folder: pathlib.Path) -> None:
  """Removes `folder` if it holds nothing but the lock file and empty folders."""
  for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
    with contextlib.suppress(OSError):
      sub.rmdir()  # only an empty one goes
  if [p.name for p in folder.iterdir()] == [LOCK_FILE]:
    (folder / LOCK_FILE).unlink()
    with contextlib.suppress(OSError):
      folder.rmdir()


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


# Temporaries carry `<pid>@<host>` of their writer: on a folder shared between machines (NFS), only the
# writer's own host can tell whether that process still lives.
_OWNER = f"{os.getpid()}@{socket.gethostname()}"


def _remove_abandoned(parent: pathlib.Path, pattern: str, marker: str) -> None:
  """Deletes the temporaries in `parent` matching `pattern`, whose names carry `<pid>@<host>.` right after
  `marker`, of this host's processes that no longer exist (killed between creating and renaming one); those
  of live processes or of other hosts, perhaps other runs' in a shared folder, are left alone."""
  host = socket.gethostname()
  for stale in parent.glob(pattern):
    owner = stale.name.split(marker, 1)[1]
    pid = "".join(itertools.takewhile(str.isdigit, owner))
    if pid and owner[len(pid):].startswith(f"@{host}.") and int(pid) != os.getpid() and not _alive(int(pid)):
      shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


def building_folder(parent: pathlib.Path, label: str) -> pathlib.Path:
  """A new private folder in `parent` to build something in before renaming it into place, named
  `.<label>-building-<pid>@<host>.*`; abandoned building folders are deleted first (`_remove_abandoned`)."""
  _remove_abandoned(parent, ".*-building-*", "-building-")
  return pathlib.Path(tempfile.mkdtemp(dir=parent, prefix=f".{label}-building-{_OWNER}."))


def publish(built: pathlib.Path, final: pathlib.Path, complete: Callable[[pathlib.Path], bool]) -> None:
  """Renames the folder `built` to `final`, unless `final` is already `complete`: another process sharing the
  folder published the same thing first, and a folder another run may be reading is never replaced. An
  incomplete `final` (left by an older version, say) is moved aside and removed first."""
  for _ in range(3):
    if complete(final):
      return
    try:
      built.rename(final)
      return
    except OSError:
      if complete(final):  # lost the race to an equal build
        return
      if not final.exists():
        raise
      aside = pathlib.Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-building-{_OWNER}."))
      final.rename(aside / "old")
      shutil.rmtree(aside, ignore_errors=True)
  built.rename(final)
