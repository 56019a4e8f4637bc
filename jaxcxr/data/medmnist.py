"""PneumoniaMNIST and other MedMNIST `.npz` files: images already decoded, labels 1 = positive.

The file holds `{train,val,test}_images` (N, S, S) uint8 and
`{train,val,test}_labels` (N, 1); S is 28, 64, 128 or 224. It is read with
`allow_pickle=False`, so a crafted file cannot run code. There are no patient
IDs; each image is its own "patient" and the published splits are kept.
Every row's `path` is the .npz itself, so the cache's fingerprint follows the file.
"""

import pathlib
import zipfile

import numpy as np
import pandas as pd

from jaxcxr.data.splits import Examples
from jaxcxr.errors import UserError

SPLIT_KEYS = {"train": "train", "val": "val", "test": "test"}


def find_npz(path: pathlib.Path) -> pathlib.Path:
  """`path` itself if it is an .npz file, else the single .npz inside the folder."""
  if path.is_file():
    return path
  found = sorted(path.glob("*.npz"))
  if len(found) != 1:
    raise UserError(f"expected exactly one .npz file in {path}, found {len(found)}; pass the file itself "
                    "as --data_dir")
  return found[0]


def read_npz(path: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{split: (images uint8 (N, S, S), labels int32 (N,))}, validated."""
  try:
    with open(path, "rb") as f:
      head = f.read(6)
    if head != b"\x93NUMPY" and not zipfile.is_zipfile(path):  # not .npy either: numpy's advice would be pickle
      raise UserError(f"{path} is not a .npz file (NumPy's zip of named arrays; this one is neither a zip nor a "
                      ".npy array); pass a MedMNIST .npz as downloaded")
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
      raise ValueError("it holds one array (.npy), not MedMNIST's named arrays")
    with loaded as npz:
      contents = {k: npz[k] for k in npz.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise UserError(f"{path} is not a readable .npz file ({e}); pass a MedMNIST .npz as downloaded") from e
  splits = {}
  for split in SPLIT_KEYS:
    keys = (f"{split}_images", f"{split}_labels")
    missing = [k for k in keys if k not in contents]
    if missing:
      raise UserError(f"{path} lacks {', '.join(missing)}; expected a MedMNIST file with "
                      "train/val/test _images and _labels")
    images, labels = contents[keys[0]], contents[keys[1]]
    if labels.ndim == 2 and labels.shape[1] > 1:
      raise UserError(f"{path}: {keys[1]} has {labels.shape[1]} labels per film, a multi-label MedMNIST file (as "
                      "ChestMNIST's 14 findings); jaxcxr reads binary MedMNIST files such as PneumoniaMNIST. For "
                      "the 14 findings, train on the NIH release with data.target=all")
    labels = labels.reshape(-1)
    if not len(images):
      raise UserError(f"{path}: {keys[0]} holds no films; a MedMNIST file has films in each of its train, val and "
                      "test splits")
    if images.dtype != np.uint8:  # before any conversion, which would destroy float or 16-bit pixels
      raise UserError(f"{path}: {keys[0]} holds {images.dtype} pixels; MedMNIST films are uint8 (0-255), so this "
                      "file was written by another tool: convert it to uint8 first")
    if images.ndim == 4 and images.shape[-1] in (1, 3):
      images = images.mean(axis=-1).round().astype(np.uint8)  # grayscale or RGB MedMNIST variants
    if images.ndim != 3 or images.dtype != np.uint8 or len(images) != len(labels):
      raise UserError(f"{path}: {keys[0]} must be uint8 (N, S, S) with one label each, got "
                      f"{images.dtype} {images.shape} and {len(labels)} labels")
    if not np.isin(labels, (0, 1)).all():
      raise UserError(f"{path}: {keys[1]} must be 0/1 for a binary task, found {np.unique(labels)[:5]}")
    splits[split] = (images, labels.astype(np.int32))
  return splits


def read(data_cfg, root: pathlib.Path, check_leaks: bool = True) -> Examples:
  """The reader `data.dataset=medmnist` names: the .npz at (or in) `root`, its films already decoded."""
  del data_cfg, check_leaks  # the file fixes labels and splits, and every film is its own patient
  path = find_npz(root)
  arrays = read_npz(path)
  frames = [pd.DataFrame({"image_id": [f"{s}-{i}" for i in range(len(y))], "label": y.astype(float),
                          "split": s, "official_split": s, "view": None, "path": str(path),
                          "array_index": np.arange(len(y))})
            for s, (_, y) in arrays.items()]
  table = pd.concat(frames, ignore_index=True)
  table["patient_id"] = table["image_id"]
  return Examples(table, {s: images for s, (images, _) in arrays.items()})
