"""One label space across the datasets: the findings' common names, what a dataset does not label, and the
CheXpert labeler's value codes with their uncertain-label policies.

NIH's 14 findings keep NIH's spelling (so every NIH run's target names stay valid); CheXpert and MIMIC-CXR add
the five observations NIH lacks. A finding a dataset does not label is MISSING for its films, never negative:
under `data.target=all` a run learns, and is scored on, only the findings its dataset labels, and a film whose
finding is masked (an uncertain mention under `data.uncertain=ignore`) adds no loss and no metric for it.

The CheXpert labeler (Irvin et al. 2019, used by CheXpert and MIMIC-CXR-JPG) writes each observation as 1.0
(positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned, taken as negative). The uncertain
policies are the paper's U-Zeros, U-Ones and U-Ignore.
"""

import numpy as np
import pandas as pd

from jaxcxr.data import nih
from jaxcxr.errors import UserError

MISSING = -1  # a label column's value where the film's finding is unknown: masked out of loss and metrics
CHEXPERT_ONLY = ("Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "Support Devices")
COMMON = (*nih.FINDINGS, *CHEXPERT_ONLY)
# The labeler's column name -> the common name, for the 12 of its 14 columns in the common set ("No Finding"
# selects negatives; "Pleural Other" has no counterpart in any other dataset, so it is left out).
CHEXPERT_LABELER = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
                    "Edema": "Edema", "Pleural Effusion": "Effusion", "Pneumonia": "Pneumonia",
                    "Pneumothorax": "Pneumothorax", **{name: name for name in CHEXPERT_ONLY}}
NO_FINDING = "No Finding"
UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")  # data.uncertain: U-Ignore (masked), U-Zeros, U-Ones
_UNCERTAIN_AS = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}
LABELER_CODES = (1.0, 0.0, -1.0)


def labeler_values(table: pd.DataFrame, columns, source: str) -> pd.DataFrame:
  """The labeler's `columns` of `table` as floats, blanks as NaN; any other value is refused, naming it."""
  values = table[list(columns)].apply(pd.to_numeric, errors="coerce")
  for column in columns:
    raw = table[column]
    bad = raw.notna() & ~values[column].isin(LABELER_CODES) & (raw.astype(str).str.strip() != "")
    if bad.any():
      raise UserError(f"{source}: column {column!r} holds {raw[bad].iloc[0]!r} in {int(bad.sum())} row(s), where the "
                      "CheXpert labeler writes 1.0, 0.0, -1.0 (uncertain) or blank; the file is damaged or not "
                      "the labeler's output")
  return values


def resolve(values: pd.Series, uncertain: str) -> pd.Series:
  """One observation's labeler values as 1.0 / 0.0, blank as negative, uncertain by the policy (NaN: unknown)."""
  return values.fillna(0.0).replace(-1.0, _UNCERTAIN_AS[uncertain])


def labeler_targets(target: str) -> tuple[str, ...]:
  """The findings a labeler dataset's `data.target` names, one logit each; () for a single target."""
  return tuple(CHEXPERT_LABELER.values()) if target == nih.ALL_FINDINGS else ()


def labeler_target_choices() -> tuple[str, ...]:
  return (nih.ALL_FINDINGS, "any", *CHEXPERT_LABELER.values())


def label_table(values: pd.DataFrame, target: str, negatives: str, uncertain: str) -> pd.DataFrame:
  """The `label` column (and for `data.target=all` one column per finding, MISSING where unknown) of films
  whose labeler values are `values` (columns: the labeler's names, and No Finding)."""
  resolved = pd.DataFrame({common: resolve(values[column], uncertain) for column, common in CHEXPERT_LABELER.items()})
  no_finding = values[NO_FINDING].fillna(0.0) == 1.0 if NO_FINDING in values else ~(resolved == 1.0).any(axis=1)
  out = pd.DataFrame(index=values.index)
  if target == nih.ALL_FINDINGS:
    for common in resolved:
      out[common] = resolved[common].fillna(MISSING)
    out["label"] = (resolved == 1.0).any(axis=1).astype(float)
    return out
  positive = (resolved == 1.0).any(axis=1) if target == "any" else resolved[target] == 1.0
  unknown = resolved.isna().any(axis=1) if target == "any" else resolved[target].isna()
  negative = no_finding if negatives == "no_finding" else ~positive
  out["label"] = np.where(positive, 1.0, np.where(negative & ~unknown, 0.0, np.nan))
  return out
