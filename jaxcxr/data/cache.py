"""The preprocessed cache: each split decoded and resized once into a memory-mapped uint8 array.

Layout: `<cache_dir>/<split>-<key>/{images.npy, manifest.json}` where `key`
hashes the preprocessing settings and a fingerprint of the sources (names,
labels, sizes, modification times). A changed source or setting gives a new
key, so a stale cache is never read; a build is written to a temporary folder
and renamed only when complete, so a killed build never looks valid.
"""

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import tempfile

import numpy as np
import pandas as pd

from jaxcxr.data import images
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_text
from jaxcxr.progress import Progress

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
BAD_IMAGE_POLICIES = ("error", "skip")
# Below this many images a process pool costs more to start than it saves.
MIN_IMAGES_FOR_POOL = 256
CHUNK = 32


@dataclasses.dataclass
class CachedSplit:
  """One split, ready to train on: images stay on disk and are paged in as read."""
  name: str
  images: np.ndarray          # (N, S, S) uint8, memory-mapped
  labels: np.ndarray          # (N,) int32, 1 = positive finding
  image_ids: list[str]
  patient_ids: list[str]
  skipped: int = 0

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def num_positive(self) -> int:
    return int(self.labels.sum())


def source_fingerprint(examples: pd.DataFrame) -> str:
  """Hashes what the cache was built from; a renamed, relabelled, edited or added file changes it."""
  h = hashlib.sha256()
  for image_id, label, path in zip(examples["image_id"], examples["label"], examples["path"]):
    try:
      st = os.stat(path) if isinstance(path, str) else None
    except OSError:
      st = None
    stamp = f"{st.st_size}:{st.st_mtime_ns}" if st else "missing"
    h.update(f"{image_id}|{label}|{path}|{stamp}\n".encode())
  return h.hexdigest()


def _decode_chunk(args):
  """Worker: decodes one chunk of paths; returns the stacked films and the per-file errors."""
  paths, size, aspect = args
  out = np.zeros((len(paths), size, size), np.uint8)
  errors = []
  for i, path in enumerate(paths):
    try:
      if not isinstance(path, str):
        raise images.BadImageError("listed in the metadata but not found on disk")
      out[i] = images.load_film(path, size, aspect)
    except images.BadImageError as e:
      errors.append((i, str(e)))
  return out, errors


def _decode_all(paths: list, size: int, aspect: str, target: np.ndarray, desc: str,
                workers: int) -> list[tuple[int, str]]:
  """Fills `target` with the decoded films, in parallel over `workers` processes; returns errors."""
  chunks = [(paths[i:i + CHUNK], size, aspect) for i in range(0, len(paths), CHUNK)]
  errors = []
  with Progress(len(paths), desc, unit="img") as bar:
    if workers > 1 and len(paths) >= MIN_IMAGES_FOR_POOL:
      # spawn, not fork: the parent may already run JAX's threads, which fork would copy unsafely.
      pool = multiprocessing.get_context("spawn").Pool(workers)
      results = pool.imap(_decode_chunk, chunks)
    else:
      pool, results = None, map(_decode_chunk, chunks)
    try:
      for c, (films, errs) in enumerate(results):
        start = c * CHUNK
        target[start:start + len(films)] = films
        errors.extend((start + i, msg) for i, msg in errs)
        bar.update(len(films))
    finally:
      if pool is not None:
        pool.terminate()
  return errors


def _report_bad(errors: list[tuple[int, str]], split: str, cache_dir: pathlib.Path, policy: str) -> None:
  listing = cache_dir / f"bad-images-{split}.txt"
  atomic_write_text(listing, "".join(msg + "\n" for _, msg in errors))
  for _, msg in errors:
    log.warning("bad image: %s", msg)
  if policy == "error":
    raise UserError(f"{len(errors)} unreadable image(s) in split {split!r} (first: {errors[0][1]}; all "
                    f"listed in {listing}); fix or remove them, or pass --config.data.on_bad_image=skip")
  log.warning("skipping %d unreadable image(s) in split %r (listed in %s)", len(errors), split, listing)


def build_or_load(examples: pd.DataFrame, split: str, cache_dir: pathlib.Path, size: int,
                  aspect: str, on_bad_image: str, workers: int | None = None) -> CachedSplit:
  """Returns the cached split, building it first if no cache matches these sources and settings."""
  if on_bad_image not in BAD_IMAGE_POLICIES:
    raise UserError(f"data.on_bad_image={on_bad_image!r}; use one of {', '.join(BAD_IMAGE_POLICIES)}")
  if aspect not in images.ASPECT_MODES:
    raise UserError(f"data.aspect={aspect!r}; use one of {', '.join(images.ASPECT_MODES)}")
  settings = {"format": FORMAT_VERSION, "size": size, "aspect": aspect, "on_bad_image": on_bad_image,
              "sources": source_fingerprint(examples)}
  key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
  final = cache_dir / f"{split}-{key}"
  if not (final / "manifest.json").is_file():
    _build(examples, split, cache_dir, final, settings, workers or os.cpu_count() or 1)
  else:
    log.info("Reusing preprocessed cache %s", final)
  return _open(final, split)


def _build(examples, split, cache_dir, final, settings, workers) -> None:
  cache_dir.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{split}-building-"))
  try:
    size = settings["size"]
    films = np.lib.format.open_memmap(tmp / "all.npy", mode="w+", dtype=np.uint8,
                                      shape=(len(examples), size, size))
    errors = _decode_all(list(examples["path"]), size, settings["aspect"], films,
                         f"preprocessing {split}", workers)
    if errors:
      _report_bad(errors, split, cache_dir, settings["on_bad_image"])
    bad = {i for i, _ in errors}
    keep = np.array([i for i in range(len(examples)) if i not in bad], dtype=np.int64)
    if bad:
      kept = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(keep), size, size))
      for s in range(0, len(keep), 1024):
        kept[s:s + 1024] = films[keep[s:s + 1024]]
      kept.flush()
      del kept
      (tmp / "all.npy").unlink()
    else:
      films.flush()
      (tmp / "all.npy").rename(tmp / "images.npy")
    del films
    rows = examples.iloc[keep]
    manifest = {**settings, "split": split, "count": len(rows), "skipped": len(bad),
                "image_ids": rows["image_id"].tolist(), "labels": rows["label"].astype(int).tolist(),
                "patient_ids": rows["patient_id"].astype(str).tolist()}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
  except OSError as e:
    raise UserError(f"could not write the preprocessed cache in {cache_dir} ({e.strerror or e}); free "
                    "disk space or set --config.data.cache_dir to a writable folder") from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _open(folder: pathlib.Path, split: str) -> CachedSplit:
  manifest = json.loads((folder / "manifest.json").read_text())
  films = np.load(folder / "images.npy", mmap_mode="r")
  if len(films) != manifest["count"]:
    raise UserError(f"cache {folder} is inconsistent ({len(films)} images, manifest says "
                    f"{manifest['count']}); delete it and rerun")
  return CachedSplit(split, films, np.asarray(manifest["labels"], np.int32), manifest["image_ids"],
                     manifest["patient_ids"], manifest["skipped"])
