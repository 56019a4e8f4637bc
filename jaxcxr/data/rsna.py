"""Reading the RSNA Pneumonia Detection Challenge (2018, stage 2) training set: its two CSVs, its DICOMs and the
radiologists' boxes.

- `stage_2_train_labels.csv`: patientId, x, y, width, height, Target; one row per box of a positive film (Target
  1, the box in the DICOM's own pixels, x and y its top-left corner), one row without a box for a negative film
  (Target 0);
- `stage_2_detailed_class_info.csv`: patientId, class: `Lung Opacity` (Target 1), `No Lung Opacity / Not
  Normal` or `Normal`;
- `stage_2_train_images/<patientId>.dcm`, read through the DICOM path (`dicom.read_film`).

Each patientId names one film of one patient. The challenge's stage 2 test films carry no labels, so the test
and validation splits are carved by patient (data.test_fraction, data.val_fraction). The target is Pneumonia;
`data.negatives=no_finding` takes only `Normal` films as negative, `rest` every Target 0 film. The boxes are what
the explanations' pointing game is scored on (`boxes_in_film`).
"""

import os
import pathlib

import numpy as np
import pandas as pd
import pydicom

from jaxcxr.data import csvfiles, images
from jaxcxr.data.splits import Examples, check_patient_disjoint, split_patients
from jaxcxr.errors import UserError

LABELS, CLASSES, IMAGES = "stage_2_train_labels.csv", "stage_2_detailed_class_info.csv", "stage_2_train_images"
TARGET = "Pneumonia"
NORMAL = "Normal"
CLASS_NAMES = ("Lung Opacity", "No Lung Opacity / Not Normal", NORMAL)
BOX = ("x", "y", "width", "height")


def _read(path: pathlib.Path, columns: list[str]) -> pd.DataFrame:
  if not path.is_file():
    raise UserError(f"no {path.name} in {path.parent}; point --data_dir at the RSNA Pneumonia Detection Challenge "
                    f"folder that holds {LABELS}, {CLASSES} and {IMAGES}/")
  try:
    table = pd.read_csv(path, dtype={"patientId": str, "class": str})
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise UserError(f"{path} is not a readable CSV ({str(e).splitlines()[0][:120]}); use the challenge's file") from e
  csvfiles.check_whole(path, len(table.columns))
  missing = [c for c in columns if c not in table.columns]
  if missing:
    raise UserError(f"{path} lacks column(s) {', '.join(map(repr, missing))}; expected {','.join(columns)}")
  return table


def read_boxes(data_dir: pathlib.Path) -> tuple[pd.DataFrame, dict[str, list[tuple[float, float, float, float]]]]:
  """The labels CSV, one row per film (patientId, Target), and each positive film's boxes (x, y, width, height)."""
  path = data_dir / LABELS
  rows = _read(path, ["patientId", *BOX, "Target"])
  if not rows["Target"].isin([0, 1]).all():
    bad = rows.loc[~rows["Target"].isin([0, 1]), "Target"].iloc[0]
    raise UserError(f"{path}: Target {bad} is not 0 or 1; the file is damaged")
  positive = rows[rows["Target"] == 1]
  unboxed = positive[list(BOX)].isna().any(axis=1)
  if unboxed.any():
    raise UserError(f"{path}: {int(unboxed.sum())} Target 1 row(s) without a box (e.g. "
                    f"{positive.loc[unboxed, 'patientId'].iloc[0]}); "
                    "each positive row holds x, y, width and height")
  impossible = (positive["x"] < 0) | (positive["y"] < 0) | (positive["width"] <= 0) | (positive["height"] <= 0)
  if impossible.any():
    raise UserError(f"{path}: {int(impossible.sum())} box(es) with a negative corner or no area (e.g. film "
                    f"{positive.loc[impossible, 'patientId'].iloc[0]}); the file is damaged")
  boxes = {pid: [tuple(map(float, b)) for b in group[list(BOX)].to_numpy()]
           for pid, group in positive.groupby("patientId")}
  films = rows.groupby("patientId", sort=False)["Target"].agg(["min", "max"])
  mixed = films[films["min"] != films["max"]]
  if len(mixed):
    raise UserError(f"{path}: film {mixed.index[0]} has rows with Target 0 and 1; the file is damaged")
  return films["max"].rename("Target").reset_index(), boxes


def read_release(data_dir: pathlib.Path, negatives: str, val_fraction: float, test_fraction: float, seed: int,
                 check_leaks: bool = True) -> pd.DataFrame:
  """Every film with its label, patient, split and path (NaN where its DICOM is missing)."""
  films, _ = read_boxes(data_dir)
  classes = _read(data_dir / CLASSES, ["patientId", "class"]).drop_duplicates("patientId").set_index("patientId")
  unknown = classes.loc[~classes["class"].isin(CLASS_NAMES), "class"]
  if len(unknown):
    raise UserError(f"{data_dir / CLASSES}: class {unknown.iloc[0]!r} is not one of {', '.join(CLASS_NAMES)}")
  table = films.rename(columns={"patientId": "image_id"})
  table["class"] = table["image_id"].map(classes["class"])
  if table["class"].isna().any():
    raise UserError(f"{data_dir / CLASSES} lacks film {table.loc[table['class'].isna(), 'image_id'].iloc[0]} of "
                    f"{LABELS}; use the two files of one release")
  positive = table["Target"] == 1
  contradicted = positive != (table["class"] == CLASS_NAMES[0])
  if contradicted.any():
    first = table[contradicted].iloc[0]
    raise UserError(f"{int(contradicted.sum())} film(s) of {data_dir / LABELS} and {data_dir / CLASSES} disagree "
                    f"(e.g. {first['image_id']}: Target {first['Target']}, class {first['class']!r}); a Lung Opacity "
                    "film is Target 1 and no other is: use the two files of one release")
  negative = table["class"] == NORMAL if negatives == "no_finding" else ~positive
  table["label"] = np.where(positive, 1.0, np.where(negative, 0.0, np.nan))
  table["patient_id"] = table["image_id"]
  table["view"] = None
  located = [str(data_dir / IMAGES / f"{p}.dcm") for p in table["image_id"]]
  table["path"] = pd.Series(located, index=table.index).where([os.path.isfile(p) for p in located])
  of = split_patients(table["patient_id"], {"test": test_fraction, "val": val_fraction,
                                            "train": 1.0 - val_fraction - test_fraction}, seed)
  table["split"] = table["official_split"] = table["patient_id"].map(of)
  if check_leaks:
    check_patient_disjoint(table)
  return table


def boxes_in_film(data_dir: pathlib.Path, image_ids: list[str], size: int,
                  aspect: str) -> dict[str, list[tuple[float, float, float, float]]]:
  """The boxes of each positive film of `image_ids`, in the pixels of the (size, size) film the cache made of it
  (its DICOM's Rows and Columns read for the scale); a box reaching outside its film is refused."""
  _, boxes = read_boxes(data_dir)
  out = {}
  for image_id in image_ids:
    if image_id not in boxes:
      continue
    path = data_dir / IMAGES / f"{image_id}.dcm"
    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    height, width = int(header.Rows), int(header.Columns)
    for x, y, w, h in boxes[image_id]:
      if x + w > width or y + h > height:
        raise UserError(f"{data_dir / LABELS}: film {image_id}'s box ({x:g}, {y:g}, {w:g}, {h:g}) reaches outside "
                        f"its {width}x{height} DICOM; the file is damaged or belongs to other films")
    out[image_id] = [images.fitted_box(box, width, height, size, aspect) for box in boxes[image_id]]
  return out


def read(data_cfg, root: pathlib.Path, check_leaks: bool = True) -> Examples:
  """The reader `data.dataset=rsna` names."""
  return Examples(read_release(root, data_cfg.negatives, data_cfg.val_fraction, data_cfg.test_fraction,
                               data_cfg.split_seed, check_leaks))
