"""From a config and a data directory to the three cached splits a run trains and evaluates on."""

import logging
import pathlib

import ml_collections
import pandas as pd

from jaxcxr.data import cache, nih, synthetic
from jaxcxr.errors import UserError

log = logging.getLogger(__name__)


def resolve_source(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                   cache_dir: pathlib.Path) -> pathlib.Path:
  """The dataset folder: the user's `--data_dir`, or the embedded synthetic NIH-format default."""
  if data_dir:
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
      raise UserError(f"--data_dir={data_dir} does not exist or is not a folder; pass the folder that "
                      "holds the dataset, or omit --data_dir for the embedded synthetic default")
    if not _readable(root) or not any(root.iterdir()):
      raise UserError(f"--data_dir={data_dir} is empty or unreadable; check the path and its permissions")
    return root
  root = synthetic.ensure_dataset(cache_dir, synthetic.SyntheticSpec(**data_cfg.synthetic.to_dict()))
  log.warning("No --data_dir given: using the embedded SYNTHETIC NIH-format dataset in %s. Its "
                  "films are generated drawings, and its metrics say nothing about medicine.", root)
  return root


def _readable(path: pathlib.Path) -> bool:
  try:
    next(iter(path.iterdir()), None)
    return True
  except OSError:
    return False


def load_examples(data_cfg: ml_collections.ConfigDict, root: pathlib.Path) -> pd.DataFrame:
  """The labelled example table (image_id, path, label, patient_id, split) of the configured dataset."""
  if data_cfg.dataset != "nih":
    raise UserError(f"data.dataset={data_cfg.dataset!r} is not supported; use 'nih'")
  views = tuple(v.strip() for v in data_cfg.views.split(",") if v.strip())
  return nih.load_examples(root, data_cfg.target, data_cfg.negatives, views, data_cfg.val_fraction,
                           data_cfg.test_fraction, data_cfg.split_seed)


def load_splits(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                workdir: pathlib.Path) -> dict[str, cache.CachedSplit]:
  """Reads, splits and caches the dataset; every split is non-empty when this returns."""
  cache_dir = pathlib.Path(data_cfg.cache_dir).expanduser() if data_cfg.cache_dir else workdir / "cache"
  examples = load_examples(data_cfg, resolve_source(data_cfg, data_dir, cache_dir))
  splits = {}
  for name in nih.SPLITS:
    rows = examples[examples["split"] == name]
    if rows.empty:
      raise UserError(f"split {name!r} is empty after applying data.target={data_cfg.target!r}, "
                      f"data.negatives={data_cfg.negatives!r}, data.views={data_cfg.views!r}; "
                      "loosen the filters or check the split lists")
    splits[name] = cache.build_or_load(rows, name, cache_dir, data_cfg.image_size, data_cfg.aspect,
                                       data_cfg.on_bad_image, data_cfg.workers or None)
    split = splits[name]
    log.info("split %-5s %6d images, %5d positive (%.1f%%), %d skipped", name, len(split),
                 split.num_positive, 100.0 * split.num_positive / max(len(split), 1), split.skipped)
    if split.num_positive in (0, len(split)):
      log.warning("split %r has only one class: AUC is undefined on it", name)
  return splits
