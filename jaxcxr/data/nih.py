"""Reading the NIH ChestX-ray14 release: metadata, image locations, labels and patient-disjoint splits.

The release's quirks are handled here and nowhere else: the bracketed header
names that contain commas, the trailing comma of the original CSV, the two
image layouts (`images/` or Kaggle's `images_001/images/ ...`), the official
split lists (which may lack a final newline) and the absence of an official
validation split, which is carved from train_val by patient.
"""

import logging
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxcxr.data import csvfiles
from jaxcxr.data.splits import Examples, check_patient_disjoint, select_examples, split_patients
from jaxcxr.errors import UserError

METADATA_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
SPLIT_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
NO_FINDING = "No Finding"
FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
            "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
            "Pneumonia", "Pneumothorax")
ALL_FINDINGS = "all"  # data.target: the 14 findings at once, one logit each (CheXNet's task)
TARGETS = (ALL_FINDINGS, "any", *FINDINGS)  # what data.target may name: 'any' is any finding vs the negatives
NEGATIVE_POLICIES = ("no_finding", "rest")
VIEWS = ("PA", "AP")  # the values of Data_Entry_2017's View Position, what data.views may list
# Published test AUROC per finding of CheXNet (Rajpurkar et al. 2017, Table 2; DenseNet-121, 224 px, its own
# patient split): shown beside a multi-label run's table for reference, never used in a computation.
CHEXNET_AUROC = {"Atelectasis": 0.8094, "Cardiomegaly": 0.9248, "Consolidation": 0.7901, "Edema": 0.8878,
                 "Effusion": 0.8638, "Emphysema": 0.9371, "Fibrosis": 0.8047, "Hernia": 0.9164,
                 "Infiltration": 0.7345, "Mass": 0.8676, "Nodule": 0.7802, "Pleural_Thickening": 0.8062,
                 "Pneumonia": 0.7680, "Pneumothorax": 0.8887}
CHEXNET_MEAN_AUROC = 0.8414
log = logging.getLogger(__name__)
REQUIRED_COLUMNS = {"Image Index": "image_id", "Finding Labels": "labels",
                    "Patient ID": "patient_id", "View Position": "view"}


def find_metadata(data_dir: pathlib.Path) -> pathlib.Path:
  """Returns the metadata CSV in `data_dir`, preferring the v2020 relabelled file."""
  for name in METADATA_FILES:
    if (data_dir / name).is_file():
      return data_dir / name
  raise UserError(f"no NIH metadata in {data_dir}: expected one of {', '.join(METADATA_FILES)}; "
                  "point --data_dir at the unpacked ChestX-ray14 release")


def read_metadata(csv_path: pathlib.Path) -> pd.DataFrame:
  """Reads either CSV release into columns image_id, labels, patient_id, view.

  Only the four needed columns are parsed by name, which makes the comma-split
  bracketed headers and the original file's empty 12th column irrelevant.
  """
  try:
    header = pd.read_csv(csv_path, nrows=0).columns
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise UserError(f"{csv_path} is not a readable CSV ({e}); use the release's Data_Entry_2017 file") from e
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise UserError(f"{csv_path} lacks column(s) {', '.join(map(repr, missing))}; expected the NIH "
                    f"header starting 'Image Index,Finding Labels,Follow-up #,Patient ID'")
  try:
    table = pd.read_csv(csv_path, usecols=list(REQUIRED_COLUMNS),
                        dtype={"Image Index": str, "Finding Labels": str, "View Position": str,
                               "Patient ID": str})
  except (pd.errors.ParserError, UnicodeDecodeError) as e:
    raise UserError(f"{csv_path} is not a readable UTF-8 CSV ({str(e).splitlines()[0][:120]}); use the release's "
                    "Data_Entry_2017 file, or save yours as UTF-8") from e
  if table.empty:
    raise UserError(f"{csv_path} has its header but no rows: the CSV is empty; use the release's Data_Entry_2017 "
                    "file")
  csvfiles.check_whole(csv_path, len(header))
  table = table.rename(columns=REQUIRED_COLUMNS)
  if table["image_id"].isna().any() or table["labels"].isna().any():
    raise UserError(f"{csv_path} has rows without an Image Index or Finding Labels; the file is damaged")
  # Spaces around a name (a CSV re-saved by a spreadsheet) would leave the film unfound.
  table["image_id"] = table["image_id"].str.strip()
  table["patient_id"] = table["patient_id"].str.strip()
  no_patient = table["patient_id"].isna() | (table["patient_id"] == "")
  if no_patient.any():
    # Splits keep each patient's films together: a film of no known patient could leak across them.
    raise UserError(f"{csv_path} has {int(no_patient.sum())} row(s) without a Patient ID, e.g. image "
                    f"{table.loc[no_patient, 'image_id'].iloc[0]}; splits keep each patient's films together, so "
                    "give every row its patient (or drop the row)")
  if table["image_id"].duplicated().any():
    dup = table.loc[table["image_id"].duplicated(), "image_id"].iloc[0]
    raise UserError(f"{csv_path} lists image {dup} twice; the file is damaged")
  unknown = finding_sets(table["labels"]).map(lambda s: s - {NO_FINDING, *FINDINGS})
  odd = unknown[unknown.map(bool)]
  if len(odd):
    names = sorted(set().union(*odd))
    log.warning("%s: %d row(s) name labels that are not NIH findings (%s); such a label matches none of the 14 "
                "findings, and a row with only such labels is not 'No Finding' either (data.target=any counts it "
                "as positive)", csv_path, len(odd),
                ", ".join(names[:5]) + (", ..." if len(names) > 5 else ""))
  return table


def index_images(data_dir: pathlib.Path) -> dict[str, str]:
  """Maps file name to path for `images/*.png` or `images_NNN/images/*.png`, one directory scan each.

  Empty when neither folder exists: `describe` still works on metadata alone,
  and training stops with a layout hint (see datasets.load_splits).
  """
  dirs = [data_dir / "images"] if (data_dir / "images").is_dir() else []
  dirs += sorted(p / "images" for p in data_dir.glob("images_*") if (p / "images").is_dir())
  index = {}
  for d in dirs:
    with os.scandir(d) as entries:
      for entry in entries:
        if entry.name.endswith(".png"):
          if entry.name in index:
            raise UserError(f"image {entry.name} is in two folders ({index[entry.name]} and {entry.path}); the "
                            "metadata names each film once, so remove the copy that does not belong")
          index[entry.name] = entry.path
  return index


def read_name_list(path: pathlib.Path) -> list[str]:
  """One image name per line; blank lines and a missing final newline are both fine."""
  return path.read_text().split()


def finding_sets(labels: pd.Series) -> pd.Series:
  """Each row's `|`-separated findings as a set of whole names."""
  return labels.str.split("|").map(lambda names: {n.strip() for n in names})


def targets_of(target: str) -> tuple[str, ...]:
  """The findings a multi-label `data.target` names, one logit each; () for a single target."""
  return FINDINGS if target == ALL_FINDINGS else ()


def binary_labels(labels: pd.Series, target: str, negatives: str) -> pd.Series:
  """1 for the target finding, 0 for a negative, NaN for a row the policy leaves out.

  Labels are matched as whole `|`-separated names, so `Pleural_Thickening`
  never counts as `Thickening` and `Pneumonia` never matches `Pneumothorax`.
  """
  sets = finding_sets(labels)
  no_finding = sets.map(lambda s: s == {NO_FINDING})
  positive = ~no_finding if target == "any" else sets.map(lambda s: target in s)
  negative = no_finding if negatives == "no_finding" else ~positive
  return pd.Series(np.where(positive, 1.0, np.where(negative, 0.0, np.nan)), index=labels.index)


def assign_splits(table: pd.DataFrame, data_dir: pathlib.Path, val_fraction: float,
                  test_fraction: float, seed: int) -> pd.Series:
  """Official train_val/test lists when present, validation carved from train_val by patient."""
  lists = {k: data_dir / v for k, v in SPLIT_LISTS.items()}
  split = pd.Series(None, index=table.index, dtype=object)
  if all(p.is_file() for p in lists.values()):
    listed = {name: set(read_name_list(path)) for name, path in lists.items()}
    both = listed["train_val"] & listed["test"]
    if both:
      raise UserError(f"{len(both)} image(s) are in both {SPLIT_LISTS['train_val']} and {SPLIT_LISTS['test']}, e.g. "
                      f"{sorted(both)[0]}; a film belongs to one split, so fix the lists")
    for name, path in lists.items():
      names = listed[name]
      unknown = names.difference(table["image_id"])
      if unknown:
        raise UserError(f"{path} names {len(unknown)} image(s) absent from the metadata, e.g. "
                        f"{sorted(unknown)[0]}; use the list and CSV of the same release")
      split[table["image_id"].isin(names)] = name
    unlisted = split.isna()
    if unlisted.any():
      log.warning("%d metadata row(s) are in neither %s nor %s (e.g. %s); they are left out of every split",
                  int(unlisted.sum()), SPLIT_LISTS["train_val"], SPLIT_LISTS["test"],
                  table.loc[unlisted, "image_id"].iloc[0])
    train_val = split == "train_val"
    val_of = split_patients(table.loc[train_val, "patient_id"],
                            {"val": val_fraction, "train": 1.0 - val_fraction}, seed)
    split[train_val] = table.loc[train_val, "patient_id"].map(val_of)
  elif any(p.is_file() for p in lists.values()):
    present = [str(p) for p in lists.values() if p.is_file()]
    raise UserError(f"found {present[0]} but not its partner; provide both "
                    f"{' and '.join(SPLIT_LISTS.values())} or neither")
  else:
    of = split_patients(table["patient_id"], {"test": test_fraction, "val": val_fraction,
                                              "train": 1.0 - val_fraction - test_fraction}, seed)
    split = table["patient_id"].map(of)
  return split


def read_release(data_dir: pathlib.Path, target: str, negatives: str, val_fraction: float,
                 test_fraction: float, seed: int, check_leaks: bool = True) -> pd.DataFrame:
  """Every metadata row with its split, binary label (NaN where the policy excludes it) and path.

  Columns: image_id, labels, patient_id, view, split, official_split (train_val
  or test from the lists, else the split), label, path (NaN where the file is missing);
  for `target='all'` also one 1/0 column per finding, and `label` is 1 for any finding.
  """
  table = read_metadata(find_metadata(data_dir))
  table["split"] = assign_splits(table, data_dir, val_fraction, test_fraction, seed)
  if check_leaks:
    check_patient_disjoint(table)
  table["official_split"] = table["split"].replace({"train": "train_val", "val": "train_val"}) \
      if all((data_dir / v).is_file() for v in SPLIT_LISTS.values()) else table["split"]
  if target == ALL_FINDINGS:  # every film counts, No Finding as 0 for each finding
    sets = finding_sets(table["labels"])
    for finding in FINDINGS:
      table[finding] = sets.map(lambda s, f=finding: float(f in s))
    table["label"] = binary_labels(table["labels"], "any", "rest")
  else:
    table["label"] = binary_labels(table["labels"], target, negatives)
  table["path"] = table["image_id"].map(index_images(data_dir))
  return table


def load_examples(data_dir: pathlib.Path, target: str, negatives: str, views: Sequence[str],
                  val_fraction: float, test_fraction: float, seed: int) -> pd.DataFrame:
  """The labelled, split, located examples of an NIH directory (see `read_release`)."""
  return select_examples(read_release(data_dir, target, negatives, val_fraction, test_fraction, seed), views,
                         targets_of(target))


def read(data_cfg, root: pathlib.Path, check_leaks: bool = True) -> Examples:
  """The reader `data.dataset=nih` names: `read_release` with the config's label and split settings."""
  return Examples(read_release(root, data_cfg.target, data_cfg.negatives, data_cfg.val_fraction,
                               data_cfg.test_fraction, data_cfg.split_seed, check_leaks),
                  targets=targets_of(data_cfg.target))
