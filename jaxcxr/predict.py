"""Applying a trained run to new films, from the command line or in three lines of Python:

  from jaxcxr import predict
  model = predict.load("runs/default-cpu")
  table = model(["film.png", "scan.dcm", "more_films/"])   # a pandas DataFrame, one row per film

  python run.py --mode=predict --workdir=runs/default-cpu --inputs=films/ scan.dcm --explain

Films are decoded and resized by training's own code (`data.images`: PNG, JPEG, DICOM) and scaled by the
network's own input function, in jitted batches of one fixed size (one compilation). Each target's label is
taken at the operating point the run chose on validation (`summary.json`); a run that has not finished has
none yet and is read at 0.5, with a note. Nothing of the run is changed, so a run may be applied while it
trains: the CSV and the explanations are written under `RUN/predictions/`, and nothing else.
"""

import dataclasses
import functools
import glob
import logging
import pathlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import pandas as pd

from jaxcxr import devices, explain, metrics, optim, reporting
from jaxcxr.checkpoints import Checkpointer
from jaxcxr.data import datasets, folders, images
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_bytes, atomic_write_text
from jaxcxr.models import DTYPES, create_model, prepare_input
from jaxcxr.progress import Progress
from jaxcxr.report import figures
from jaxcxr.train_step import create_state, eval_variables, placed_shapes

log = logging.getLogger(__name__)
ON_BAD_IMAGE = ("error", "skip")
UNFINISHED_THRESHOLD = 0.5
Films = Sequence[str | pathlib.Path] | Sequence[np.ndarray] | np.ndarray


def film_paths(inputs: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
  """Every film `inputs` names: files as given, folders searched (recursively) for films, globs expanded."""
  found = []
  for item in map(str, inputs):
    literal = pathlib.Path(item).expanduser()
    # A path that exists is itself, even where its name has glob characters (scan[1].dcm).
    matches = sorted(glob.glob(str(literal), recursive=True)) if glob.has_magic(item) and not literal.exists() \
        else [str(literal)]
    if not matches:
      raise UserError(f"--inputs {item} matches no file; check the pattern")
    for match in map(pathlib.Path, matches):
      if match.is_dir():
        films = sorted(p for p in match.rglob("*") if p.is_file() and folders.is_film(p))
        if not films:
          raise UserError(f"--inputs {match} holds no films ({', '.join(folders.IMAGE_SUFFIXES)} files); "
                          "point it at a folder of films or at the files themselves")
        found += films
      elif match.is_file():
        found.append(match)
      else:
        raise UserError(f"--inputs {match}: no such file or folder")
  return found


@dataclasses.dataclass(frozen=True)
class Model:
  """A trained run, ready to apply: its network, its parameters where `put` places batches, its operating
  points. `load` builds one from a run folder; training builds one from its final state for the report."""
  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  targets: tuple[str, ...]
  thresholds: tuple[float, ...]
  threshold_note: str
  step: int
  batch_size: int
  variables: Any
  apply_fn: Any
  dtype: Any
  put: Callable[[np.ndarray], jax.Array]  # a batch onto the device(s) the variables live on

  @property
  def image_size(self) -> int:
    return self.config.data.image_size

  def prepare(self, film: np.ndarray) -> np.ndarray:
    """A 2-D uint8 film of any size made the run's (size, size) input, as training's cache makes it."""
    film = np.asarray(film)
    if film.ndim != 2 or film.dtype != np.uint8:
      raise UserError(f"a film given as an array must be 2-D uint8 greyscale; got {film.dtype} {film.shape} "
                      "(pass paths to have PNG, JPEG or DICOM files decoded)")
    try:
      images.check_size("a film given as an array", film.shape[1], film.shape[0])
    except images.BadImageError as e:
      raise UserError(str(e)) from e
    return film if film.shape == (self.image_size,) * 2 else \
        images.fit(film, self.image_size, self.config.data.aspect)

  def _batches(self, films: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """`films` in batches of the fixed size, the last padded with zeros; each with its count of real films."""
    for start in range(0, len(films), self.batch_size):
      chunk = films[start:start + self.batch_size]
      padded = np.zeros((self.batch_size, self.image_size, self.image_size), np.uint8)
      padded[:len(chunk)] = chunk
      yield self.put(padded), len(chunk)

  def logits(self, films: np.ndarray) -> np.ndarray:
    """(N, targets) logits for (N, size, size) uint8 films already at the run's size."""
    out = [devices.host_array(_forward(self.apply_fn, self.dtype, self.variables, batch))[:n]
           for batch, n in self._batches(films)]
    return np.concatenate(out) if out else np.zeros((0, len(self.targets)), np.float32)

  def heatmaps(self, films: np.ndarray, targets: np.ndarray, method: str = explain.METHODS[0]) -> np.ndarray:
    """(N, size, size) class activation maps in [0, 1] (`explain`), film i explained for target index
    `targets[i]`."""
    out = []
    for start, (batch, n) in zip(range(0, len(films), self.batch_size), self._batches(films)):
      which = np.zeros(self.batch_size, np.int32)
      which[:n] = targets[start:start + n]
      out.append(devices.host_array(_explain(self.apply_fn, self.dtype, method, self.variables, batch,
                                             self.put(which)))[:n])
    return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size), np.float32)

  def labels(self, logits: np.ndarray) -> np.ndarray:
    """1 where a film is called positive: its probability above the threshold, compared as the test report does
    (the logit above the threshold's logit)."""
    columns = [metrics.called(logits[:, k], t) for k, t in enumerate(self.thresholds)]
    return np.stack(columns, axis=1).astype(np.int32) if columns else np.zeros(logits.shape, np.int32)

  def read(self, films: Films, on_bad_image: str = "error") -> tuple[np.ndarray, list[dict], list[str]]:
    """Decodes paths (or takes arrays) into (N, size, size) uint8 inputs, one record per film (its source and
    pixel spacing), and the messages of the files skipped (`on_bad_image=skip`; `error` stops at the first)."""
    if on_bad_image not in ON_BAD_IMAGE:
      raise UserError(f"on_bad_image={on_bad_image!r} must be one of {', '.join(ON_BAD_IMAGE)}")
    if isinstance(films, np.ndarray) and films.ndim == 2:
      films = [films]
    elif isinstance(films, np.ndarray) and films.ndim == 3 and films.shape[-1] in (3, 4):
      raise UserError(f"an array of shape {films.shape} looks like one colour image, not a stack of greyscale "
                      "films; pass 2-D greyscale films, one array each or stacked as (N, H, W)")
    arrays, records, skipped = [], [], []
    paths = None if len(films) and isinstance(films[0], np.ndarray) else film_paths(films)
    with Progress(len(films) if paths is None else len(paths), "reading films", unit="film") as bar:
      for i, film in enumerate(films if paths is None else paths):
        if paths is None:
          arrays.append(self.prepare(film))
          records.append({"path": f"array[{i}]", "pixel_spacing_mm": None})
        else:
          try:
            pixels, meta = images.load_film_with_metadata(film, self.image_size, self.config.data.aspect)
          except images.BadImageError as e:
            if on_bad_image == "error":
              raise UserError(f"{e}; fix or remove it, or pass --on_bad_image=skip to predict the others") from e
            skipped.append(str(e))
            continue
          arrays.append(pixels)
          records.append({"path": str(film), "pixel_spacing_mm": meta.get("pixel_spacing_mm")})
        bar.update()
    stacked = np.stack(arrays) if arrays else np.zeros((0, self.image_size, self.image_size), np.uint8)
    return stacked, records, skipped

  def table(self, records: list[dict], logits: np.ndarray) -> pd.DataFrame:
    """One row per film: its path, and per target the probability, the label and the threshold used."""
    labels = self.labels(logits)
    rows = []
    for record, p, y in zip(records, probability(logits), labels):
      row = {"path": record["path"]}
      for k, target in enumerate(self.targets):
        row |= {f"p_{target}": float(p[k]), f"label_{target}": int(y[k]), f"threshold_{target}": self.thresholds[k]}
      spacing = record["pixel_spacing_mm"]
      row |= {"checkpoint_step": self.step, "pixel_spacing_mm": "" if spacing is None else
              " x ".join(f"{s:g}" for s in spacing)}
      rows.append(row)
    return pd.DataFrame(rows, columns=["path", *(f"{c}_{t}" for t in self.targets
                                                  for c in ("p", "label", "threshold")),
                                       "checkpoint_step", "pixel_spacing_mm"])

  def __call__(self, films: Films, on_bad_image: str = "error") -> pd.DataFrame:
    """Predictions for `films`: paths (files, folders, globs) or 2-D uint8 arrays; see `table`."""
    pixels, records, skipped = self.read(films, on_bad_image)
    for message in skipped:
      log.warning("skipped %s", message)
    return self.table(records, self.logits(pixels))


def probability(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward(apply_fn, dtype, variables, films):
  return apply_fn(variables, prepare_input(films, dtype), train=False).reshape(films.shape[0], -1)


_explain = jax.jit(explain.class_activation_map, static_argnums=(0, 1, 2))


def operating_points(summary: dict | None, targets: tuple[str, ...], step: int) -> tuple[tuple[float, ...], str]:
  """Each target's threshold as the run chose it on validation, if `summary` (the run's) is of checkpoint
  `step`; else 0.5. Also what to say about them."""
  if summary is None or summary.get("step") != step:
    why = "the run has not finished" if summary is None else f"its summary is of step {summary.get('step')}"
    return (UNFINISHED_THRESHOLD,) * len(targets), (f"labels at {UNFINISHED_THRESHOLD}: {why}, so no operating "
                                                    f"point was chosen on validation for step {step}")
  test = summary["test"]
  chosen = [test["findings"][t]["threshold"] for t in targets] if "findings" in test else [test["threshold"]]
  rules = sorted({c["rule"] for c in chosen})
  return tuple(c["value"] for c in chosen), f"labels at the run's operating point (eval.threshold={', '.join(rules)})"


def load(workdir: str | pathlib.Path, platform: str = devices.CPU) -> Model:
  """The run in `workdir` from its newest intact checkpoint, on one device of `platform`."""
  workdir = pathlib.Path(workdir).expanduser()
  raw = reporting.read_config(workdir) if workdir.is_dir() else None
  if raw is None:
    raise UserError(f"--workdir {workdir} holds no trained run (no config.json or summary.json); pass the folder "
                    "a training run wrote")
  config = ml_collections.ConfigDict(raw)
  if not (workdir / "checkpoints").is_dir():
    raise UserError(f"--workdir {workdir} has no checkpoint yet; train it first (python run.py --workdir={workdir})")
  device = devices.select_devices(platform, 1)[0]
  targets = datasets.target_names(config.data)
  model, _ = create_model(config.model, device.platform, outputs=len(targets))
  # The optimizer only gives the checkpoint's shape; its step count does not change that shape.
  init = functools.partial(create_state, model, optim.create_optimizer(config.train, 1), config.data.image_size,
                           config.train.seed)
  sharding = jax.sharding.SingleDeviceSharding(device)
  checkpoints = Checkpointer(workdir / "checkpoints", config.checkpoint.keep, None, read_only=True)
  try:
    restored = checkpoints.restore(placed_shapes(jax.eval_shape(init), sharding))
  finally:
    checkpoints.close()
  if restored is None:
    raise UserError(f"--workdir {workdir} has no checkpoint yet; train it first (python run.py --workdir={workdir})")
  state = restored[0]
  step = int(state.step)
  thresholds, note = operating_points(reporting.read_summary(workdir), targets, step)
  return Model(workdir, config, targets, thresholds, note, step, config.train.eval_batch_size or
               config.train.batch_size, eval_variables(state), model.apply, DTYPES[config.model.dtype],
               functools.partial(jax.device_put, device=sharding))


def caption(model: Model, logits: np.ndarray, target: int) -> str:
  """What an explained film's overlay says: the target, its probability and the call at the threshold."""
  verdict = "positive" if model.labels(logits[None])[0, target] else "negative"
  return (f"{model.targets[target]} p={float(probability(logits[target])):.3f}: {verdict} "
          f"(threshold {model.thresholds[target]:.3f})")


def write_explanations(model: Model, pixels: np.ndarray, logits: np.ndarray, records: list[dict],
                       folder: pathlib.Path) -> list[str]:
  """One class activation map overlay per film, for its most probable target; returns the files' paths."""
  targets = logits.argmax(axis=1)
  heatmaps = model.heatmaps(pixels, targets)
  paths = []
  with Progress(len(pixels), "explaining", unit="film") as bar:
    for i, (film, heatmap, record) in enumerate(zip(pixels, heatmaps, records)):
      path = folder / f"{i:05d}_{pathlib.Path(record['path']).stem}.png"
      atomic_write_bytes(path, figures.overlay(film, heatmap, caption(model, logits[i], int(targets[i]))))
      paths.append(str(path))
      bar.update()
  return paths


def short_table(table: pd.DataFrame, targets: tuple[str, ...], limit: int = 20) -> str:
  """The first `limit` rows as text: for each film its most probable target, probability and label."""
  lines = [f"  {'film':<48s} {'target':<20s} {'p':>6s}  label"]
  for _, row in table.head(limit).iterrows():
    best = max(targets, key=lambda t: row[f"p_{t}"])
    name = row["path"] if len(row["path"]) <= 48 else "..." + row["path"][-45:]
    lines.append(f"  {name:<48s} {best:<20s} {row[f'p_{best}']:6.3f}  {row[f'label_{best}']}")
  if len(table) > limit:
    lines.append(f"  ... {len(table) - limit} more in the CSV")
  return "\n".join(lines)


def run(workdir: str | pathlib.Path, inputs: Sequence[str], platform: str = devices.CPU,
        on_bad_image: str = "error", explain_films: bool = False, name: str | None = None) -> pd.DataFrame:
  """The predict command: `RUN/predictions/<name>.csv` (name: the first input's) and, with `explain_films`, a
  class activation map per film in `RUN/predictions/<name>/`; prints a short table."""
  if not inputs:
    raise UserError("--mode=predict needs films: pass --inputs=PATH (files, folders or globs)")
  if on_bad_image not in ON_BAD_IMAGE:
    raise UserError(f"--on_bad_image={on_bad_image!r} must be one of {', '.join(ON_BAD_IMAGE)}")
  stem = name or re.sub(r"[*?\[\]]", "", pathlib.Path(str(inputs[0]).rstrip("/")).stem) or "films"
  if stem in (".", "..") or "/" in stem:
    raise UserError(f"--output_name={stem!r} must be a plain file name (it is written in RUN/predictions/)")
  paths = film_paths(inputs)  # before the checkpoint loads: a typo fails at once
  model = load(workdir, platform)
  pixels, records, skipped = model.read(paths, on_bad_image)
  if not records:
    raise UserError(f"none of the {len(paths)} film(s) could be read (first: {skipped[0]})")
  logits = model.logits(pixels)
  table = model.table(records, logits)
  out = model.workdir / "predictions"
  if explain_films:
    table["explanation"] = write_explanations(model, pixels, logits, records, out / stem)
  atomic_write_text(out / f"{stem}.csv", table.to_csv(index=False))
  print(f"{len(table)} film(s) predicted with the checkpoint of step {model.step}; {model.threshold_note}")
  print(short_table(table, model.targets))
  print(f"written: {out / f'{stem}.csv'}" + (f" and {len(table)} explanation(s) in {out / stem}" if explain_films
                                              else ""))
  if skipped:
    print(f"skipped {len(skipped)} unreadable film(s):\n" + "\n".join(f"  {s}" for s in skipped))
  return table
