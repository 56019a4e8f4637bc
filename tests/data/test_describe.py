"""describe on metadata built to the published NIH counts (DATASETS.md), no image files at all."""

import json

import numpy as np
import pytest

from jaxcxr.configs import default
from jaxcxr.data import describe
from tests.support import HEADER_V2020


# (patients, images, Pneumonia images, No Finding images) per official list.
OFFICIAL = {"train_val": (28_008, 86_524, 876, 50_500), "test": (2_797, 25_596, 555, 9_861)}


def write_nih_scale_metadata(root):
  """112,120 rows of 30,805 patients with the real split, label and patient counts."""
  lines, lists, first_patient = [HEADER_V2020 + ","], {}, 1
  rng = np.random.default_rng(0)
  for split, (patients, images, pneumonia, no_finding) in OFFICIAL.items():
    ids = np.arange(first_patient, first_patient + patients)
    first_patient += patients
    owner = np.concatenate([ids, rng.choice(ids, images - patients)])  # every patient has >= 1 film
    labels = (["Pneumonia", "Pneumonia|Infiltration"] * pneumonia)[:pneumonia] + ["No Finding"] * no_finding
    labels += (["Pneumothorax", "Effusion|Atelectasis", "Pleural_Thickening"] * images)[:images - len(labels)]
    names = []
    for k, (p, label) in enumerate(zip(owner, labels)):
      name = f"{p:08d}_{k:03d}.png"
      names.append(name)
      lines.append(f"{name},{label},{k},{p},{40 + k % 50},F,{'AP' if k % 3 else 'PA'},1024,1024,0.143,0.143,")
    lists[split] = names
  (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
  (root / "train_val_list.txt").write_text("\n".join(lists["train_val"]))
  (root / "test_list.txt").write_text("\n".join(lists["test"]) + "\n")
  return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  root = write_nih_scale_metadata(tmp_path_factory.mktemp("nih"))
  return describe.describe(default.get_config().data, str(root), tmp_path_factory.mktemp("work"))


def test_reports_the_published_nih_facts(report):
  assert report["all"]["images"] == 112_120
  assert report["all"]["patients"] == 30_805
  assert report["all"]["positives"] == 1_431
  assert report["all"]["negatives"] == 60_361
  assert report["findings"]["Pneumonia"] == 1_431 and report["findings"]["No Finding"] == 60_361
  published = report["published_splits"]
  assert published["train_val"]["images"] == 86_524 and published["test"]["images"] == 25_596
  assert published["train_val"]["patients"] == 28_008 and published["test"]["patients"] == 2_797
  assert report["published_shared_patients"] == {"test/train_val": 0}
  assert published["test"]["positives"] == 555 and published["test"]["negatives"] == 9_861
  assert report["all"]["missing_on_disk"] == 112_120  # metadata only: no film is on disk


def test_training_splits_are_patient_disjoint(report):
  assert set(report["splits"]) == {"train", "val", "test"}
  assert all(v == 0 for v in report["shared_patients"].values())
  assert report["splits"]["test"]["positives"] == 555
  assert report["splits"]["train"]["positives"] + report["splits"]["val"]["positives"] == 876


def test_render_and_json(report, tmp_path):
  text = describe.render(report)
  assert "112120" in text and "published test" in text
  json.dumps(report)  # JSON-serialisable


def test_rendered_columns_are_apart_and_aligned(report):
  lines = describe.render(report).splitlines()
  table = lines[1:next(i for i, l in enumerate(lines) if l.startswith("patients shared"))]
  assert table[0].split() == ["images", "patients", "positives", "negatives", "excluded", "missing_on_disk"]
  assert len({len(l) for l in table}) == 1  # right-aligned columns end at the same place on every row
  published = next(l for l in table if l.startswith("published train_val"))
  assert [int(v) for v in published.split()[2:]] == [86_524, 28_008, 876, 50_500, 35_148, 86_524]
