"""From a config and a data path to the three cached splits a run trains and evaluates on.

`data.dataset` picks the reader: `nih` (ChestX-ray14 layout; also the embedded
synthetic default), `kermany` (class-per-folder trees such as Kermany's
chest_xray/), `medmnist` (PneumoniaMNIST-style .npz), `chexpert` or `mimic`
(MIMIC-CXR-JPG; both labelled by the CheXpert labeler), or `rsna` (the RSNA
Pneumonia Detection Challenge's DICOMs and boxes). Every reader returns
the same `splits.Examples`, so nothing below this registry knows which one ran.

Datasets of the common label space train together when joined with `+` (`data.dataset=nih+chexpert`, one
--data_dir for each, comma-separated in that order; an empty one for NIH is the synthetic default). Each keeps
its own split, its patients are kept apart from the others' by its name before their IDs, and a finding it does
not label is masked (`findings.MISSING`) for its films.
"""

import logging
import pathlib

import ml_collections
import numpy as np
import pandas as pd

from jaxcxr.data import cache, chexpert, findings, folders, medmnist, mimic, nih, rsna, splits, synthetic
from jaxcxr.errors import UserError
from jaxcxr.fsutil import ensure_writable_dir

log = logging.getLogger(__name__)

NIH = "nih"  # also the format of the embedded synthetic default
CHEXPERT, MIMIC, RSNA = "chexpert", "mimic", "rsna"
READERS = {NIH: nih.read, "kermany": folders.read, "medmnist": medmnist.read, CHEXPERT: chexpert.read,
           MIMIC: mimic.read, RSNA: rsna.read}
DATASETS = tuple(READERS)
READS_A_FILE = ("medmnist",)  # a MedMNIST --data_dir may be its .npz itself
TITLES = {NIH: "NIH", "kermany": "Kermany", "medmnist": "MedMNIST", CHEXPERT: "CheXpert", MIMIC: "MIMIC-CXR",
          RSNA: "RSNA Pneumonia"}
LABELER = (CHEXPERT, MIMIC)  # labelled by the CheXpert labeler: data.uncertain applies
# What data.views may list, per dataset that records views; a group name stands for several values.
VIEWS = {NIH: nih.VIEWS, CHEXPERT: chexpert.VIEWS, MIMIC: mimic.VIEWS}
VIEW_GROUPS = {CHEXPERT: chexpert.VIEW_GROUPS, MIMIC: chexpert.VIEW_GROUPS}
# What each logit of a run predicts, by name: NIH's findings, a class folder, MedMNIST's label 1, the labeler's.
_TARGET_NAMES = {NIH: lambda d: nih.targets_of(d.target) or (d.target,), "kermany": lambda d: (d.positive_class,),
                 "medmnist": lambda d: ("positive",), RSNA: lambda d: (rsna.TARGET,),
                 **{name: lambda d: findings.labeler_targets(d.target) or (d.target,) for name in LABELER}}
# What data.target may name, per dataset; the others have one target each (data.positive_class for kermany).
TARGETS = {NIH: nih.TARGETS, **{name: findings.labeler_target_choices() for name in LABELER}, RSNA: (rsna.TARGET,)}


JOINT = "+"
JOINABLE = (NIH, CHEXPERT, MIMIC, RSNA)  # the datasets of the common label space (`findings.COMMON`)


def parts_of(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The datasets data.dataset names: one, or several joined with `+`."""
  return tuple(p.strip() for p in data_cfg.dataset.split(JOINT))


def is_joint(data_cfg: ml_collections.ConfigDict) -> bool:
  return len(parts_of(data_cfg)) > 1


def _part_config(data_cfg: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """One joined dataset's own data config: every finding it labels where the joint target is all of them."""
  part = ml_collections.ConfigDict({**data_cfg.to_dict(), "dataset": name})
  if data_cfg.target == nih.ALL_FINDINGS and nih.ALL_FINDINGS not in TARGETS[name]:
    part.target = TARGETS[name][0]  # a dataset of one finding (RSNA's Pneumonia)
  return part


def target_choices(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...] | None:
  """What data.target may name (a joint dataset: `all`, or a finding every part labels); None where the dataset
  has one target (kermany: data.positive_class; medmnist: label 1)."""
  if not is_joint(data_cfg):
    return TARGETS.get(data_cfg.dataset)
  shared = set.intersection(*(set(TARGETS[p]) for p in parts_of(data_cfg)))
  return (nih.ALL_FINDINGS, *(f for f in findings.COMMON if f in shared))


def target_names(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The names of a run's targets, one per logit, from its config alone (no data read)."""
  if not is_joint(data_cfg):
    return _TARGET_NAMES[data_cfg.dataset](data_cfg)
  if data_cfg.target != nih.ALL_FINDINGS:
    return (data_cfg.target,)
  labelled = {t for p in parts_of(data_cfg) for t in target_names(_part_config(data_cfg, p))}
  return tuple(f for f in findings.COMMON if f in labelled)


def uses_synthetic(data_cfg: ml_collections.ConfigDict, data_dir: str | None) -> bool:
  """Whether the run reads the embedded synthetic films (no --data_dir, or an empty one for a joined NIH)."""
  return not data_dir or (is_joint(data_cfg) and "" in [d.strip() for d in data_dir.split(",")])


def cache_dir_for(data_cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(data_cfg.cache_dir).expanduser() if data_cfg.cache_dir else workdir / "cache"


def resolve_source(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                   cache_dir: pathlib.Path) -> pathlib.Path:
  """The dataset path: the user's `--data_dir`, or the embedded synthetic NIH-format default."""
  if data_dir:
    root = pathlib.Path(data_dir).expanduser()
    if not root.exists():
      raise UserError(f"--data_dir={data_dir} does not exist; pass the folder that holds the dataset, "
                      "or omit --data_dir for the embedded synthetic default")
    if root.is_file() and data_cfg.dataset not in READS_A_FILE:
      raise UserError(f"--data_dir={data_dir} is a file; data.dataset={data_cfg.dataset} reads a folder (see "
                      "docs/data.md): pass the folder that holds the dataset")
    if root.is_dir() and not _readable(root):
      raise UserError(f"--data_dir={data_dir} is empty or unreadable; check the path and its permissions")
    return root
  if data_cfg.dataset != NIH:
    raise UserError(f"data.dataset={data_cfg.dataset!r} needs --data_dir; the embedded default is NIH-format")
  root = synthetic.ensure_dataset(cache_dir, synthetic.SyntheticSpec(**data_cfg.synthetic.to_dict()))
  log.warning("No --data_dir given: using the embedded SYNTHETIC NIH-format dataset in %s. Its "
              "films are generated drawings, and its metrics say nothing about medicine.", root)
  return root


def synthetic_opacities(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                        workdir: pathlib.Path) -> dict[str, list[tuple[float, float, float]]] | None:
  """Where the embedded synthetic dataset's opacities are (`synthetic.read_opacities`); None for real data."""
  if data_dir or is_joint(data_cfg):
    return None
  spec = synthetic.SyntheticSpec(**data_cfg.synthetic.to_dict())
  return synthetic.read_opacities(synthetic.dataset_folder(cache_dir_for(data_cfg, workdir), spec))


def localisation_boxes(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                       image_ids: list[str]) -> dict[str, list[tuple[float, float, float, float]]] | None:
  """The radiologists' boxes of the films `image_ids`, in the cached films' pixels, where the dataset has them
  (RSNA); None for the others."""
  if data_cfg.dataset != RSNA or not data_dir:  # a joint run's films are named by dataset too: not scored
    return None
  return rsna.boxes_in_film(pathlib.Path(data_dir).expanduser(), image_ids, data_cfg.image_size, data_cfg.aspect)


def _readable(path: pathlib.Path) -> bool:
  try:
    return next(iter(path.iterdir()), None) is not None
  except OSError:
    return False


def read(data_cfg: ml_collections.ConfigDict, root: pathlib.Path, check_leaks: bool = True) -> splits.Examples:
  """Every example of the dataset at `root`, as `data.dataset`'s reader returns it; a patient in two splits
  stops it unless `check_leaks` is off (for `describe`, which counts them)."""
  return READERS[data_cfg.dataset](data_cfg, root, check_leaks)


def read_source(data_cfg: ml_collections.ConfigDict, data_dir: str | None, cache_dir: pathlib.Path,
                check_leaks: bool = True) -> tuple[splits.Examples, str]:
  """The examples of `data_dir` (`resolve_source`, then `read`), or of each joined dataset's; and where they are."""
  if data_cfg.cache_dir:  # the user's folder, checked before a synthetic dataset or a cache is written there
    ensure_writable_dir(cache_dir, "data.cache_dir")
  if not is_joint(data_cfg):
    root = resolve_source(data_cfg, data_dir, cache_dir)
    return read(data_cfg, root, check_leaks), str(root)
  parts = parts_of(data_cfg)
  dirs = [d.strip() for d in data_dir.split(",")] if data_dir else []
  if len(dirs) != len(parts):
    raise UserError(f"data.dataset={data_cfg.dataset} joins {len(parts)} datasets but --data_dir names {len(dirs)} "
                    f"folder(s); pass one for each, comma-separated in the same order (an empty one for NIH: the "
                    "synthetic default)")
  names, tables, roots = target_names(data_cfg), [], []
  for name, folder in zip(parts, dirs):
    part = _part_config(data_cfg, name)
    root = resolve_source(part, folder or None, cache_dir)
    examples = read(part, root, check_leaks)
    table = examples.table.copy()
    for column in ("image_id", "patient_id"):  # one dataset's patient 1 is not another's
      table[column] = f"{name}:" + table[column].astype(str)
    if data_cfg.target == nih.ALL_FINDINGS:
      if not examples.targets:  # a dataset of one finding: its label is that finding's
        table[target_names(part)[0]] = table["label"].fillna(findings.MISSING)
      for finding in names:
        if finding not in table:
          table[finding] = findings.MISSING
    tables.append(table)
    roots.append(f"{name}: {root}")
  table = pd.concat(tables, ignore_index=True)
  if check_leaks:
    splits.check_patient_disjoint(table)
  return splits.Examples(table, targets=names if data_cfg.target == nih.ALL_FINDINGS else ()), "; ".join(roots)


def views_of(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The views data.views lists, as they are spelled in the table (a group such as CheXpert's `frontal` opened)."""
  groups = VIEW_GROUPS.get(data_cfg.dataset, {})
  return tuple(dict.fromkeys(value for v in listed_views(data_cfg) for value in groups.get(v, (v,))))


def listed_views(data_cfg: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The names data.views lists, as written."""
  return tuple(v.strip() for v in data_cfg.views.split(",") if v.strip())


def load_splits(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                workdir: pathlib.Path) -> dict[str, cache.CachedSplit]:
  """Reads, splits and caches the dataset; every split is non-empty when this returns."""
  cached = cache_splits(data_cfg, data_dir, cache_dir_for(data_cfg, workdir))
  train = cached["train"]
  if not train.targets and train.num_positive in (0, len(train)):
    raise UserError(f"the training split holds {'no' if train.num_positive == 0 else 'only'} positive films "
                    f"({len(train)} films after data.target={data_cfg.target!r}, data.negatives="
                    f"{data_cfg.negatives!r}), so there is nothing to learn; check the labels or the target")
  return cached


WHOLE = "all"  # `cache_splits`'s one split of every film, whatever its published split (external validation)


def cache_splits(data_cfg: ml_collections.ConfigDict, data_dir: str | None, cache_dir: pathlib.Path,
                 which: tuple[str, ...] = splits.SPLITS) -> dict[str, cache.CachedSplit]:
  """The splits `which` names (or WHOLE, every film at once), read, selected and cached; each non-empty."""
  examples, root = read_source(data_cfg, data_dir, cache_dir)
  selected = splits.select_examples(examples.table, views_of(data_cfg), examples.targets)
  if len(selected) and selected["path"].isna().all() and not examples.decoded:
    raise UserError(f"no image files found for the metadata in {root}: expected images/*.png or "
                    "images_001/images/*.png beside the CSV (NIH), class folders (kermany), or the films the CSVs "
                    "name below it (chexpert: train/ valid/; mimic: files/)")
  cached, bad = {}, []
  for name in which:
    rows = selected if name == WHOLE else selected[selected["split"] == name]
    if rows.empty:
      raise UserError(f"split {name!r} is empty after applying data.target={data_cfg.target!r}, "
                      f"data.negatives={data_cfg.negatives!r}, data.views={data_cfg.views!r}; "
                      "loosen the filters or check the split lists")
    films = None if name == WHOLE else examples.films(name, rows)
    if name == WHOLE and examples.decoded:
      films = np.concatenate([examples.films(s, selected[selected["split"] == s]) for s in splits.SPLITS])
      rows = pd.concat([selected[selected["split"] == s] for s in splits.SPLITS])
    try:
      split = cached[name] = cache.build_or_load(rows, name, cache_dir, data_cfg.image_size, data_cfg.aspect,
                                                 data_cfg.on_bad_image, data_cfg.workers or None,
                                                 films=films, targets=examples.targets)
    except cache.BadImages as e:  # go on, so one run lists the bad films of every split
      bad.append(e)
      continue
    log.info("split %-5s %6d images, %5d positive (%.1f%%), %d skipped", name, len(split),
             split.num_positive, 100.0 * split.num_positive / len(split), split.skipped)
    one_class = [t for t, n in split.positives_per_target().items()
                 if n in (0, int((split.labels[:, split.targets.index(t)] >= 0).sum()))]
    if split.num_positive in (0, len(split)) or one_class:
      log.warning("split %r has only one class%s: AUC is undefined on it", name,
                  f" for {len(one_class)} finding(s) ({', '.join(one_class)})" if one_class else "")
  if len(bad) == 1:
    raise bad[0]
  if bad:
    raise UserError(f"{sum(e.count for e in bad)} unreadable image(s): "
                    f"{', '.join(f'{e.count} in {e.split}' for e in bad)} (first: {bad[0].first}; all listed in "
                    f"{', '.join(str(e.listing) for e in bad)}); fix or remove them, or pass "
                    "--config.data.on_bad_image=skip")
  return cached
