"""The NIH reader on small files written to the real release's rules (see shared/DATASETS.md)."""

import numpy as np
import pandas as pd
import pytest

from jaxcxr.data import nih
from jaxcxr.errors import UserError
from tests.support import ROWS, write_release


@pytest.mark.parametrize("original", [True, False])
def test_both_csv_releases_read_the_same(tmp_path, original):
  table = nih.read_metadata(nih.find_metadata(write_release(tmp_path, original=original)))
  assert list(table.columns) == ["image_id", "labels", "patient_id", "view"]
  assert len(table) == len(ROWS)
  assert table.loc[2, "labels"] == "Pneumonia|Effusion" and table.loc[1, "view"] == "AP"


def test_v2020_file_is_preferred(tmp_path):
  write_release(tmp_path, original=True)
  write_release(tmp_path, original=False)
  assert nih.find_metadata(tmp_path).name == "Data_Entry_2017_v2020.csv"


def test_missing_columns_are_named(tmp_path):
  (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Labels\na.png,No Finding\n")
  with pytest.raises(UserError, match="lacks column.*'Finding Labels'.*'Patient ID'"):
    nih.read_metadata(tmp_path / "Data_Entry_2017.csv")


def test_no_image_folder_means_no_paths(tmp_path):
  root = write_release(tmp_path)
  for f in (root / "images").iterdir():
    f.unlink()
  (root / "images").rmdir()
  assert nih.index_images(root) == {}


def test_missing_metadata_file(tmp_path):
  with pytest.raises(UserError, match="no NIH metadata"):
    nih.find_metadata(tmp_path)


@pytest.mark.parametrize("kaggle", [False, True])
def test_both_image_layouts_are_indexed(tmp_path, kaggle):
  index = nih.index_images(write_release(tmp_path, kaggle=kaggle))
  assert sorted(index) == sorted(n for n, *_ in ROWS)
  assert ("images_00" in index["00000002_000.png"]) == kaggle


@pytest.mark.parametrize("trailing_newline", [False, True])
def test_split_lists_with_or_without_final_newline(tmp_path, trailing_newline):
  root = write_release(tmp_path, trailing_newline=trailing_newline)
  assert nih.read_name_list(root / "test_list.txt") == ["00000006_000.png", "00000007_000.png"]


def test_label_policies_match_whole_names():
  labels = pd.Series([n for _, n, *_ in ROWS])
  pneu = nih.binary_labels(labels, "Pneumonia", "no_finding")
  np.testing.assert_array_equal(pneu.to_numpy(), [1, 0, 1, np.nan, 0, np.nan, 0, 1])
  rest = nih.binary_labels(labels, "Pneumonia", "rest")
  np.testing.assert_array_equal(rest.to_numpy(), [1, 0, 1, 0, 0, 0, 0, 1])  # Pneumothorax is not Pneumonia
  anyf = nih.binary_labels(labels, "any", "no_finding")
  np.testing.assert_array_equal(anyf.to_numpy(), [1, 0, 1, 1, 0, 1, 0, 1])
  thick = nih.binary_labels(labels, "Pleural_Thickening", "rest")
  assert thick.sum() == 1


def test_official_split_with_validation_carved_by_patient(tmp_path):
  table = nih.load_examples(write_release(tmp_path), "Pneumonia", "no_finding", (), 0.4, 0.2, seed=0)
  assert set(table.loc[table.split == "test", "image_id"]) == {"00000006_000.png", "00000007_000.png"}
  assert table.groupby("patient_id")["split"].nunique().max() == 1
  meta = nih.read_metadata(nih.find_metadata(tmp_path))
  split = nih.assign_splits(meta, tmp_path, val_fraction=0.4, test_fraction=0.2, seed=0)
  val_patients = set(meta.loc[split == "val", "patient_id"])
  assert len(val_patients) == 2 and val_patients <= {"1", "2", "3", "4", "5"}  # 40% of 5 patients
  assert "00000003_000.png" not in set(table.image_id)  # neither Pneumonia nor No Finding


def test_without_lists_a_seeded_patient_split(tmp_path):
  root = write_release(tmp_path, lists=False)
  a = nih.load_examples(root, "any", "rest", (), 0.25, 0.25, seed=3)
  b = nih.load_examples(root, "any", "rest", (), 0.25, 0.25, seed=3)
  pd.testing.assert_frame_equal(a, b)
  assert a.groupby("patient_id")["split"].nunique().max() == 1


def test_view_filter(tmp_path):
  table = nih.load_examples(write_release(tmp_path), "Pneumonia", "no_finding", ("PA",), 0.4, 0.2, 0)
  assert set(table["view"]) == {"PA"}


def test_leakage_guard_names_a_shared_patient(tmp_path):
  root = write_release(tmp_path)
  (root / "test_list.txt").write_text("00000001_001.png\n00000007_000.png\n")  # patient 1 in both
  (root / "train_val_list.txt").write_text("\n".join(n for n, *_ in ROWS[:6] if n != "00000001_001.png"))
  with pytest.raises(UserError, match="patient.*more than one split.*patient 1"):
    nih.load_examples(root, "Pneumonia", "no_finding", (), 0.4, 0.2, 0)


def test_list_naming_unknown_images(tmp_path):
  root = write_release(tmp_path)
  (root / "test_list.txt").write_text("99999999_000.png\n")
  with pytest.raises(UserError, match="absent from the metadata"):
    nih.load_examples(root, "Pneumonia", "no_finding", (), 0.4, 0.2, 0)


def test_only_one_split_list_is_an_error(tmp_path):
  root = write_release(tmp_path)
  (root / "test_list.txt").unlink()
  with pytest.raises(UserError, match="not its partner"):
    nih.load_examples(root, "Pneumonia", "no_finding", (), 0.4, 0.2, 0)


def test_missing_image_files_have_no_path(tmp_path):
  root = write_release(tmp_path)
  (root / "images" / "00000002_000.png").unlink()
  table = nih.load_examples(root, "Pneumonia", "no_finding", (), 0.4, 0.2, 0)
  assert table.loc[table.image_id == "00000002_000.png", "path"].isna().all()


def test_a_csv_cut_short_mid_row_is_named(tmp_path):
  root = write_release(tmp_path)
  csv = root / "Data_Entry_2017.csv"
  csv.write_bytes(csv.read_bytes()[:-40])  # the last row loses its last fields and its newline
  with pytest.raises(UserError, match="Data_Entry_2017.csv is cut short: its last line .* ends mid-row"):
    nih.read_metadata(csv)
  csv.write_bytes(csv.read_bytes().rsplit(b"\n", 1)[0])  # whole rows, no final newline: fine
  assert len(nih.read_metadata(csv)) == len(ROWS) - 1
