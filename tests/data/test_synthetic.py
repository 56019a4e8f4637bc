import logging

import pandas as pd
import pytest

from jaxcxr.data import nih, synthetic


def test_written_in_nih_format(tiny_nih):
  csv = tiny_nih / "Data_Entry_2017.csv"
  header = csv.read_text().splitlines()[0]
  assert header.startswith("Image Index,Finding Labels,Follow-up #,Patient ID") and header.endswith(",")
  table = nih.read_metadata(csv)
  assert table["patient_id"].value_counts().max() > 1  # several films per patient
  assert table["image_id"].str.fullmatch(r"\d{8}_\d{3}\.png").all()
  assert set(nih.index_images(tiny_nih)) == set(table["image_id"])
  assert not (tiny_nih / "test_list.txt").read_text().endswith("\n")


def test_contains_rgba_and_16bit_films(tmp_path):
  from PIL import Image
  root = synthetic.ensure_dataset(tmp_path, synthetic.SyntheticSpec(num_patients=60, image_size=32))
  modes = {Image.open(p).mode for p in (root / "images").iterdir()}
  assert "L" in modes and "RGBA" in modes and any(m.startswith("I") for m in modes)


def test_deterministic_and_reused(tmp_path):
  spec = synthetic.SyntheticSpec(num_patients=10, image_size=32)
  a = synthetic.ensure_dataset(tmp_path / "a", spec)
  b = synthetic.ensure_dataset(tmp_path / "b", spec)
  assert (a / "Data_Entry_2017.csv").read_text() == (b / "Data_Entry_2017.csv").read_text()
  for f in (a / "images").iterdir():
    assert f.read_bytes() == (b / "images" / f.name).read_bytes()
  mtime = (a / synthetic.MARKER).stat().st_mtime_ns
  assert synthetic.ensure_dataset(tmp_path / "a", spec) == a
  assert (a / synthetic.MARKER).stat().st_mtime_ns == mtime


def test_official_lists_are_patient_disjoint(tiny_nih):
  table = nih.load_examples(tiny_nih, "Pneumonia", "no_finding", (), 0.15, 0.2, 0)
  assert set(table["split"]) == {"train", "val", "test"}
  assert table.groupby("patient_id")["split"].nunique().max() == 1
  assert isinstance(table, pd.DataFrame) and table["label"].isin([0, 1]).all()


@pytest.mark.parametrize("lost", ["a film", "opacities.csv"])
def test_a_damaged_synthetic_dataset_is_generated_again(tmp_path, caplog, lost):
  spec = synthetic.SyntheticSpec(num_patients=10, image_size=32)
  root = synthetic.ensure_dataset(tmp_path, spec)
  whole = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
  victim = sorted((root / "images").iterdir())[0] if lost == "a film" else root / synthetic.OPACITIES
  victim.unlink()
  with caplog.at_level(logging.WARNING):
    assert synthetic.ensure_dataset(tmp_path, spec) == root
  assert "is damaged" in caplog.text and "generating it again" in caplog.text
  assert {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()} == whole
  assert [p.name for p in tmp_path.iterdir()] == [root.name]  # the damaged copy is gone
