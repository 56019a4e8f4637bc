"""Input-side benchmark: preprocessing, loading, and data wait / memory in real training runs.

  python -m jaxcxr.perf.data_bench                   # prints JSON; about 1 minute on 2 cores
  python -m jaxcxr.perf.data_bench --images=600 --out=bench-data.json
  python -m jaxcxr.perf.data_bench --config.data.image_size=128   # any config key, as in run.py

Everything goes through the project's own code paths and the config
(`configs/bench_data.py` by default: 224 px, batch 32, one epoch):
the cache builder for preprocessing (1024x1024 8-bit PNGs -> the config's
image size, all cores), the grain training stream for loading (the config's
batch size and augmentation settings), and `jaxcxr.main` itself for the
training runs, on two dataset sizes, whose summaries give the fraction of step
time spent waiting for data and the process's peak RSS.
"""

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np
from absl import flags
from PIL import Image

from jaxcxr import cli, devices, input_pipeline
from jaxcxr.data import cache, images, nih, splits, synthetic
from jaxcxr.errors import UserError
from jaxcxr.fsutil import ensure_writable_dir
from jaxcxr.perf import runs

_CONFIG = cli.config_flag("bench_data", "Config whose image size, batch size, augmentation and training run are "
                          "measured.")
_IMAGES = flags.DEFINE_integer("images", 1200, "1024x1024 PNGs to preprocess (enough to amortise worker start-up).",
                               lower_bound=1)
_BATCHES = flags.DEFINE_integer("batches", 200, "Batches timed for the loader.", lower_bound=1)
_TRAIN_SIZES = flags.DEFINE_list("train_sizes", ["160", "480"], "Dataset sizes of the two training runs.")
_OUT = cli.path_flag("out", None, "Also write the JSON here.")
_WORKDIR = cli.path_flag("workdir", None, "Scratch folder (default: a temporary one, removed).")

DISTINCT = 12  # distinct films rendered; the rest are byte copies (decoding cost is the same)


def write_nih_folder(root: pathlib.Path, count: int, films: list[pathlib.Path]) -> pathlib.Path:
  """An NIH-format folder of `count` 1024 px PNGs, 3 films per patient, half of them Pneumonia."""
  (root / "images").mkdir(parents=True, exist_ok=True)
  rows = [synthetic.HEADER]
  for i in range(count):
    name = f"{i // 3 + 1:08d}_{i % 3:03d}.png"
    positive = (i // 3) % 2 == 0
    shutil.copyfile(films[2 * (i % (DISTINCT // 2)) + positive], root / "images" / name)
    rows.append(f"{name},{'Pneumonia' if positive else 'No Finding'},{i % 3},{i // 3 + 1},50,M,PA,"
                "1024,1024,0.143,0.143,")
  (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
  return root


def render_films(folder: pathlib.Path) -> list[pathlib.Path]:
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True)
  paths = []
  for i in range(DISTINCT):
    path = folder / f"film{i}.png"
    Image.fromarray(np.round(synthetic.render_film(rng, 1024, i % 2 == 1) * 255).astype(np.uint8)).save(path)
    paths.append(path)
  return paths


def bench_decode(paths: list[pathlib.Path], size: int) -> dict:
  """One core, in this process: the cost of decoding, and of decoding plus resizing, one film."""
  decode, full = [], []
  for path in paths * 2:
    t = time.perf_counter()
    with Image.open(path) as img:
      img.load()
    decode.append(time.perf_counter() - t)
    t = time.perf_counter()
    images.load_film(path, size)
    full.append(time.perf_counter() - t)
  return {"decode_ms_median": 1000 * statistics.median(decode),
          "decode_resize_ms_median": 1000 * statistics.median(full)}


def bench_preprocess(root: pathlib.Path, size: int, cache_dir: pathlib.Path) -> tuple[dict, cache.CachedSplit]:
  table = splits.select_examples(nih.read_release(root, "Pneumonia", "no_finding", 0.1, 0.2, 0))
  t = time.perf_counter()
  split = cache.build_or_load(table, "all", cache_dir, size, "pad", "error")
  seconds = time.perf_counter() - t
  return {"images": len(table), "seconds": seconds, "images_per_s": len(table) / seconds,
          "workers": os.cpu_count(), "nih_112120_minutes": 112_120 / (len(table) / seconds) / 60}, split


def bench_loader(split: cache.CachedSplit, config, batches: int, augment: str, worker_processes: int = 0) -> dict:
  """Images per second from the real training stream in the config's batches; `augment` is off, or the
  geometric warp's interpolation (nearest or bilinear)."""
  cfg, batch_size = config.data.copy_and_resolve_references(), config.train.batch_size
  cfg.augment.enabled = augment != "off"
  cfg.augment.interpolation = augment if augment != "off" else cfg.augment.interpolation
  stream = input_pipeline.train_dataset(input_pipeline.SplitSource(split), batch_size, 10_000, 0, cfg.augment)
  iterator = input_pipeline.train_iterator(stream, cfg.num_threads, cfg.prefetch, worker_processes)
  for _ in range(5):
    next(iterator)
  t = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - t
  if worker_processes:
    iterator.close()
  return {"augment": augment, "photometric": "on the device, in the train step (jaxcxr/augment.py)",
          "batch_size": batch_size, "threads": cfg.num_threads,
          "worker_processes": worker_processes, "images_per_s": batch_size * batches / seconds}


def _train_sizes(values: list[str]) -> list[int]:
  """--train_sizes as film counts, refused in one line unless each is a whole number of at least 1."""
  if not values or not all(v.strip().isdigit() and int(v) >= 1 for v in values):
    raise UserError(f"--train_sizes={','.join(values)}: each must be a whole number of films, e.g. "
                    "--train_sizes=160,480")
  return [int(v) for v in values]


def bench_training(root: pathlib.Path, workdir: pathlib.Path) -> dict:
  """A real CPU training run of the config on this folder; its summary has data wait and peak RSS."""
  command = runs.training_command(devices.CPU, workdir, runs.config_args(), f"--data_dir={root}")
  done = runs.run_child(command, check=False, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  if done.returncode:
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise UserError(f"the training run on {root} failed (exit {done.returncode}: {last}); if it names too few "
                    "films, raise --train_sizes")
  summary = json.loads((workdir / "summary.json").read_text())
  epoch = summary["epochs"][-1]
  return {"images": sum(summary["split_sizes"].values()), "train_steps": epoch["steps_timed"],
          "ms_per_step": epoch["ms_per_step"], "data_wait_fraction": epoch["data_wait_fraction"],
          "peak_rss_mb": summary["timing"]["peak_rss_mb"]}


def main(argv):
  del argv
  runs.check_out_file(_OUT.value)  # before the minutes of work, not after them
  config = cli.load_config(_CONFIG)
  size = config.data.image_size
  train_sizes = _train_sizes(_TRAIN_SIZES.value)
  if _WORKDIR.value:
    scratch = ensure_writable_dir(_WORKDIR.value, "--workdir")
    if any(p for p in scratch.iterdir() if not p.name.startswith(".")):
      # A cache left by an earlier run would be reused, timing no preprocessing at all.
      raise UserError(f"--workdir {scratch} is not empty; pass a new or empty folder (an earlier run's cache "
                      "would be reused and time nothing)")
  else:
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="jaxcxr-bench-"))
  try:
    films = render_films(scratch / "films")
    result = {"machine": {"cpus": os.cpu_count()}, "image_size": size, "batch_size": config.train.batch_size,
              "decode_one_core": bench_decode(films, size)}
    root = write_nih_folder(scratch / "nih", _IMAGES.value, films)
    result["preprocess"], split = bench_preprocess(root, size, scratch / "cache")
    result["loader"] = [bench_loader(split, config, _BATCHES.value, augment)
                        for augment in ("off", "nearest", "bilinear")]
    result["loader"].append(bench_loader(split, config, _BATCHES.value, "nearest", worker_processes=os.cpu_count()))
    result["training"] = [bench_training(write_nih_folder(scratch / f"nih{n}", n, films), scratch / f"run{n}")
                          for n in train_sizes]
  finally:
    if not _WORKDIR.value:
      shutil.rmtree(scratch, ignore_errors=True)
  runs.emit_json(result, _OUT.value)


if __name__ == "__main__":
  cli.run(main)
