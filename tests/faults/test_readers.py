"""Bad datasets: each is refused in one line naming the problem (or, where the data is usable, warned about)."""

import numpy as np
import pytest
from PIL import Image

from jaxcxr.configs import default, kermany
from jaxcxr.data import datasets, describe, images, medmnist, nih
from jaxcxr.errors import UserError
from tests.support import ROWS, plain_film, train_run, write_kermany, write_npz, write_release


def _one_line(error) -> str:
  text = str(error.value)
  assert "\n" not in text
  return text


def test_a_csv_that_is_not_utf8_is_named(tmp_path):
  root = write_release(tmp_path)
  csv = root / "Data_Entry_2017.csv"
  csv.write_bytes(csv.read_bytes().replace(b"Pneumothorax", b"Pneumothorax\xff\xfe"))
  with pytest.raises(UserError, match="is not a readable UTF-8 CSV") as error:
    nih.read_metadata(csv)
  _one_line(error)


def test_a_csv_with_only_its_header_says_it_is_empty(tmp_path):
  csv = tmp_path / "Data_Entry_2017.csv"
  csv.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n")
  with pytest.raises(UserError, match="has its header but no rows: the CSV is empty"):
    nih.read_metadata(csv)


@pytest.mark.parametrize("patient", ["", "  "])
def test_a_row_without_a_patient_id_is_refused(tmp_path, patient):
  csv = tmp_path / "Data_Entry_2017.csv"
  csv.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
                 "00000001_000.png,No Finding,0,1,58,M,PA\n"
                 f"00000002_000.png,Pneumonia,0,{patient},81,F,AP\n")
  with pytest.raises(UserError, match=r"has 1 row\(s\) without a Patient ID, e.g. image 00000002_000.png; splits "
                                      r"keep each patient's films together") as error:
    nih.read_metadata(csv)
  _one_line(error)


def test_spaces_around_an_image_name_are_dropped_and_its_twin_is_caught(tmp_path):
  csv = tmp_path / "Data_Entry_2017.csv"
  header = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
  csv.write_text(header + " 00000001_000.png ,No Finding,0,1,58,M,PA\n")
  assert nih.read_metadata(csv)["image_id"].tolist() == ["00000001_000.png"]
  csv.write_text(header + " 00000001_000.png,No Finding,0,1,58,M,PA\n00000001_000.png,Pneumonia,0,1,58,M,PA\n")
  with pytest.raises(UserError, match="lists image 00000001_000.png twice"):
    nih.read_metadata(csv)


def test_labels_that_are_not_nih_findings_are_warned_about(tmp_path, caplog):
  root = write_release(tmp_path)
  csv = root / "Data_Entry_2017.csv"
  csv.write_text(csv.read_text().replace("Pleural_Thickening", "Thickening|COVID-19"))
  nih.read_metadata(csv)
  assert "1 row(s) name labels that are not NIH findings (COVID-19, Thickening)" in caplog.text


def test_the_same_image_in_two_folders_is_refused(tmp_path):
  root = write_release(tmp_path, kaggle=True)
  copy = root / "images_002" / "images" / "00000001_000.png"
  copy.write_bytes((root / "images_001" / "images" / "00000001_000.png").read_bytes())
  with pytest.raises(UserError, match="image 00000001_000.png is in two folders"):
    nih.index_images(root)


def test_rows_in_neither_split_list_are_left_out_with_a_warning(tmp_path, caplog):
  root = write_release(tmp_path)
  listed = (root / "train_val_list.txt").read_text().split()
  (root / "train_val_list.txt").write_text("\n".join(listed[1:]) + "\n")
  table = nih.read_release(root, "Pneumonia", "no_finding", 0.4, 0.2, 0)
  assert f"1 metadata row(s) are in neither train_val_list.txt nor test_list.txt (e.g. {listed[0]})" in caplog.text
  assert table.loc[table["image_id"] == listed[0], "split"].isna().all()


def test_an_image_in_both_split_lists_is_refused(tmp_path):
  root = write_release(tmp_path)
  (root / "test_list.txt").write_text("00000006_000.png\n00000007_000.png\n00000001_000.png\n")
  with pytest.raises(UserError, match=r"1 image\(s\) are in both train_val_list.txt and test_list.txt, e.g. "
                                      "00000001_000.png"):
    nih.read_release(root, "Pneumonia", "no_finding", 0.4, 0.2, 0)


def test_an_extra_class_folder_is_refused_not_counted_as_negative(tmp_path):
  root = write_kermany(tmp_path)
  (root / "train" / "COVID").mkdir()
  Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "train" / "COVID" / "covid1.png")
  with pytest.raises(UserError, match=r"has 3 class folders \(COVID, NORMAL, PNEUMONIA\) where a binary task"):
    datasets.READERS["kermany"](_kermany_cfg(), root)


def _kermany_cfg():
  return kermany.get_config().data


@pytest.mark.parametrize("shape", [(1, 1), (4000, 10), (10, 300), (15, 15)])
def test_a_file_that_cannot_be_a_chest_film_is_a_bad_image(tmp_path, shape):
  path = tmp_path / "film.png"
  Image.fromarray(np.zeros(shape, np.uint8)).save(path)
  with pytest.raises(images.BadImageError, match=rf"{shape[1]}x{shape[0]} pixels is not a chest film"):
    images.load_film(path, 32)


def test_float_rgb_npz_is_refused_before_its_pixels_are_converted(tmp_path):
  path = write_npz(tmp_path / "pneumoniamnist.npz")
  contents = dict(np.load(path))
  contents["train_images"] = np.random.default_rng(0).uniform(size=(*contents["train_images"].shape, 3))
  np.savez(path, **contents)
  with pytest.raises(UserError, match="train_images holds float64 pixels; MedMNIST films are uint8"):
    medmnist.read_npz(path)


@pytest.mark.parametrize("content", [b"PK\x03\x04 damaged zip", b"not a zip at all", b""])
def test_an_npz_that_is_no_npz_is_named(tmp_path, content):
  path = tmp_path / "pneumoniamnist.npz"
  path.write_bytes(content)
  with pytest.raises(UserError, match=r"is not a \.npz file \(NumPy") as error:
    medmnist.read_npz(path)
  _one_line(error)


def test_a_single_array_npy_saved_as_npz_is_named(tmp_path):
  path = tmp_path / "pneumoniamnist.npz"
  with open(path, "wb") as f:
    np.save(f, np.zeros((3, 28, 28), np.uint8))
  with pytest.raises(UserError, match=r"holds one array \(.npy\)"):
    medmnist.read_npz(path)


def _nih_config(tiny_config, root):
  tiny_config.data.cache_dir = str(root / "cache")
  return tiny_config


def _release_with_films(tmp_path, size=64):
  root = write_release(tmp_path / "nih", lists=False)
  for png in (root / "images").glob("*.png"):
    Image.fromarray(plain_film((size, size), 100)).save(png)
  return root


def test_bad_images_of_every_split_are_listed_in_one_run(tiny_config, tmp_path):
  root = _release_with_films(tmp_path)
  tiny_config.data.val_fraction, tiny_config.data.test_fraction = 0.3, 0.3
  tiny_config.data.negatives = "rest"
  table = nih.read_release(root, "Pneumonia", "rest", 0.3, 0.3, 0)
  for split in ("train", "test"):
    (root / "images" / table.loc[table["split"] == split, "image_id"].iloc[0]).write_bytes(b"broken")
  with pytest.raises(UserError, match=r"2 unreadable image\(s\): 1 in train, 1 in test \(first: .*; all listed in "
                                      r".*bad-images-train.txt, .*bad-images-test.txt\)"):
    train_run(_nih_config(tiny_config, tmp_path), tmp_path / "run", str(root))


def test_a_missing_image_is_named(tiny_config, tmp_path):
  root = _release_with_films(tmp_path)
  tiny_config.data.negatives = "rest"
  missing = "00000003_000.png"
  (root / "images" / missing).unlink()
  tiny_config.data.on_bad_image = "error"
  with pytest.raises(UserError, match=f"{missing}: listed in the metadata but not found on disk"):
    train_run(_nih_config(tiny_config, tmp_path), tmp_path / "run", str(root))


def test_a_training_split_without_positives_is_refused(tiny_config, tmp_path):
  root = _release_with_films(tmp_path)
  tiny_config.data.target = "Hernia"  # no film of the release has it
  tiny_config.data.negatives = "rest"
  with pytest.raises(UserError, match="the training split holds no positive films .* nothing to learn"):
    train_run(_nih_config(tiny_config, tmp_path), tmp_path / "run", str(root))


def test_describe_reports_a_patient_in_two_splits_instead_of_stopping(tmp_path):
  root = write_release(tmp_path)
  (root / "test_list.txt").write_text("00000006_000.png\n00000007_000.png\n00000001_001.png")
  (root / "train_val_list.txt").write_text("\n".join(n for n, *_ in ROWS[:6] if n != "00000001_001.png"))
  report = describe.describe(default.get_config().data, str(root), tmp_path / "work")
  assert report["published_shared_patients"]["test/train_val"] == 1  # patient 1: a film in each
  assert "patients shared between published splits: test/train_val 1" in describe.render(report)
  with pytest.raises(UserError, match="appear in more than one split"):  # training still refuses it
    nih.read_release(root, "Pneumonia", "no_finding", 0.4, 0.2, 0)
