import logging

import numpy as np
import pytest
from PIL import Image

from jaxcxr.data import folders
from jaxcxr.errors import UserError
from tests.support import KERMANY, plain_film, write_kermany


@pytest.mark.parametrize("name, patient", [
    ("person123_bacteria_456.jpeg", "person123"), ("person1_virus_6.jpeg", "person1"),
    ("IM-0115-0001.jpeg", "IM-0115"), ("NORMAL2-IM-0041-0001.jpeg", "NORMAL2-IM-0041"),
    ("scan.png", "scan")])
def test_patient_ids_from_file_names(name, patient):
  assert folders.patient_id(name) == patient


def test_kermany_tree_keeps_test_and_resplits_train_val_by_patient(tmp_path):
  table = folders.read_tree(write_kermany(tmp_path / "chest_xray"), "PNEUMONIA", 0.4, 0.2, seed=0)
  assert len(table) == 13
  test = table[table.split == "test"]
  assert sorted(test.image_id.str.split("/").str[-1]) == sorted(sum(KERMANY["test"].values(), []))
  assert test.label.tolist().count(1.0) == 1
  pool = table[table.split != "test"]
  assert set(pool.split) == {"train", "val"}
  assert pool.groupby("patient_id")["split"].nunique().max() == 1  # person1's two films stay together
  assert set(pool.official_split) == {"train", "val"}


def test_archive_root_is_found_one_level_up(tmp_path):
  write_kermany(tmp_path / "chest_xray")
  assert len(folders.read_tree(tmp_path, "PNEUMONIA", 0.4, 0.2, 0)) == 13


def test_plain_class_folders_get_a_patient_split(tmp_path):
  tree = {"": {"NORMAL": [f"IM-{i:04d}-0001.jpeg" for i in range(10)],
               "PNEUMONIA": [f"person{i}_virus_1.jpeg" for i in range(10)]}}
  for cls, names in tree[""].items():
    (tmp_path / cls).mkdir()
    for name in names:
      Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / cls / name)
  table = folders.read_tree(tmp_path, "PNEUMONIA", 0.2, 0.2, seed=1)
  assert set(table.split) == {"train", "val", "test"}
  assert table.groupby("patient_id")["split"].nunique().max() == 1


def test_unknown_positive_class_lists_the_folders(tmp_path):
  with pytest.raises(UserError, match="data.positive_class='COVID'.*found NORMAL, PNEUMONIA"):
    folders.read_tree(write_kermany(tmp_path), "COVID", 0.2, 0.2, 0)


def test_folder_without_images(tmp_path):
  (tmp_path / "NORMAL").mkdir()
  with pytest.raises(UserError, match="no images in"):
    folders.read_tree(tmp_path, "PNEUMONIA", 0.2, 0.2, 0)


def test_films_below_a_class_folder_are_read_at_any_depth_and_hidden_files_left_out(tmp_path):
  root = write_kermany(tmp_path / "chest_xray")
  batch = root / "train" / "PNEUMONIA" / "batch2"
  batch.mkdir()
  for name in ("person7_bacteria_1.jpeg", "person8_virus_2.jpeg"):
    Image.fromarray(plain_film((30, 40), 90)).save(batch / name)
  (root / "train" / "PNEUMONIA" / "._person1_bacteria_1.jpeg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
  (root / "train" / ".thumbnails").mkdir()
  Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "train" / ".thumbnails" / "x.jpeg")
  table = folders.read_tree(root, "PNEUMONIA", 0.4, 0.2, seed=0)
  assert len(table) == 13 + 2
  nested = table[table.image_id.str.contains("batch2")]
  assert sorted(nested.image_id) == ["train/PNEUMONIA/batch2/person7_bacteria_1.jpeg",
                                     "train/PNEUMONIA/batch2/person8_virus_2.jpeg"]
  assert nested.label.tolist() == [1.0, 1.0] and sorted(nested.patient_id) == ["person7", "person8"]
  assert not table.image_id.str.contains("/\\.").any()


def test_split_folders_match_in_any_case_and_others_beside_them_are_named(tmp_path, caplog):
  root = write_kermany(tmp_path / "chest_xray")
  (root / "test").rename(root / "TEST")
  (root / "extra" / "NORMAL").mkdir(parents=True)
  table = folders.read_tree(root, "PNEUMONIA", 0.4, 0.2, seed=0)
  assert sorted(table[table.split == "test"].image_id.str.split("/").str[-1]) == \
      sorted(sum(KERMANY["test"].values(), []))  # TEST/ is the published test split, not dropped
  assert "folder(s) extra beside train/, val/, TEST/ are not read" in caplog.text
  (root / "test").mkdir()
  with pytest.raises(UserError, match=r"holds both TEST/ and test/ for the test split; merge them"):
    folders.read_tree(root, "PNEUMONIA", 0.4, 0.2, seed=0)


def test_a_tree_of_one_class_is_refused(tmp_path):
  root = write_kermany(tmp_path / "chest_xray")
  for split in ("train", "val", "test"):
    for film in (root / split / "NORMAL").iterdir():
      film.unlink()
    (root / split / "NORMAL").rmdir()
  with pytest.raises(UserError, match=r"has one class folder, PNEUMONIA/, where a binary task needs two"):
    folders.read_tree(root, "PNEUMONIA", 0.4, 0.2, seed=0)


def test_split_folders_without_a_test_folder_say_the_test_split_is_carved(tmp_path, caplog):
  root = write_kermany(tmp_path / "chest_xray")
  for film in (root / "test").rglob("*.jpeg"):
    film.rename(root / "train" / film.parent.name / film.name)
  for folder in sorted((root / "test").rglob("*"), reverse=True):
    folder.rmdir()
  (root / "test").rmdir()
  table = folders.read_tree(root, "PNEUMONIA", 0.4, 0.2, seed=0)
  assert "has train/, val/ but no test/ folder: the test split is carved from all films by patient" in caplog.text
  assert len(table) == 13 and (table["split"] == "test").any()


def test_films_beside_the_class_folders_are_named_not_dropped_in_silence(tmp_path, caplog):
  root = write_kermany(tmp_path / "chest_xray")
  Image.fromarray(plain_film((30, 40), 60)).save(root / "train" / "person9_virus_9.jpeg")
  with caplog.at_level(logging.WARNING):
    table = folders.read_tree(root, "PNEUMONIA", 0.25, 0.2, 0)
  assert "1 film(s) lie beside the class folders" in caplog.text and "person9_virus_9.jpeg" in caplog.text
  assert not table["path"].str.endswith("person9_virus_9.jpeg").any()
