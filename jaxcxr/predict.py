"""Applying a trained run (or its export) to new films, from the command line or in three lines of Python:

  from jaxcxr import predict
  predictor = predict.load("runs/default-cpu")                  # or an export folder: runs/default-cpu/export
  table = predictor(["film.png", "scan.dcm", "more_films/"])   # a pandas DataFrame, one row per film

  python run.py --mode=predict --workdir=runs/default-cpu --inputs=films/ scan.dcm --explain

Films are decoded and resized by training's own code (`data.images`: PNG, JPEG, DICOM) and applied by the
run's `inference.TrainedNetwork`, rebuilt from its newest intact checkpoint, or by an export's
`exported.ExportedNetwork`. Each target's probability is calibrated and its label taken at the operating point,
both as the run chose them on validation (`readout`); a run that has not finished has none yet and is read
uncalibrated at 0.5, with a note. Each film's DICOM tags are checked against the model's scope (`data.scope`:
a chest radiograph in a view the run trained on); a film outside it is flagged, or refused with
`strict_inputs`. Nothing of the run is changed, so a run may be applied while it trains: the CSV and the
explanations are written under `RUN/predictions/` (an export's: `EXPORT/predictions/`), and nothing else.
"""

import dataclasses
import glob
import logging
import pathlib
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxcxr import devices, exported, inference
from jaxcxr import workdir as workdir_files
from jaxcxr.data import folders, images, scope
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_bytes, atomic_write_text, ensure_writable_dir
from jaxcxr.progress import Progress
from jaxcxr.report import figures
from jaxcxr.report.tables import Table

log = logging.getLogger(__name__)
Films = Sequence[str | pathlib.Path] | Sequence[np.ndarray] | np.ndarray
Network = inference.TrainedNetwork | exported.ExportedNetwork


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
      elif match.exists():
        raise UserError(f"--inputs {match} is not a regular file (a pipe, socket or device); pass film files or "
                        "folders of them")
      else:
        raise UserError(f"--inputs {match}: no such file or folder")
  first = {}  # each film once, where it was first named, however it was named
  for path in found:
    first.setdefault(path.resolve(), path)
  unique = list(first.values())
  if len(unique) < len(found):
    log.warning("--inputs names %d film(s) more than once; each is predicted once", len(found) - len(unique))
  return unique


@dataclasses.dataclass(frozen=True)
class Predictor:
  """A run folder's trained network (or an export's) applied to films: decoded from paths (or taken as arrays),
  checked against the model's scope, scored, and tabulated one row per film. `load` builds one."""
  network: Network
  workdir: pathlib.Path

  def read(self, films: Films,
           on_bad_image: str = images.STOP_AT_BAD_IMAGE) -> tuple[np.ndarray, list[dict], list[str]]:
    """Decodes paths (or takes arrays) into (N, size, size) uint8 inputs, one record per film (its source, pixel
    spacing and scope), and the messages of the files skipped (`on_bad_image=skip`; `error` stops at the first)."""
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
          try:
            arrays.append(images.fit_array(film, network.image_size, network.aspect))
          except images.BadImageError as e:
            raise UserError(str(e)) from e
          records.append({"path": f"array[{i}]", "pixel_spacing_mm": None,
                          "scope": scope.assess({}, network.views)})
        else:
          try:
            pixels, meta = images.load_film_with_metadata(film, network.image_size, network.aspect)
          except images.BadImageError as e:
            if on_bad_image == images.STOP_AT_BAD_IMAGE:
              raise UserError(f"{e}; fix or remove it, or pass --on_bad_image=skip to predict the others") from e
            skipped.append(str(e))
            continue
          arrays.append(pixels)
          records.append({"path": str(film), "pixel_spacing_mm": meta["pixel_spacing_mm"],
                          "scope": scope.assess(meta, network.views)})
        bar.update()
    stacked = np.stack(arrays) if arrays else np.zeros((0, network.image_size, network.image_size), np.uint8)
    return stacked, records, skipped

  def table(self, records: list[dict], logits: np.ndarray) -> pd.DataFrame:
    """One row per film: its path, per target the calibrated probability, the label and the threshold used,
    and whether the film is in the model's scope (true, false or unknown) and why not."""
    read = self.network.readout
    rows = []
    for record, p, y in zip(records, read.probabilities(logits), read.labels(logits)):
      row = {"path": record["path"]}
      for k, target in enumerate(read.targets):
        row |= {f"p_{target}": float(p[k]), f"label_{target}": int(y[k]), f"threshold_{target}": read.thresholds[k]}
      spacing, verdict = record["pixel_spacing_mm"], record["scope"]
      row |= {"checkpoint_step": self.network.step,
              "pixel_spacing_mm": "unknown" if spacing is None else " x ".join(f"{s:g}" for s in spacing),
              "in_scope": verdict.in_scope, "scope_reason": "; ".join(verdict.reasons)}
      rows.append(row)
    return pd.DataFrame(rows, columns=["path", *(f"{c}_{t}" for t in read.targets for c in ("p", "label", "threshold")),
                                       "checkpoint_step", "pixel_spacing_mm", "in_scope", "scope_reason"])

  def __call__(self, films: Films, on_bad_image: str = images.STOP_AT_BAD_IMAGE,
               strict_inputs: bool = False) -> pd.DataFrame:
    """Predictions for `films`: paths (files, folders, globs) or 2-D uint8 arrays; see `table`. With
    `strict_inputs`, a film outside the model's scope stops it (UserError) before any is scored."""
    pixels, records, skipped = self.read(films, on_bad_image)
    for message in skipped:
      log.warning("skipped %s", message)
    check_scope(records, strict_inputs)
    return self.table(records, self.network.logits(pixels))


def check_scope(records: list[dict], strict: bool) -> None:
  """One warning line per kind of out-of-scope film (its count and first film); with `strict`, a UserError
  naming the first such film instead."""
  out = [r for r in records if r["scope"].in_scope == scope.OUT]
  if out and strict:
    first = out[0]
    raise UserError(f"{first['path']} is outside the model's scope ({'; '.join(first['scope'].reasons)})"
                    + (f", and {len(out) - 1} more film(s)" if len(out) > 1 else "")
                    + "; remove them, or drop --strict_inputs to score them flagged in_scope=false")
  kinds: dict[str, list[dict]] = {}
  for record in out:
    for kind in record["scope"].kinds:
      kinds.setdefault(kind, []).append(record)
  for kind, films in kinds.items():
    reason = next(r for r, k in zip(films[0]["scope"].reasons, films[0]["scope"].kinds) if k == kind)
    log.warning("%d film(s) outside the model's scope by their %s (first: %s: %s); their scores mean little and "
                "are flagged in_scope=false (--strict_inputs refuses them)", len(films), kind, films[0]["path"],
                reason)


def _check_policy(name: str, on_bad_image: str) -> None:
  if on_bad_image not in images.ON_BAD_IMAGE:
    raise UserError(f"{name}={on_bad_image!r} must be one of {', '.join(images.ON_BAD_IMAGE)}")


def load(workdir: str | pathlib.Path, platform: str = devices.CPU) -> Predictor:
  """The run in `workdir` from its newest intact checkpoint (`inference.from_checkpoint`), on one device of
  `platform`; or, where `workdir` is an export folder, the export (`exported.load`)."""
  folder = pathlib.Path(workdir).expanduser()
  if exported.is_export(folder):
    return Predictor(exported.load(folder), folder)
  return Predictor(inference.from_checkpoint(folder, platform), folder)


def write_explanations(network: inference.TrainedNetwork, pixels: np.ndarray, logits: np.ndarray,
                       records: list[dict], folder: pathlib.Path) -> list[str]:
  """One class activation map overlay per film, for its most probable target; returns the files' paths."""
  targets = logits.argmax(axis=1)
  heatmaps = network.heatmaps(pixels, targets)
  paths = []
  with Progress(len(pixels), "explaining", unit="film") as bar:
    for i, (film, heatmap, record) in enumerate(zip(pixels, heatmaps, records)):
      path = folder / f"{i:05d}_{pathlib.Path(record['path']).stem}.png"
      atomic_write_bytes(path, figures.overlay(film, heatmap, network.readout.caption(logits[i], int(targets[i]))))
      paths.append(str(path))
      bar.update()
  return paths


def short_table(table: pd.DataFrame, targets: tuple[str, ...], limit: int = 20) -> str:
  """The first `limit` rows as text: for each film its most probable target, probability and label, and whether
  it is in the model's scope."""
  rows = []
  for _, row in table.head(limit).iterrows():
    best = max(targets, key=lambda t: row[f"p_{t}"])
    name = row["path"] if len(row["path"]) <= 48 else "..." + row["path"][-45:]
    rows.append([name, best, f"{row[f'p_{best}']:.3f}", row[f"label_{best}"],
                 row["in_scope"] + (f" ({row['scope_reason']})" if row["in_scope"] == scope.OUT else "")])
  more = [f"  ... {len(table) - limit} more in the CSV"] if len(table) > limit else []
  return "\n".join([Table(["film", "target", "p", "label", "in scope"], rows).text(), *more])


def run(workdir: str | pathlib.Path, inputs: Sequence[str], platform: str = devices.CPU,
        on_bad_image: str = images.STOP_AT_BAD_IMAGE, explain_films: bool = False,
        name: str | None = None, strict_inputs: bool = False) -> pd.DataFrame:
  """The predict command: `RUN/predictions/<name>.csv` (name: the first input's) and, with `explain_films`, a
  class activation map per film in `RUN/predictions/<name>/`; prints a short table. `workdir` may be an export
  folder (which cannot explain: the maps need the model code)."""
  if not inputs:
    raise UserError("--mode=predict needs films: pass --inputs=PATH (files, folders or globs)")
  _check_policy("--on_bad_image", on_bad_image)
  if name is not None and not name.strip():  # an unset variable: --output_name=$NAME
    raise UserError(f"--output_name={name!r} is empty; give the CSV a name, or leave the flag out to name it after "
                    "the first input")
  stem = name.removesuffix(".csv") if name else \
      re.sub(r"[*?\[\]]", "", pathlib.Path(str(inputs[0]).rstrip("/")).stem) or "films"
  if not stem or stem.startswith(".") or "/" in stem:
    raise UserError(f"--output_name={name or stem!r} must be a plain file name, not hidden (it is written as "
                    "RUN/predictions/<name>.csv)")
  paths = film_paths(inputs)  # before the checkpoint loads: a typo fails at once
  if explain_films and exported.is_export(pathlib.Path(workdir).expanduser()):
    raise UserError(f"--explain needs the run's model code, which an export leaves out; pass the run folder "
                    f"(the one holding {pathlib.Path(workdir).name}/) as --workdir")
  predictor = load(workdir, platform)
  # Before any film is read: a run folder that cannot take predictions stops now, not after predicting.
  out = ensure_writable_dir(workdir_files.predictions_dir(predictor.workdir), "the predictions folder")
  network = predictor.network
  pixels, records, skipped = predictor.read(paths, on_bad_image)
  if not records:
    raise UserError(f"none of the {len(paths)} film(s) could be read (first: {skipped[0]})")
  check_scope(records, strict_inputs)
  logits = network.logits(pixels)
  table = predictor.table(records, logits)
  if explain_films:
    table["explanation"] = write_explanations(network, pixels, logits, records, out / stem)
  atomic_write_text(out / f"{stem}.csv", table.to_csv(index=False))
  print(f"{len(table)} film(s) predicted with the checkpoint of step {network.step}; {network.readout.note}")
  print(short_table(table, network.readout.targets))
  print(f"written: {out / f'{stem}.csv'}" + (f" and {len(table)} explanation(s) in {out / stem}" if explain_films
                                              else ""))
  if skipped:
    print(f"skipped {len(skipped)} unreadable film(s):\n" + "\n".join(f"  {s}" for s in skipped))
  return table
