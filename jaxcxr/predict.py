"""Applying a trained run to new films, from the command line or in three lines of Python:

  from jaxcxr import predict
  predictor = predict.load("runs/default-cpu")
  table = predictor(["film.png", "scan.dcm", "more_films/"])   # a pandas DataFrame, one row per film

  python run.py --mode=predict --workdir=runs/default-cpu --inputs=films/ scan.dcm --explain

Films are decoded and resized by training's own code (`data.images`: PNG, JPEG, DICOM) and applied by the
run's `inference.TrainedNetwork`, rebuilt from its newest intact checkpoint. Each target's label is
taken at the operating point the run chose on validation (`summary.json`); a run that has not finished has
none yet and is read at 0.5, with a note. Nothing of the run is changed, so a run may be applied while it
trains: the CSV and the explanations are written under `RUN/predictions/`, and nothing else.
"""

import dataclasses
import glob
import logging
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxcxr import devices, inference
from jaxcxr import workdir as workdir_files
from jaxcxr.data import folders, images
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from jaxcxr.progress import Progress
from jaxcxr.report import figures
from jaxcxr.report.tables import Table

log = logging.getLogger(__name__)
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
class Predictor:
  """A run folder's trained network applied to films: decoded from paths (or taken as arrays), scored, and
  tabulated one row per film. `load` builds one."""
  network: inference.TrainedNetwork
  workdir: pathlib.Path

  def read(self, films: Films,
           on_bad_image: str = images.STOP_AT_BAD_IMAGE) -> tuple[np.ndarray, list[dict], list[str]]:
    """Decodes paths (or takes arrays) into (N, size, size) uint8 inputs, one record per film (its source and
    pixel spacing), and the messages of the files skipped (`on_bad_image=skip`; `error` stops at the first)."""
    _check_policy("on_bad_image", on_bad_image)
    network = self.network
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
          arrays.append(network.prepare(film))
          records.append({"path": f"array[{i}]", "pixel_spacing_mm": None})
        else:
          try:
            pixels, meta = images.load_film_with_metadata(film, network.image_size, network.config.data.aspect)
          except images.BadImageError as e:
            if on_bad_image == images.STOP_AT_BAD_IMAGE:
              raise UserError(f"{e}; fix or remove it, or pass --on_bad_image=skip to predict the others") from e
            skipped.append(str(e))
            continue
          arrays.append(pixels)
          records.append({"path": str(film), "pixel_spacing_mm": meta.get("pixel_spacing_mm")})
        bar.update()
    stacked = np.stack(arrays) if arrays else np.zeros((0, network.image_size, network.image_size), np.uint8)
    return stacked, records, skipped

  def table(self, records: list[dict], logits: np.ndarray) -> pd.DataFrame:
    """One row per film: its path, and per target the probability, the label and the threshold used."""
    network = self.network
    rows = []
    for record, p, y in zip(records, inference.probability(logits), network.labels(logits)):
      row = {"path": record["path"]}
      for k, target in enumerate(network.targets):
        row |= {f"p_{target}": float(p[k]), f"label_{target}": int(y[k]),
                f"threshold_{target}": network.thresholds[k]}
      spacing = record["pixel_spacing_mm"]
      row |= {"checkpoint_step": network.step, "pixel_spacing_mm": "" if spacing is None else
              " x ".join(f"{s:g}" for s in spacing)}
      rows.append(row)
    return pd.DataFrame(rows, columns=["path", *(f"{c}_{t}" for t in network.targets
                                                  for c in ("p", "label", "threshold")),
                                       "checkpoint_step", "pixel_spacing_mm"])

  def __call__(self, films: Films, on_bad_image: str = images.STOP_AT_BAD_IMAGE) -> pd.DataFrame:
    """Predictions for `films`: paths (files, folders, globs) or 2-D uint8 arrays; see `table`."""
    pixels, records, skipped = self.read(films, on_bad_image)
    for message in skipped:
      log.warning("skipped %s", message)
    return self.table(records, self.network.logits(pixels))


def _check_policy(name: str, on_bad_image: str) -> None:
  if on_bad_image not in images.ON_BAD_IMAGE:
    raise UserError(f"{name}={on_bad_image!r} must be one of {', '.join(images.ON_BAD_IMAGE)}")


def load(workdir: str | pathlib.Path, platform: str = devices.CPU) -> Predictor:
  """The run in `workdir` from its newest intact checkpoint (`inference.from_checkpoint`), on one device of
  `platform`."""
  return Predictor(inference.from_checkpoint(workdir, platform), pathlib.Path(workdir).expanduser())


def write_explanations(network: inference.TrainedNetwork, pixels: np.ndarray, logits: np.ndarray,
                       records: list[dict], folder: pathlib.Path) -> list[str]:
  """One class activation map overlay per film, for its most probable target; returns the files' paths."""
  targets = logits.argmax(axis=1)
  heatmaps = network.heatmaps(pixels, targets)
  paths = []
  with Progress(len(pixels), "explaining", unit="film") as bar:
    for i, (film, heatmap, record) in enumerate(zip(pixels, heatmaps, records)):
      path = folder / f"{i:05d}_{pathlib.Path(record['path']).stem}.png"
      atomic_write_bytes(path, figures.overlay(film, heatmap, network.caption(logits[i], int(targets[i]))))
      paths.append(str(path))
      bar.update()
  return paths


def short_table(table: pd.DataFrame, targets: tuple[str, ...], limit: int = 20) -> str:
  """The first `limit` rows as text: for each film its most probable target, probability and label."""
  rows = []
  for _, row in table.head(limit).iterrows():
    best = max(targets, key=lambda t: row[f"p_{t}"])
    name = row["path"] if len(row["path"]) <= 48 else "..." + row["path"][-45:]
    rows.append([name, best, f"{row[f'p_{best}']:.3f}", row[f"label_{best}"]])
  more = [f"  ... {len(table) - limit} more in the CSV"] if len(table) > limit else []
  return "\n".join([Table(["film", "target", "p", "label"], rows).text(), *more])


def run(workdir: str | pathlib.Path, inputs: Sequence[str], platform: str = devices.CPU,
        on_bad_image: str = images.STOP_AT_BAD_IMAGE, explain_films: bool = False,
        name: str | None = None) -> pd.DataFrame:
  """The predict command: `RUN/predictions/<name>.csv` (name: the first input's) and, with `explain_films`, a
  class activation map per film in `RUN/predictions/<name>/`; prints a short table."""
  if not inputs:
    raise UserError("--mode=predict needs films: pass --inputs=PATH (files, folders or globs)")
  _check_policy("--on_bad_image", on_bad_image)
  stem = name or re.sub(r"[*?\[\]]", "", pathlib.Path(str(inputs[0]).rstrip("/")).stem) or "films"
  if stem in (".", "..") or "/" in stem:
    raise UserError(f"--output_name={stem!r} must be a plain file name (it is written in RUN/predictions/)")
  paths = film_paths(inputs)  # before the checkpoint loads: a typo fails at once
  predictor = load(workdir, platform)
  # Before any film is read: a run folder that cannot take predictions stops now, not after predicting.
  out = ensure_writable_dir(workdir_files.predictions_dir(predictor.workdir), "the predictions folder")
  network = predictor.network
  pixels, records, skipped = predictor.read(paths, on_bad_image)
  if not records:
    raise UserError(f"none of the {len(paths)} film(s) could be read (first: {skipped[0]})")
  logits = network.logits(pixels)
  table = predictor.table(records, logits)
  if explain_films:
    table["explanation"] = write_explanations(network, pixels, logits, records, out / stem)
  atomic_write_text(out / f"{stem}.csv", table.to_csv(index=False))
  print(f"{len(table)} film(s) predicted with the checkpoint of step {network.step}; {network.threshold_note}")
  print(short_table(table, network.targets))
  print(f"written: {out / f'{stem}.csv'}" + (f" and {len(table)} explanation(s) in {out / stem}" if explain_films
                                              else ""))
  if skipped:
    print(f"skipped {len(skipped)} unreadable film(s):\n" + "\n".join(f"  {s}" for s in skipped))
  return table
