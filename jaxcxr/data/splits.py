"""What every dataset reader returns, and the dataset-neutral split helpers: patient-disjoint assignment,
the leakage check, and the selection of the rows a run trains on."""

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxcxr.errors import UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Examples:
  """One reader's output: a row per film, and the films themselves where the format holds them decoded.

  `table` columns: image_id, label (1/0, NaN where the label policy leaves the
  film out), patient_id, view (None where unknown), split, official_split (the
  published split the film came from) and path (the file its pixels are read
  from; NaN where the file is missing). `decoded` holds each split's films for
  formats that store them decoded (MedMNIST's .npz), indexed by the table's
  `array_index`; it is empty where films are decoded from their files.

  `targets` names the findings of a multi-label task: the table then has one
  1/0 column per finding, named after it, and `label` is 1 for a film with any
  finding. It is empty for one target, whose labels are `label`.
  """
  table: pd.DataFrame
  decoded: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  targets: tuple[str, ...] = ()

  def films(self, split: str, rows: pd.DataFrame) -> np.ndarray | None:
    """The decoded films of `rows` of `split`, or None where they are read from their files."""
    return self.decoded[split][rows["array_index"].to_numpy()] if self.decoded else None


def split_patients(patients: Sequence[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
  """Assigns each patient to a split at random (seeded), so no patient spans two splits."""
  unique = np.array(sorted(set(patients)))
  order = np.random.default_rng(seed).permutation(len(unique))
  assignment, start = {}, 0
  names = list(fractions)
  for i, name in enumerate(names):
    count = len(unique) - start if i == len(names) - 1 else int(round(fractions[name] * len(unique)))
    for p in unique[order[start:start + count]]:
      assignment[p] = name
    start += count
  return assignment


def check_patient_disjoint(table: pd.DataFrame) -> None:
  """The leakage guard: any patient in two splits makes every metric optimistic, so stop."""
  per_patient = table.dropna(subset=["split"]).groupby("patient_id")["split"].nunique()
  shared = per_patient[per_patient > 1]
  if len(shared):
    raise UserError(f"{len(shared)} patient(s) appear in more than one split (e.g. patient "
                    f"{shared.index[0]}); the split lists leak patients, fix them or remove them")


def label_columns(targets: Sequence[str]) -> list[str]:
  """The table columns a model learns: one per finding of a multi-label task, else `label`."""
  return list(targets) or ["label"]


def select_examples(table: pd.DataFrame, views: Sequence[str] = (), targets: Sequence[str] = ()) -> pd.DataFrame:
  """The rows a run trains and evaluates on: labelled by the policy, in a split, of a kept view."""
  keep = table["label"].notna() & table["split"].notna()
  if views:
    keep &= table["view"].isin(list(views))
  table = table[keep].copy()
  for column in {"label", *targets}:
    table[column] = table[column].astype(np.int32)
  return table.reset_index(drop=True)
