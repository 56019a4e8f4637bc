"""The preprocessed cache: each split decoded and resized once into a uint8 array on disk.

Layout: `<cache_dir>/<split>-<key>/{images.u8, manifest.json}` where `key`
hashes the preprocessing settings and a fingerprint of the sources (names,
labels, sizes, modification times). A changed source or setting gives a new
key, so a stale cache is never read; a build is written to a temporary folder
and renamed only when complete, so a killed build never looks valid.

Films are written sequentially and read back with `pread` rather than through
a memory map: mapped pages count toward the process's resident memory, so a
mapped 5 GB NIH cache would show up as 5 GB of RSS; plain I/O keeps RSS flat
while the OS page cache still serves repeated epochs from RAM when there is room.
`images.u8` is raw (N, S, S) uint8; its shape is in the manifest.
"""

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import multiprocessing.pool
import os
import pathlib
import shutil
import signal
import threading

import numpy as np
import pandas as pd

from jaxcxr.data import images, splits
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_text, building_folder, publish
from jaxcxr.progress import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # 3: manifests name their targets
# Below this many images a process pool costs more to start than it saves.
MIN_IMAGES_FOR_POOL = 256
CHUNK = 32


class FilmFile:
  """Read-only (N, S, S) uint8 films in a raw file, indexed like an array, read with `os.pread`.

  The same file opens as an array with `np.memmap(path, np.uint8, "r", shape=manifest["shape"])`.
  """

  def __init__(self, path: pathlib.Path, shape: tuple[int, ...]):
    self.shape, self.dtype = tuple(shape), np.dtype(np.uint8)
    self._frame = int(np.prod(self.shape[1:]))
    if path.stat().st_size != self.shape[0] * self._frame:
      raise UserError(f"cache file {path} has {path.stat().st_size} bytes, not the {self.shape} its "
                      "manifest says; delete its folder and rerun")
    self._path = path
    self._fd = os.open(path, os.O_RDONLY)

  def __getstate__(self) -> dict:
    # A file descriptor means nothing in another process: pickle the path, reopen on arrival.
    return {"path": self._path, "shape": self.shape}

  def __setstate__(self, state: dict) -> None:
    self.__init__(state["path"], state["shape"])

  def __len__(self) -> int:
    return self.shape[0]

  def _read(self, start: int, count: int) -> np.ndarray:
    data = os.pread(self._fd, count * self._frame, start * self._frame)
    return np.frombuffer(data, np.uint8).reshape((count, *self.shape[1:]))

  def __getitem__(self, key):
    if isinstance(key, tuple):
      return self[key[0]][(slice(None), *key[1:]) if isinstance(key[0], slice) else key[1:]]
    if isinstance(key, slice):
      start, stop, step = key.indices(len(self))
      block = self._read(start, max(stop - start, 0))
      return block[::step]
    index = int(key)
    if not -len(self) <= index < len(self):
      raise IndexError(f"film {index} out of range for {len(self)} films")
    return self._read(index % len(self), 1)[0]

  def __array__(self, dtype=None, copy=None):
    return self[:].astype(dtype) if dtype is not None else self[:]

  def __del__(self, _close=os.close):  # bound early: `os` may be gone at interpreter exit
    fd = getattr(self, "_fd", None)
    if fd is not None:
      _close(fd)


@dataclasses.dataclass
class CachedSplit:
  """One split, ready to train on: films stay on disk and are read as needed."""
  name: str
  images: FilmFile | np.ndarray  # (N, S, S) uint8
  labels: np.ndarray             # (N,) int32, 1 = positive finding; (N, K) for the K `targets` of a multi-label task
  image_ids: list[str]
  patient_ids: list[str]
  skipped: int = 0
  targets: tuple[str, ...] = ()  # the findings of a multi-label task, one per label column; () for one target

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def outputs(self) -> int:
    """Logits a model gives each film: one per target."""
    return max(len(self.targets), 1)

  @property
  def known_per_film(self) -> float:
    """Labelled targets per film, on average: `outputs` less the masked ones (`findings.MISSING`)."""
    return float((self.labels >= 0).sum()) / max(len(self), 1)

  @property
  def num_positive(self) -> int:
    """Films positive for the target (for any of the targets, when there are several)."""
    return int(self.labels.reshape(len(self), -1).max(axis=1).sum())

  def positives_per_target(self) -> dict[str, int]:
    """Positive films of each target of a multi-label task."""
    return {t: int(n) for t, n in zip(self.targets, (self.labels.reshape(len(self), -1) == 1).sum(axis=0))}


def source_fingerprint(examples: pd.DataFrame, targets: tuple[str, ...] = ()) -> str:
  """Hashes what the cache was built from; a renamed, relabelled, edited or added file changes it."""
  h = hashlib.sha256()
  labels = examples[splits.label_columns(targets)].astype(int).to_numpy().tolist()
  for image_id, label, path in zip(examples["image_id"], labels, examples["path"]):
    try:
      st = os.stat(path) if isinstance(path, str) else None
    except OSError:
      st = None
    stamp = f"{st.st_size}:{st.st_mtime_ns}" if st else "missing"
    h.update(f"{image_id}|{label}|{path}|{stamp}\n".encode())
  return h.hexdigest()


def _decode_chunk(args):
  """Worker: decodes one chunk of paths; returns the stacked films and the per-file errors."""
  names, paths, size, aspect = args
  out = np.zeros((len(paths), size, size), np.uint8)
  errors = []
  for i, (name, path) in enumerate(zip(names, paths)):
    try:
      if not isinstance(path, str):
        raise images.BadImageError(f"{name}: listed in the metadata but not found on disk")
      out[i] = images.load_film(path, size, aspect)
    except images.BadImageError as e:
      errors.append((i, str(e)))
  return out, errors


def _decoding_pool(workers: int) -> multiprocessing.pool.Pool:
  """`workers` processes that ignore SIGINT from their first instruction on: Ctrl-C reaches the whole process
  group, and the parent alone reports it, once, and terminates the pool, rather than each process printing its
  own traceback. They are started while the parent ignores it too, a disposition a spawned process inherits."""
  if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
    return multiprocessing.get_context("spawn").Pool(workers)
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    return multiprocessing.get_context("spawn").Pool(workers)
  finally:
    signal.signal(signal.SIGINT, previous)


def _decode_all(names: list, paths: list, size: int, aspect: str, out, desc: str,
                workers: int) -> list[tuple[int, str]]:
  """Decodes every path in order, in parallel over `workers` processes, appending the good films
  to the binary file `out`; returns (index, message) for each film that could not be decoded."""
  chunks = [(names[i:i + CHUNK], paths[i:i + CHUNK], size, aspect) for i in range(0, len(paths), CHUNK)]
  errors = []
  with Progress(len(paths), desc, unit="img") as bar:
    if workers > 1 and len(paths) >= MIN_IMAGES_FOR_POOL:
      # spawn, not fork: the parent may already run JAX's threads, which fork would copy unsafely.
      pool = _decoding_pool(workers)
      results = pool.imap(_decode_chunk, chunks)
    else:
      pool, results = None, map(_decode_chunk, chunks)
    try:
      for c, (films, errs) in enumerate(results):
        bad = {i for i, _ in errs}
        out.write(films[[i for i in range(len(films)) if i not in bad]].tobytes())
        errors.extend((c * CHUNK + i, msg) for i, msg in errs)
        bar.update(len(films))
    finally:
      if pool is not None:
        pool.terminate()
        pool.join()
  return errors


def _resize_all(films: np.ndarray, size: int, aspect: str, out, desc: str) -> list[tuple[int, str]]:
  """Fits already-decoded films to `size`, appending them to the binary file `out`; none can be bad."""
  with Progress(len(films), desc, unit="img") as bar:
    for film in films:
      out.write(images.fit(film, size, aspect).tobytes())
      bar.update()
  return []


class BadImages(UserError):
  """A split holds films that cannot be used, under `data.on_bad_image=error`; all are listed in `listing`."""

  def __init__(self, split: str, count: int, first: str, listing: pathlib.Path):
    super().__init__(f"{count} unreadable image(s) in split {split!r} (first: {first}; all listed in {listing}); "
                     "fix or remove them, or pass --config.data.on_bad_image=skip")
    self.split, self.count, self.first, self.listing = split, count, first, listing


def _report_bad(errors: list[tuple[int, str]], split: str, cache_dir: pathlib.Path, policy: str) -> None:
  listing = cache_dir / f"bad-images-{split}.txt"
  atomic_write_text(listing, "".join(msg + "\n" for _, msg in errors))
  for _, msg in errors:
    log.warning("bad image: %s", msg)
  if policy == images.STOP_AT_BAD_IMAGE:
    raise BadImages(split, len(errors), errors[0][1], listing)
  log.warning("skipping %d unreadable image(s) in split %r (listed in %s)", len(errors), split, listing)


def _cache_folder(cache_dir: pathlib.Path, split: str, settings: dict) -> pathlib.Path:
  key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
  return cache_dir / f"{split}-{key}"


class _Building:
  """A temporary folder beside the cache that becomes the cache folder only by `commit`. Its name carries the
  building process's id, so a later run can tell an abandoned build from one in progress."""

  def __init__(self, cache_dir: pathlib.Path, split: str):
    self.cache_dir = cache_dir
    try:
      cache_dir.mkdir(parents=True, exist_ok=True)
      self.tmp = building_folder(cache_dir, split)
    except OSError as e:
      raise self._error(e) from e

  def _error(self, e: OSError) -> UserError:
    return UserError(f"could not write the preprocessed cache in {self.cache_dir} ({e.strerror or e}); "
                     "free disk space or set --config.data.cache_dir to a writable folder")

  def __enter__(self):
    return self

  def __exit__(self, kind, error, tb):
    shutil.rmtree(self.tmp, ignore_errors=True)
    if isinstance(error, OSError):
      raise self._error(error) from error

  def commit(self, final: pathlib.Path, manifest: dict) -> None:
    """Publishes the build as `final`, unless another process sharing the cache published the same key first:
    its films are the same, and a folder another run may be reading is never replaced."""
    (self.tmp / "manifest.json").write_text(json.dumps(manifest))
    publish(self.tmp, final, _intact)


def _manifest(settings: dict, split: str, rows: pd.DataFrame, skipped: int, size: int,
              targets: tuple[str, ...]) -> dict:
  labels = rows[splits.label_columns(targets)].astype(int).to_numpy()
  return {**settings, "split": split, "count": len(rows), "skipped": skipped, "shape": [len(rows), size, size],
          "image_ids": rows["image_id"].astype(str).tolist(),
          "labels": (labels if targets else labels[:, 0]).tolist(), "targets": list(targets),
          "patient_ids": rows["patient_id"].astype(str).tolist()}


def _check_room(cache_dir: pathlib.Path, split: str, films: int, size: int) -> None:
  """UserError, before a film is decoded, where the split's cache cannot fit on the disk that holds it."""
  existing = next(p for p in (cache_dir, *cache_dir.parents) if p.exists())  # it may not be made yet
  need, free = films * size * size, shutil.disk_usage(existing).free
  if need > free:
    raise UserError(f"the {split} split's cache needs {need / 2**20:.1f} MiB ({films} films of {size}x{size} px) but "
                    f"{cache_dir} has {free / 2**20:.1f} MiB free; free disk space, point data.cache_dir at a larger "
                    "disk, or lower data.image_size")


def build_or_load(examples: pd.DataFrame, split: str, cache_dir: pathlib.Path, size: int, aspect: str,
                  on_bad_image: str, workers: int | None = None, films: np.ndarray | None = None,
                  targets: tuple[str, ...] = ()) -> CachedSplit:
  """Returns the cached split, building it first if no cache matches: from `films` where the reader
  holds them decoded (one per row of `examples`), else by decoding each row's image file. `targets` names
  the label columns of a multi-label task (`splits.Examples.targets`)."""
  settings = {"format": FORMAT_VERSION, "size": size, "aspect": aspect, "on_bad_image": on_bad_image,
              "sources": source_fingerprint(examples, targets)}
  final = _cache_folder(cache_dir, split, settings)
  if (final / "manifest.json").is_file():
    if _intact(final):
      log.info("Reusing preprocessed cache %s", final)
      return open_split(final)
    log.warning("The cached split %s is damaged (its manifest.json does not read); building it again", final)
  _check_room(cache_dir, split, len(examples), size)
  with _Building(cache_dir, split) as build:
    with open(build.tmp / "images.u8", "wb") as out:
      if films is None:
        errors = _decode_all(list(examples["image_id"]), list(examples["path"]), size, aspect, out,
                             f"preprocessing {split}",
                             workers or os.cpu_count() or 1)
      else:
        errors = _resize_all(films, size, aspect, out, f"resizing {split}")
    if errors:
      _report_bad(errors, split, cache_dir, on_bad_image)
    bad = {i for i, _ in errors}
    kept = examples.iloc[[i for i in range(len(examples)) if i not in bad]]
    build.commit(final, _manifest(settings, split, kept, len(bad), size, targets))
  return open_split(final)


def _intact(folder: pathlib.Path) -> bool:
  """Whether `folder` holds a cached split that opens: a manifest cut short by a crash or a full disk does not,
  and is built again (then replaced, `fsutil.publish`)."""
  try:
    open_split(folder)
  except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError
    return False
  return True


def open_split(folder: pathlib.Path) -> CachedSplit:
  manifest = json.loads((folder / "manifest.json").read_text())
  films = FilmFile(folder / "images.u8", manifest["shape"])
  return CachedSplit(manifest["split"], films, np.asarray(manifest["labels"], np.int32),
                     manifest["image_ids"], manifest["patient_ids"], manifest["skipped"], tuple(manifest["targets"]))
