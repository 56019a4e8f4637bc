"""Reading MIMIC-CXR-JPG (Johnson et al. 2019, v2.0.0): its three tables and the JPEGs they name.

- `mimic-cxr-2.0.0-chexpert.csv(.gz)`: subject_id, study_id and the CheXpert labeler's 14 observations, one row
  per study (`findings` reads the value codes);
- `mimic-cxr-2.0.0-split.csv(.gz)`: dicom_id, study_id, subject_id, split (train / validate / test), the official
  patient-disjoint split, used as published;
- `mimic-cxr-2.0.0-metadata.csv(.gz)`: dicom_id, ..., ViewPosition (PA, AP, LATERAL, LL, ...);
- `files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg`, NN being the subject's first two digits.

The patient is subject_id. A film's labels are its study's; a study the labeler table lacks is left out (it is
not negative).
"""

import logging
import os
import pathlib

import pandas as pd

from jaxcxr.data import chexpert, csvfiles, findings
from jaxcxr.data.splits import Examples, check_patient_disjoint
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

TABLES = {"labels": "mimic-cxr-2.0.0-chexpert.csv", "split": "mimic-cxr-2.0.0-split.csv",
          "metadata": "mimic-cxr-2.0.0-metadata.csv"}
REQUIRED = {"labels": ["subject_id", "study_id", findings.NO_FINDING, *findings.CHEXPERT_LABELER],
            "split": ["dicom_id", "study_id", "subject_id", "split"], "metadata": ["dicom_id", "ViewPosition"]}
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "test": "test"}
VIEWS = chexpert.VIEWS
LATERAL = ("LATERAL", "LL", "RL")


def _find(root: pathlib.Path, name: str) -> pathlib.Path:
  found = [c for c in (root / name, root / f"{name}.gz") if c.is_file()]
  if len(found) == 2:
    raise UserError(f"{root} holds both {name} and {name}.gz; keep one (they may differ), so it is clear which "
                    "is read")
  if found:
    return found[0]
  raise UserError(f"no {name}(.gz) in {root}; point --data_dir at the MIMIC-CXR-JPG folder that holds the three "
                  f"tables ({', '.join(TABLES.values())}) and files/")


def _read(root: pathlib.Path, kind: str) -> pd.DataFrame:
  path = _find(root, TABLES[kind])
  try:
    table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
    raise UserError(f"{path} is not a readable CSV ({str(e).splitlines()[0][:120]}); use the release's file") from e
  if path.suffix != ".gz":
    csvfiles.check_whole(path, len(table.columns))
  missing = [c for c in REQUIRED[kind] if c not in table.columns]
  if missing:
    raise UserError(f"{path} lacks column(s) {', '.join(map(repr, missing))}; use MIMIC-CXR-JPG v2.0.0's table")
  for column in ("subject_id", "study_id"):  # integers: 010000032 (a spreadsheet's re-save) is 10000032
    if column in table:
      table[column] = table[column].str.strip().str.lstrip("0").replace("", "0")
  return table


def view_of(position: str) -> str | None:
  """ViewPosition as data.views names it: AP, PA, lateral, or the tag itself for other views (AP AXIAL, ...)."""
  if not isinstance(position, str) or not position.strip():
    return None
  position = position.strip().upper()
  return "lateral" if position in LATERAL else position


def read_release(data_dir: pathlib.Path, target: str, negatives: str, uncertain: str,
                 check_leaks: bool = True) -> pd.DataFrame:
  """Every film of the split table with its labels, view, official split and path (NaN where missing)."""
  films = _read(data_dir, "split")
  unknown = films.loc[~films["split"].isin(list(OFFICIAL_SPLITS)), "split"]
  if len(unknown):
    raise UserError(f"{_find(data_dir, TABLES['split'])}: split {unknown.iloc[0]!r} in {len(unknown)} row(s) is "
                    f"not one of {', '.join(OFFICIAL_SPLITS)}; the file is damaged")
  if films["dicom_id"].duplicated().any():
    twice = films.loc[films["dicom_id"].duplicated(), "dicom_id"].iloc[0]
    raise UserError(f"{_find(data_dir, TABLES['split'])} lists film {twice} "
                    "twice; the file is damaged")
  labels = _read(data_dir, "labels").drop_duplicates()
  twice = labels["study_id"].duplicated(keep=False)
  if twice.any():
    raise UserError(f"{_find(data_dir, TABLES['labels'])} gives study {labels.loc[twice, 'study_id'].iloc[0]} "
                    f"{int(twice.sum())} different rows; a study has one, so the file is damaged")
  views = _read(data_dir, "metadata")[["dicom_id", "ViewPosition"]]
  table = films.merge(labels.rename(columns={"subject_id": "labelled_subject"}), on="study_id", how="left",
                      indicator="labelled").merge(views, on="dicom_id", how="left")
  other = (table["labelled"] == "both") & (table["labelled_subject"] != table["subject_id"])
  if other.any():
    row = table[other].iloc[0]
    raise UserError(f"study {row['study_id']} is subject {row['subject_id']}'s in {TABLES['split']} but subject "
                    f"{row['labelled_subject']}'s in {TABLES['labels']}; use the tables of one release")
  unlabelled = table["labelled"] == "left_only"
  if unlabelled.any():
    log.warning("%d film(s) of %d stud(ies) have no row in %s (e.g. study %s); they are left out, not taken as "
                "negative", int(unlabelled.sum()), table.loc[unlabelled, "study_id"].nunique(), TABLES["labels"],
                table.loc[unlabelled, "study_id"].iloc[0])
  values = findings.labeler_values(table, [findings.NO_FINDING, *findings.CHEXPERT_LABELER],
                                   str(_find(data_dir, TABLES["labels"])))
  out = findings.label_table(values, target, negatives, uncertain)
  out.loc[unlabelled, "label"] = float("nan")
  out["image_id"] = table["dicom_id"]
  out["patient_id"] = table["subject_id"]
  out["view"] = table["ViewPosition"].map(view_of)
  out["official_split"] = table["split"]
  out["split"] = table["split"].map(OFFICIAL_SPLITS)
  located = [str(data_dir / "files" / f"p{s[:2]}" / f"p{s}" / f"s{st}" / f"{d}.jpg")
             for s, st, d in zip(table["subject_id"], table["study_id"], table["dicom_id"])]
  out["path"] = pd.Series(located, index=out.index).where([os.path.isfile(p) for p in located])
  if check_leaks:
    check_patient_disjoint(out)
  return out


def read(data_cfg, root: pathlib.Path, check_leaks: bool = True) -> Examples:
  """The reader `data.dataset=mimic` names: the official split as published."""
  return Examples(read_release(root, data_cfg.target, data_cfg.negatives, data_cfg.uncertain, check_leaks),
                  targets=findings.labeler_targets(data_cfg.target))
