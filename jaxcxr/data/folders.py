"""Class-per-folder datasets, Kermany's pediatric `chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}` first.

Kermany's own validation split holds 16 images, too few to select a model on,
so train and val are merged and re-split by patient; the test folder is kept
as published (the paper's 624 films). Patient IDs are parsed from the file
names (`person123_bacteria_456.jpeg` -> person123, `IM-0115-0001.jpeg` ->
IM-0115, `NORMAL2-IM-0041-0001.jpeg` -> NORMAL2-IM-0041), falling back to the
file name, which treats every film as its own patient. Films may be PNG,
JPEG or DICOM (`.dcm`/`.dicom`, read by `dicom.read_film`).
"""

import logging
import pathlib
import re

import pandas as pd

from jaxcxr.data import dicom
from jaxcxr.data.splits import Examples, check_patient_disjoint, split_patients
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", *dicom.DICOM_SUFFIXES)
SPLIT_FOLDERS = ("train", "val", "test")
_PATIENT_PATTERNS = (re.compile(r"^(person\d+)_", re.IGNORECASE),
                     re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", re.IGNORECASE))


def patient_id(file_name: str) -> str:
  for pattern in _PATIENT_PATTERNS:
    match = pattern.match(file_name)
    if match:
      return match.group(1)
  return pathlib.Path(file_name).stem


def is_film(path: pathlib.Path) -> bool:
  """A file a folder scan takes: by its suffix, or a DICOM by its header (PACS exports often have no suffix)."""
  return path.suffix.lower() in IMAGE_SUFFIXES or dicom.is_dicom(path)


def _hidden(path: pathlib.Path, below: pathlib.Path) -> bool:
  """A name starting with a dot, here or in a folder between `below` and it: macOS's `._*` AppleDouble files,
  `.DS_Store`, a `.git` folder; never a film."""
  return any(part.startswith(".") for part in path.relative_to(below).parts)


def _class_files(folder: pathlib.Path) -> list[tuple[str, str, str]]:
  """(class name, relative id, path) for every image below `folder`'s class folders, at any depth (a class
  folder may hold batches in subfolders), hidden files left out."""
  rows = []
  loose = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_film(p))
  if loose:  # a film's class is its folder: one beside the class folders has none
    log.warning("%s: %d film(s) lie beside the class folders, not in one (e.g. %s); they have no class and are not "
                "read: move each into its class folder", folder, len(loose), loose[0])
  for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
    for f in sorted(class_dir.rglob("*")):
      if f.is_file() and not _hidden(f, class_dir) and is_film(f):
        rows.append((class_dir.name, f"{folder.name}/{f.relative_to(folder).as_posix()}", str(f)))
  return rows


def _split_folders(root: pathlib.Path) -> dict[str, str]:
  """Split name -> folder name for the split folders in `root`, matched in any case (`TEST/` is the test
  split); two folders for one split are refused."""
  found: dict[str, str] = {}
  for folder in sorted(p for p in root.iterdir() if p.is_dir()):
    split = folder.name.lower()
    if split in SPLIT_FOLDERS:
      if split in found:
        raise UserError(f"{root} holds both {found[split]}/ and {folder.name}/ for the {split} split; merge them "
                        "into one folder")
      found[split] = folder.name
  return {s: found[s] for s in SPLIT_FOLDERS if s in found}


def read_tree(root: pathlib.Path, positive_class: str, val_fraction: float, test_fraction: float,
              seed: int, check_leaks: bool = True) -> pd.DataFrame:
  """Every image with label, patient, split and official_split (the folder it came from)."""
  if (root / "chest_xray").is_dir() and not _split_folders(root):
    root = root / "chest_xray"  # the Kaggle archive unpacks with one extra level
  split_dirs = _split_folders(root)
  if split_dirs:
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                    and p.name.lower() not in SPLIT_FOLDERS)
    if others:
      log.warning("%s: folder(s) %s beside %s are not read; only %s are split folders", root, ", ".join(others),
                  "/, ".join(split_dirs.values()) + "/", "/, ".join(SPLIT_FOLDERS) + "/")
  rows = []
  for split, folder in [(s, root / name) for s, name in split_dirs.items()] or [(None, root)]:
    rows += [(split, *r) for r in _class_files(folder)]
  if not rows:
    raise UserError(f"no images in {root}: expected class folders (e.g. NORMAL/, PNEUMONIA/) of "
                    f"{'/'.join(IMAGE_SUFFIXES)} files, optionally inside train/ val/ test/")
  table = pd.DataFrame(rows, columns=["official_split", "class", "image_id", "path"])
  classes = sorted(set(table["class"]))
  if positive_class not in classes:
    raise UserError(f"data.positive_class={positive_class!r} is not a class folder in {root} "
                    f"(found {', '.join(classes)}); set it to one of those")
  if len(classes) < 2:
    raise UserError(f"{root} has one class folder, {classes[0]}/, where a binary task needs two: "
                    f"data.positive_class={positive_class} and one negative (e.g. NORMAL/) beside it")
  if len(classes) > 2:
    raise UserError(f"{root} has {len(classes)} class folders ({', '.join(classes)}) where a binary task has two: "
                    f"data.positive_class={positive_class} and one negative; move the others out rather than "
                    "have them counted as negatives")
  table["label"] = (table["class"] == positive_class).astype(float)
  table["patient_id"] = table["path"].map(lambda p: patient_id(pathlib.Path(p).name))
  table["view"] = None
  if "test" in split_dirs:
    table["split"] = "test"
    pool = table["official_split"] != "test"
    of = split_patients(table.loc[pool, "patient_id"], {"val": val_fraction, "train": 1 - val_fraction}, seed)
    table.loc[pool, "split"] = table.loc[pool, "patient_id"].map(of)
    shared = set(table.loc[pool, "patient_id"]) & set(table.loc[~pool, "patient_id"])
    if shared:
      log.warning("%d patient ID(s) of the published test folder also appear in train/val (e.g. %s); "
                  "the test split is kept as published", len(shared), sorted(shared)[0])
    if check_leaks:
      check_patient_disjoint(table[pool])
  else:
    if split_dirs:
      log.warning("%s has %s but no test/ folder: the test split is carved from all films by patient "
                  "(data.test_fraction=%s), not published", root, "/, ".join(split_dirs.values()) + "/", test_fraction)
    of = split_patients(table["patient_id"], {"test": test_fraction, "val": val_fraction,
                                                  "train": 1 - val_fraction - test_fraction}, seed)
    table["split"] = table["patient_id"].map(of)
    table["official_split"] = table["split"]
    if check_leaks:
      check_patient_disjoint(table)
  return table


def read(data_cfg, root: pathlib.Path, check_leaks: bool = True) -> Examples:
  """The reader `data.dataset=kermany` names: `read_tree` with the config's class and split settings."""
  return Examples(read_tree(root, data_cfg.positive_class, data_cfg.val_fraction, data_cfg.test_fraction,
                            data_cfg.split_seed, check_leaks))
