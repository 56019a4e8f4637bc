import numpy as np
import pytest

from jaxcxr.data import medmnist
from jaxcxr.errors import UserError
from tests.support import write_npz


def test_reads_the_three_splits(tmp_path):
  splits = medmnist.read_npz(write_npz(tmp_path / "pneumoniamnist.npz"))
  assert {k: v[0].shape for k, v in splits.items()} == {"train": (12, 28, 28), "val": (4, 28, 28),
                                                        "test": (6, 28, 28)}
  assert splits["test"][1].tolist() == [0, 1, 0, 1, 0, 1] and splits["test"][1].dtype == np.int32


def test_folder_with_one_npz(tmp_path):
  write_npz(tmp_path / "x.npz")
  assert medmnist.find_npz(tmp_path).name == "x.npz"
  write_npz(tmp_path / "y.npz")
  with pytest.raises(UserError, match="exactly one .npz"):
    medmnist.find_npz(tmp_path)


def test_missing_keys_are_named(tmp_path):
  np.savez(tmp_path / "a.npz", train_images=np.zeros((1, 4, 4), np.uint8))
  with pytest.raises(UserError, match="lacks train_labels"):
    medmnist.read_npz(tmp_path / "a.npz")


def test_pickled_objects_are_refused(tmp_path):
  np.savez(tmp_path / "a.npz", train_images=np.array([{"x": 1}], dtype=object))
  with pytest.raises(UserError, match="not a readable .npz"):
    medmnist.read_npz(tmp_path / "a.npz")


def test_non_binary_labels(tmp_path):
  path = write_npz(tmp_path / "a.npz")
  data = dict(np.load(path))
  data["val_labels"][0] = 7
  np.savez(path, **data)
  with pytest.raises(UserError, match="must be 0/1"):
    medmnist.read_npz(path)


def test_not_an_npz(tmp_path):
  (tmp_path / "a.npz").write_text("hello")  # a text file named .npz: numpy would say "use allow_pickle"
  with pytest.raises(UserError, match=r"a.npz is not a .npz file \(NumPy's zip of named arrays; this one is "
                                      r"neither a zip nor a .npy array\)") as e:
    medmnist.read_npz(tmp_path / "a.npz")
  assert "pickle" not in str(e.value)


def _rewritten(path, **arrays):
  data = dict(np.load(path))
  data.update(arrays)
  np.savez(path, **data)
  return path


def test_a_multi_label_file_is_named_as_such(tmp_path):
  path = _rewritten(write_npz(tmp_path / "chestmnist.npz"), train_labels=np.zeros((12, 14), np.uint8))
  with pytest.raises(UserError, match=r"train_labels has 14 labels per film, a multi-label MedMNIST file .*"
                                      r"data.target=all"):
    medmnist.read_npz(path)


def test_an_empty_split_is_named_as_the_files_not_the_configs(tmp_path):
  path = _rewritten(write_npz(tmp_path / "a.npz"), val_images=np.zeros((0, 28, 28), np.uint8),
                    val_labels=np.zeros((0, 1), np.uint8))
  with pytest.raises(UserError, match=r"a.npz: val_images holds no films; a MedMNIST file has films in each"):
    medmnist.read_npz(path)
