"""`python run.py --mode=describe`: what a dataset holds, from its metadata alone (no image is decoded).

Reports, overall, per published split and per training split: images,
patients, positives, negatives, films the label policy leaves out, views,
listed films missing on disk, and how many patients two splits share. For a
dataset of several findings, also each finding of the common label space
(`findings.COMMON`): its positive, negative and uncertain films, or that the
dataset does not label it (missing: masked, never negative).
"""

import itertools
import pathlib

import ml_collections
import pandas as pd

from jaxcxr.data import datasets, findings, nih, splits
from jaxcxr.fsutil import atomic_write_json


def summarize(rows: pd.DataFrame) -> dict:
  """Counts for one group of rows."""
  out = {"images": int(len(rows)), "patients": int(rows["patient_id"].nunique()),
         "positives": int((rows["label"] == 1).sum()), "negatives": int((rows["label"] == 0).sum()),
         "excluded_by_label_policy": int(rows["label"].isna().sum())}
  if rows["view"].notna().any():
    out["views"] = {str(k): int(v) for k, v in rows["view"].value_counts().items()}
  out["missing_on_disk"] = int(rows["path"].isna().sum())
  return out


def shared_patients(table: pd.DataFrame, column: str) -> dict[str, int]:
  groups = {name: set(rows["patient_id"]) for name, rows in table.groupby(column)}
  return {f"{a}/{b}": len(groups[a] & groups[b]) for a, b in itertools.combinations(sorted(groups), 2)}


def label_space(data_cfg: ml_collections.ConfigDict, data_dir: str | None,
                workdir: pathlib.Path) -> dict[str, dict[str, int] | None]:
  """Per finding of the common label space, the films positive, negative and uncertain for it (read with every
  finding, uncertain ones masked); None for a finding the dataset does not label."""
  every = ml_collections.ConfigDict({**data_cfg.to_dict(), "uncertain": "ignore"})
  if nih.ALL_FINDINGS in datasets.target_choices(data_cfg):
    every.target = nih.ALL_FINDINGS
  examples, _ = datasets.read_source(every, data_dir, datasets.cache_dir_for(data_cfg, workdir), check_leaks=False)
  out = {}
  for finding in findings.COMMON:
    if finding not in (examples.targets or datasets.target_names(every)):
      out[finding] = None
      continue
    column = examples.table.loc[examples.table["label"].notna(), finding if examples.targets else "label"]
    out[finding] = {"positives": int((column == 1).sum()), "negatives": int((column == 0).sum()),
                    "uncertain": int((column == findings.MISSING).sum())}
  return out


def describe(data_cfg: ml_collections.ConfigDict, data_dir: str | None, workdir: pathlib.Path) -> dict:
  """The dataset report as a dict; see the module docstring."""
  examples, root = datasets.read_source(data_cfg, data_dir, datasets.cache_dir_for(data_cfg, workdir),
                                        check_leaks=False)  # reported below, not fatal here
  table = examples.table
  selected = splits.select_examples(table, datasets.views_of(data_cfg))
  report = {"dataset": data_cfg.dataset, "source": str(root), "target": data_cfg.target,
            "negatives": data_cfg.negatives, "all": summarize(table),
            "published_splits": {k: summarize(v) for k, v in table.groupby("official_split")},
            "published_shared_patients": shared_patients(table, "official_split"),
            "splits": {k: summarize(v) for k, v in selected.groupby("split")},
            "shared_patients": shared_patients(selected, "split")}
  if datasets.target_choices(data_cfg) is not None:
    report["label_space"] = label_space(data_cfg, data_dir, workdir)
  if "labels" in table:
    report["findings"] = {str(k): int(v) for k, v in
                          table["labels"].str.split("|").explode().str.strip().value_counts().items()}
  return report


def render(report: dict) -> str:
  """A small text table of the report, one row per split."""
  cols = ("images", "patients", "positives", "negatives", "excluded_by_label_policy", "missing_on_disk")
  titles = [c.replace("_by_label_policy", "") for c in cols]
  rows = [("all", report["all"])] + [(f"published {k}", v) for k, v in report["published_splits"].items()] \
      + [(k, v) for k, v in report["splits"].items()]
  cells = [[name] + [str(s.get(c, "-")) for c in cols] for name, s in rows]
  # Each column as wide as its longest cell, one space apart at least, so no two names run together.
  widths = [max(len(t), *(len(r[i]) for r in cells)) for i, t in enumerate(["", *titles])]
  lines = [f"{report['dataset']} at {report['source']} (target {report['target']}, negatives "
           f"{report['negatives']})",
           " ".join(t.rjust(w) if i else t.ljust(w) for i, (t, w) in enumerate(zip(["", *titles], widths)))]
  for row in cells:
    lines.append(" ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
  for title, shared in (("published", report["published_shared_patients"]), ("training", report["shared_patients"])):
    lines.append(f"patients shared between {title} splits: " +
                 (", ".join(f"{k} {v}" for k, v in shared.items()) or "n/a"))
  if "label_space" in report:
    space = report["label_space"]
    width = max(map(len, space))
    lines.append(f"{'finding'.ljust(width)}  positives  negatives  uncertain")
    lines += [f"{name.ljust(width)}  " + ("missing: not labelled by this dataset (masked)" if counts is None else
                                          "  ".join(str(counts[k]).rjust(9) for k in ("positives", "negatives",
                                                                                       "uncertain")))
              for name, counts in space.items()]
  return "\n".join(lines)


def run(data_cfg: ml_collections.ConfigDict, data_dir: str | None, workdir: pathlib.Path) -> dict:
  report = describe(data_cfg, data_dir, workdir)
  atomic_write_json(workdir / "describe.json", report)
  print(render(report))
  return report
