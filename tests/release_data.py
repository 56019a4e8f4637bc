"""Generated CheXpert, MIMIC-CXR-JPG and RSNA Pneumonia folders in the published layouts, column names and value
codes (see docs/data.md), with the synthetic default's drawn films: a "Pneumonia" film carries the drawn
opacities (and, for RSNA, a box around each).

  python -m tests.release_data chexpert /tmp/CheXpert-v1.0-small
  python -m tests.release_data mimic /tmp/mimic-cxr-jpg
  python -m tests.release_data rsna /tmp/rsna-pneumonia
"""

import gzip
import pathlib
import sys

import numpy as np
from PIL import Image

from jaxcxr.data import mimic, rsna, synthetic
from tests.support import write_dicom

LABELER_COLUMNS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices")  # the labeler's order in both releases
CODES = ("1.0", "0.0", "-1.0", "")


def _labels(rng: np.random.Generator, uncertain: bool, pneumonia: bool) -> dict[str, str]:
  """One film's labeler values: Pneumonia as drawn, the others at random, No Finding where nothing is positive."""
  codes = CODES if uncertain else ("1.0", "0.0", "")
  values = {c: str(rng.choice(codes, p=[0.1, 0.3, 0.1, 0.5] if uncertain else [0.1, 0.4, 0.5]))
            for c in LABELER_COLUMNS[1:]}
  values["Pneumonia"] = "1.0" if pneumonia else str(rng.choice(["0.0", ""]))
  values["No Finding"] = "" if "1.0" in values.values() else "1.0"
  return values


def _film(rng: np.random.Generator, size: int, pneumonia: bool) -> Image.Image:
  return Image.fromarray(np.round(synthetic.render_film(rng, size, pneumonia) * 255).astype(np.uint8))


def write_chexpert(root: pathlib.Path, train_patients: int = 30, valid_patients: int = 12, size: int = 64,
                   seed: int = 0) -> pathlib.Path:
  """`root` as CheXpert-v1.0-small unpacks: train.csv, valid.csv, train/ and valid/ (valid.csv without
  uncertain labels, as published). About 40% of the frontal films have pneumonia; each study has one frontal
  film and sometimes a lateral."""
  rng = np.random.default_rng(seed)
  header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *LABELER_COLUMNS]
  patient = 0
  for split, csv, count in (("train", "train.csv", train_patients), ("valid", "valid.csv", valid_patients)):
    lines = [",".join(header)]
    for _ in range(count):
      patient += 1
      for study in range(1, int(rng.integers(1, 3)) + 1):
        views = [("Frontal", str(rng.choice(["AP", "PA"])))] + ([("Lateral", "")] if rng.uniform() < 0.3 else [])
        for view, (frontal, ap_pa) in enumerate(views, start=1):
          pneumonia = frontal == "Frontal" and rng.uniform() < 0.4
          relative = f"{split}/patient{patient:05d}/study{study}/view{view}_{frontal.lower()}.jpg"
          (root / relative).parent.mkdir(parents=True, exist_ok=True)
          _film(rng, size, pneumonia).save(root / relative, quality=95)
          labels = _labels(rng, split == "train", pneumonia)
          lines.append(",".join([f"CheXpert-v1.0-small/{relative}", str(rng.choice(["Male", "Female"])),
                                 str(int(rng.integers(18, 90))), frontal, ap_pa,
                                 *(labels[c] for c in LABELER_COLUMNS)]))
    (root / csv).write_text("\n".join(lines) + "\n")
  return root


def write_mimic(root: pathlib.Path, patients: int = 40, size: int = 64, seed: int = 0) -> pathlib.Path:
  """`root` as MIMIC-CXR-JPG v2.0.0 holds it: the three tables (the labels gzipped, as published) and
  files/pNN/pSUBJECT/sSTUDY/DICOM_ID.jpg, the official split about 60/20/20 by patient."""
  rng = np.random.default_rng(seed)
  split_rows, label_rows, meta_rows = ["dicom_id,study_id,subject_id,split"], \
      [",".join(["subject_id", "study_id", *sorted(LABELER_COLUMNS)])], \
      ["dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns"]
  for p in range(patients):
    subject = str(10000032 + 7919 * p)
    split = str(rng.choice(["train", "validate", "test"], p=[0.6, 0.2, 0.2]))
    for s in range(int(rng.integers(1, 3))):
      study = str(50000000 + 1000 * p + s)
      pneumonia = rng.uniform() < 0.4
      labels = _labels(rng, True, pneumonia)
      label_rows.append(",".join([subject, study, *(labels[c] for c in sorted(LABELER_COLUMNS))]))
      for position in ["PA" if rng.uniform() < 0.6 else "AP"] + (["LATERAL"] if rng.uniform() < 0.3 else []):
        dicom = "-".join(f"{int(rng.integers(0, 2**32)):08x}" for _ in range(5))
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        _film(rng, size, pneumonia and position != "LATERAL").save(path, quality=95)
        split_rows.append(f"{dicom},{study},{subject},{split}")
        meta_rows.append(f"{dicom},{subject},{study},CHEST (PA AND LAT),{position},{size},{size}")
  with gzip.open(root / f"{mimic.TABLES['labels']}.gz", "wt") as f:
    f.write("\n".join(label_rows) + "\n")
  (root / mimic.TABLES["split"]).write_text("\n".join(split_rows) + "\n")
  (root / mimic.TABLES["metadata"]).write_text("\n".join(meta_rows) + "\n")
  return root


def write_rsna(root: pathlib.Path, films: int = 80, size: int = 96, seed: int = 0) -> pathlib.Path:
  """`root` as the challenge's stage 2 training set unpacks: the labels and class CSVs and a folder of DICOMs
  (CR, 8-bit MONOCHROME2), about 40% with pneumonia, each drawn opacity boxed at two sigmas from its centre."""
  rng = np.random.default_rng(seed)
  (root / rsna.IMAGES).mkdir(parents=True, exist_ok=True)
  labels, classes = ["patientId,x,y,width,height,Target"], ["patientId,class"]
  for _ in range(films):
    pid = "-".join(f"{int(rng.integers(0, 16**k)):0{k}x}" for k in (8, 4, 4, 4, 12))
    pneumonia = rng.uniform() < 0.4
    film, opacities = synthetic.render_film_with_opacities(rng, size, pneumonia)
    write_dicom(root / rsna.IMAGES / f"{pid}.dcm", np.round(film * 255).astype(np.uint8), Modality="CR",
                BodyPartExamined="CHEST", ViewPosition=str(rng.choice(["PA", "AP"])))
    if pneumonia:
      for row, col, sigma in opacities:
        x, y = max(col - 2 * sigma, 0.0), max(row - 2 * sigma, 0.0)
        w, h = min(col + 2 * sigma, size) - x, min(row + 2 * sigma, size) - y
        labels.append(f"{pid},{x:.1f},{y:.1f},{w:.1f},{h:.1f},1")
        classes.append(f"{pid},Lung Opacity")
    else:
      labels.append(f"{pid},,,,,0")
      classes.append(f"{pid},{rng.choice(['Normal', 'No Lung Opacity / Not Normal'], p=[0.7, 0.3])}")
  (root / rsna.LABELS).write_text("\n".join(labels) + "\n")
  (root / rsna.CLASSES).write_text("\n".join(classes) + "\n")
  return root


if __name__ == "__main__":
  kind, folder = sys.argv[1], pathlib.Path(sys.argv[2])
  folder.mkdir(parents=True, exist_ok=True)
  {"chexpert": write_chexpert, "mimic": write_mimic, "rsna": write_rsna}[kind](folder)
  print(f"wrote a generated {kind} folder in {folder}")
