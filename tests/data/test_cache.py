import numpy as np
import pandas as pd
import pytest
from PIL import Image

from jaxcxr.data import cache
from jaxcxr.errors import UserError
from tests.support import plain_film


def _examples(folder, n=6):
  folder.mkdir(parents=True, exist_ok=True)
  rows = []
  for i in range(n):
    path = folder / f"{i:08d}_000.png"
    Image.fromarray(plain_film((24, 24), 30 * i % 256)).save(path)
    rows.append({"image_id": path.name, "path": str(path), "label": i % 2, "patient_id": str(i)})
  return pd.DataFrame(rows)


def _build(examples, cache_dir, **kw):
  args = dict(split="train", cache_dir=cache_dir, size=8, aspect="pad", on_bad_image="error", workers=1)
  return cache.build_or_load(examples, **{**args, **kw})


def test_build_then_reuse_without_decoding(tmp_path, monkeypatch):
  examples = _examples(tmp_path / "img")
  split = _build(examples, tmp_path / "cache")
  assert split.images.shape == (6, 8, 8) and isinstance(split.images, cache.FilmFile)
  np.testing.assert_array_equal(split.images[:, 4, 4], [0, 30, 60, 90, 120, 150])
  assert split.labels.tolist() == [0, 1, 0, 1, 0, 1] and split.patient_ids[2] == "2"
  monkeypatch.setattr(cache, "_decode_all", lambda *a, **k: pytest.fail("cache was rebuilt"))
  again = _build(examples, tmp_path / "cache")
  np.testing.assert_array_equal(again.images, split.images)


def test_a_cut_short_manifest_is_built_again(tmp_path, caplog):
  examples = _examples(tmp_path / "img")
  first = _build(examples, tmp_path / "cache")
  manifest = next((tmp_path / "cache").glob("train-*/manifest.json"))
  manifest.write_text(manifest.read_text()[:40])  # as a disk that filled mid-write, in an older version, left it
  again = _build(examples, tmp_path / "cache")
  assert "is damaged (its manifest.json does not read); building it again" in caplog.text
  np.testing.assert_array_equal(again.images, first.images)
  assert cache.open_split(manifest.parent).labels.tolist() == first.labels.tolist()  # replaced on disk too


def test_changed_source_rebuilds(tmp_path):
  examples = _examples(tmp_path / "img")
  _build(examples, tmp_path / "cache")
  Image.fromarray(plain_film((30, 30), 255)).save(examples.path[0])  # edited film
  assert _build(examples, tmp_path / "cache").images[0, 4, 4] == 255


def test_changed_settings_rebuild(tmp_path):
  examples = _examples(tmp_path / "img")
  assert _build(examples, tmp_path / "cache", size=8).images.shape[1] == 8
  assert _build(examples, tmp_path / "cache", size=12).images.shape[1] == 12


def test_killed_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
  examples = _examples(tmp_path / "img")

  def killed(*args, **kwargs):
    raise KeyboardInterrupt  # the process dies mid-build

  monkeypatch.setattr(cache, "_decode_all", killed)
  with pytest.raises(KeyboardInterrupt):
    _build(examples, tmp_path / "cache")
  assert not list((tmp_path / "cache").glob("*/manifest.json"))
  monkeypatch.undo()
  assert len(_build(examples, tmp_path / "cache")) == 6


def test_bad_images_error_lists_them_all(tmp_path):
  examples = _examples(tmp_path / "img")
  open(examples.path[1], "wb").write(b"garbage")
  examples.loc[3, "path"] = None  # listed in the metadata, missing on disk
  with pytest.raises(UserError, match="2 unreadable image.*on_bad_image=skip"):
    _build(examples, tmp_path / "cache")
  listing = (tmp_path / "cache" / "bad-images-train.txt").read_text().splitlines()
  assert len(listing) == 2 and "00000001_000.png" in listing[0] and "not found" in listing[1]
  assert not list((tmp_path / "cache").glob("*/manifest.json"))


def test_bad_images_skipped_and_counted(tmp_path):
  examples = _examples(tmp_path / "img")
  open(examples.path[1], "wb").write(b"garbage")
  split = _build(examples, tmp_path / "cache", on_bad_image="skip")
  assert len(split) == 5 and split.skipped == 1
  assert "00000001_000.png" not in split.image_ids
  np.testing.assert_array_equal(split.images[:, 4, 4], [0, 60, 90, 120, 150])


def test_parallel_build_matches_serial(tmp_path, monkeypatch):
  examples = _examples(tmp_path / "img", n=40)
  serial = _build(examples, tmp_path / "a")
  monkeypatch.setattr(cache, "MIN_IMAGES_FOR_POOL", 1)
  parallel = _build(examples, tmp_path / "b", workers=2)
  np.testing.assert_array_equal(serial.images, parallel.images)
