"""Reading CheXpert (Irvin et al. 2019; `CheXpert-v1.0` or `CheXpert-v1.0-small`): the two CSVs and the films
they name.

`train.csv` and `valid.csv` have the columns Path, Sex, Age, Frontal/Lateral, AP/PA and the labeler's 14
observations (`findings.CHEXPERT_LABELER`). Path starts with the release's folder name
(`CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`), so it is read relative to the folder
holding the CSVs whatever that folder is called now. The patient is the path's `patientNNNNN`. The official
`valid.csv` (234 films, 200 patients, labelled by radiologists) is the test split, as in the papers that report
on it; validation is carved from train by patient.
"""

import os
import pathlib
import re

import pandas as pd

from jaxcxr.data import csvfiles, findings
from jaxcxr.data.splits import Examples, check_patient_disjoint, split_patients
from jaxcxr.errors import UserError

CSVS = {"train": "train.csv", "test": "valid.csv"}  # the split each published CSV becomes
OFFICIAL = {"train": "train", "test": "valid"}
VIEW_COLUMNS = ("Frontal/Lateral", "AP/PA")
# data.views: "frontal" and "lateral" from Frontal/Lateral; AP and PA from AP/PA, for frontal films.
VIEWS = ("frontal", "lateral", "AP", "PA")
VIEW_GROUPS = {"frontal": ("frontal", "AP", "PA")}
_PATIENT = re.compile(r"(patient\d+)")


def find_root(data_dir: pathlib.Path) -> pathlib.Path:
  """The folder holding train.csv and valid.csv: `data_dir`, or the one CheXpert-v1.0* folder inside it."""
  if all((data_dir / name).is_file() for name in CSVS.values()):
    return data_dir
  inside = sorted(p for p in data_dir.glob("CheXpert-v1.0*") if p.is_dir())
  if len(inside) == 1 and all((inside[0] / name).is_file() for name in CSVS.values()):
    return inside[0]
  missing = [name for name in CSVS.values() if not (data_dir / name).is_file()]
  raise UserError(f"no CheXpert CSVs in {data_dir}: {' and '.join(missing)} missing; point --data_dir at the "
                  "unpacked CheXpert-v1.0 (or -small) folder, which holds train.csv, valid.csv and train/ valid/")


def view_of(frontal_lateral: str, ap_pa: str) -> str | None:
  """A film's view as data.views names it: AP or PA for a frontal film that records it, else frontal or lateral
  (any other Frontal/Lateral value as written, lower case, so no view filter keeps it)."""
  if not isinstance(frontal_lateral, str):
    return None
  view = frontal_lateral.strip().lower()
  if view != "frontal":
    return view
  return ap_pa.strip().upper() if isinstance(ap_pa, str) and ap_pa.strip().upper() in ("AP", "PA") else "frontal"


def _local_path(root: pathlib.Path, path: str) -> pathlib.Path:
  parts = pathlib.PurePosixPath(path).parts
  return root.joinpath(*parts[1:]) if parts and parts[0].startswith("CheXpert-v1.0") else root / path


def read_csv(csv_path: pathlib.Path) -> pd.DataFrame:
  try:
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""])
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise UserError(f"{csv_path} is not a readable CSV ({str(e).splitlines()[0][:120]}); use the release's "
                    "file") from e
  csvfiles.check_whole(csv_path, len(table.columns))
  required = ["Path", *VIEW_COLUMNS, findings.NO_FINDING, *findings.CHEXPERT_LABELER]
  missing = [c for c in required if c not in table.columns]
  if missing:
    raise UserError(f"{csv_path} lacks column(s) {', '.join(map(repr, missing))}; expected CheXpert's header "
                    "'Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,...'")
  if table.empty:
    raise UserError(f"{csv_path} has its header but no rows; use the release's file")
  if table["Path"].isna().any():
    raise UserError(f"{csv_path} has {int(table['Path'].isna().sum())} row(s) without a Path; the file is damaged")
  if table["Path"].duplicated().any():
    raise UserError(f"{csv_path} lists {table.loc[table['Path'].duplicated(), 'Path'].iloc[0]} twice; the file "
                    "is damaged")
  return table


def read_release(data_dir: pathlib.Path, target: str, negatives: str, uncertain: str, val_fraction: float,
                 seed: int, check_leaks: bool = True) -> pd.DataFrame:
  """Every film of both CSVs with its split, labels (`findings.label_table`), view and path (NaN if missing)."""
  root = find_root(data_dir)
  parts = []
  for split, name in CSVS.items():
    table = read_csv(root / name)
    values = findings.labeler_values(table, [findings.NO_FINDING, *findings.CHEXPERT_LABELER], str(root / name))
    out = findings.label_table(values, target, negatives, uncertain)
    out["image_id"] = table["Path"].map(lambda p: "/".join(pathlib.PurePosixPath(p).parts[-4:]))
    patients = table["Path"].str.extract(_PATIENT, expand=False)
    if patients.isna().any():
      raise UserError(f"{root / name}: Path {table.loc[patients.isna(), 'Path'].iloc[0]!r} names no patientNNNNN "
                      "folder; splits keep each patient's films together, so the paths must keep CheXpert's layout")
    out["patient_id"] = patients
    out["view"] = [view_of(f, a) for f, a in zip(table["Frontal/Lateral"], table["AP/PA"])]
    out["official_split"] = OFFICIAL[split]
    out["split"] = split
    located = table["Path"].map(lambda p: str(_local_path(root, p)))
    out["path"] = located.where(located.map(os.path.isfile))
    parts.append(out)
  table = pd.concat(parts, ignore_index=True)
  train = table["split"] == "train"
  of = split_patients(table.loc[train, "patient_id"], {"val": val_fraction, "train": 1.0 - val_fraction}, seed)
  table.loc[train, "split"] = table.loc[train, "patient_id"].map(of)
  if check_leaks:
    check_patient_disjoint(table)
  return table


def read(data_cfg, root: pathlib.Path, check_leaks: bool = True) -> Examples:
  """The reader `data.dataset=chexpert` names."""
  return Examples(read_release(root, data_cfg.target, data_cfg.negatives, data_cfg.uncertain, data_cfg.val_fraction,
                               data_cfg.split_seed, check_leaks),
                  targets=findings.labeler_targets(data_cfg.target))
