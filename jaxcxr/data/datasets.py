"""From a config and a data path to the three cached splits a run trains and evaluates on.

`data.dataset` picks the reader: `nih` (ChestX-ray14 layout; also the embedded
synthetic default), `kermany` (class-per-folder trees such as Kermany's
chest_xray/) or `medmnist` (PneumoniaMNIST-style .npz).
"""

import hashlib
import logging
import pathlib

import ml_collections
import pandas as pd

from jaxcxr.data import cache, folders, medmnist, nih, synthetic
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

DATASETS = ("nih", "kermany", "medmnist")


def cache_dir_for(data_cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(data_cfg.cache_dir).expanduser() if data_cfg.cache_dir else workdir / "cache"


def resolve_source(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                   cache_dir: pathlib.Path) -> pathlib.Path:
  """The dataset path: the user's `--data_dir`, or the embedded synthetic NIH-format default."""
  if data_cfg.dataset not in DATASETS:
    raise UserError(f"data.dataset={data_cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
  if data_dir:
    root = pathlib.Path(data_dir).expanduser()
    if not root.exists():
      raise UserError(f"--data_dir={data_dir} does not exist; pass the folder that holds the dataset, "
                      "or omit --data_dir for the embedded synthetic default")
    if root.is_dir() and not _readable(root):
      raise UserError(f"--data_dir={data_dir} is empty or unreadable; check the path and its permissions")
    return root
  if data_cfg.dataset != "nih":
    raise UserError(f"data.dataset={data_cfg.dataset!r} needs --data_dir; the embedded default is NIH-format")
  root = synthetic.ensure_dataset(cache_dir, synthetic.SyntheticSpec(**data_cfg.synthetic.to_dict()))
  log.warning("No --data_dir given: using the embedded SYNTHETIC NIH-format dataset in %s. Its "
              "films are generated drawings, and its metrics say nothing about medicine.", root)
  return root


def _readable(path: pathlib.Path) -> bool:
  try:
    return next(iter(path.iterdir()), None) is not None
  except OSError:
    return False


def _npz_table(path: pathlib.Path) -> tuple[pd.DataFrame, dict]:
  arrays = medmnist.read_npz(medmnist.find_npz(path))
  frames = [pd.DataFrame({"image_id": [f"{s}-{i}" for i in range(len(y))], "label": y.astype(float),
                          "split": s, "official_split": s, "view": None, "path": None})
            for s, (_, y) in arrays.items()]
  table = pd.concat(frames, ignore_index=True)
  table["patient_id"] = table["image_id"]
  return table, arrays


def read_table(data_cfg: ml_collections.ConfigDict, root: pathlib.Path) -> pd.DataFrame:
  """Every example with image_id, path, label (NaN = excluded by the label policy), patient_id,
  view, split and official_split."""
  if data_cfg.dataset == "nih":
    return nih.read_release(root, data_cfg.target, data_cfg.negatives, data_cfg.val_fraction,
                            data_cfg.test_fraction, data_cfg.split_seed)
  if data_cfg.dataset == "kermany":
    return folders.read_tree(root, data_cfg.positive_class, data_cfg.val_fraction, data_cfg.test_fraction,
                             data_cfg.split_seed)
  return _npz_table(root)[0]


def views_of(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  return tuple(v.strip() for v in data_cfg.views.split(",") if v.strip())


def load_splits(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                workdir: pathlib.Path) -> dict[str, cache.CachedSplit]:
  """Reads, splits and caches the dataset; every split is non-empty when this returns."""
  cache_dir = cache_dir_for(data_cfg, workdir)
  root = resolve_source(data_cfg, data_dir, cache_dir)
  if data_cfg.dataset == "medmnist":
    table, arrays = _npz_table(root)
  else:
    table, arrays = read_table(data_cfg, root), None
  examples = nih.select_examples(table, views_of(data_cfg))
  if arrays is not None:  # one fingerprint of the .npz for all three splits' caches
    npz = medmnist.find_npz(root)
    stat = npz.stat()
    npz_source = hashlib.sha256(f"{npz.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
  elif len(examples) and examples["path"].isna().all():
    raise UserError(f"no image files found for the metadata in {root}: expected images/*.png or "
                    "images_001/images/*.png beside the CSV (NIH), or class folders (kermany)")
  splits = {}
  for name in nih.SPLITS:
    rows = examples[examples["split"] == name]
    if rows.empty:
      raise UserError(f"split {name!r} is empty after applying data.target={data_cfg.target!r}, "
                      f"data.negatives={data_cfg.negatives!r}, data.views={data_cfg.views!r}; "
                      "loosen the filters or check the split lists")
    if arrays is not None:
      splits[name] = cache.build_from_arrays(arrays[name][0], rows, name, cache_dir, data_cfg.image_size,
                                             data_cfg.aspect, npz_source)
    else:
      splits[name] = cache.build_or_load(rows, name, cache_dir, data_cfg.image_size, data_cfg.aspect,
                                         data_cfg.on_bad_image, data_cfg.workers or None)
    split = splits[name]
    log.info("split %-5s %6d images, %5d positive (%.1f%%), %d skipped", name, len(split),
             split.num_positive, 100.0 * split.num_positive / len(split), split.skipped)
    if split.num_positive in (0, len(split)):
      log.warning("split %r has only one class: AUC is undefined on it", name)
  return splits
