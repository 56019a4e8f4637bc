"""Applying a trained run: the same films give the same logits as in training, every input form, DICOM, and
one clear line for each bad input."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from jaxcxr import predict, workdir
from jaxcxr.data import cache
from jaxcxr.errors import UserError
from jaxcxr.fsutil import exclusive
from tests.support import run_command, write_dicom


def _test_split(workdir: pathlib.Path) -> cache.CachedSplit:
  return cache.open_split(next((workdir / "cache").glob("test-*")))


def _film_paths(workdir: pathlib.Path, names: list[str]) -> list[pathlib.Path]:
  images = next((workdir / "cache").glob("synthetic-nih-*")) / "images"
  return [images / name for name in names]


def _grey_film(workdir: pathlib.Path) -> tuple[pathlib.Path, np.ndarray]:
  """A synthetic 8-bit grey film and its pixels."""
  for path in sorted(_film_paths(workdir, _test_split(workdir).image_ids)):
    with Image.open(path) as img:
      if img.mode == "L":
        return path, np.asarray(img)
  raise AssertionError("no 8-bit film in the test split")


def _write_dicom(path: pathlib.Path, pixels: np.ndarray, photometric: str, bits: int, spacing=None) -> None:
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
  ds.Modality = "CR"
  ds.set_pixel_data(pixels, photometric, bits)
  if spacing:
    ds.PixelSpacing = list(spacing)
  ds.save_as(path, enforce_file_format=True)


def test_a_film_from_its_file_gives_the_logits_it_has_in_the_training_cache(default_run):
  model = predict.load(default_run)
  split = _test_split(default_run)
  table = model(_film_paths(default_run, split.image_ids[:24]))
  cached = model.network.readout.probabilities(model.network.logits(np.stack([split.images[i] for i in range(24)])))
  np.testing.assert_array_equal(table["p_Pneumonia"].to_numpy(), cached[:, 0])
  summary = workdir.read_summary(default_run)
  read = model.network.readout
  assert model.network.step == summary["step"] and read.thresholds == (summary["test"]["threshold"]["value"],)
  assert read.temperatures == (summary["test"]["calibration"]["temperature"],)
  # The labels are the test report's calls: over the whole test split they give its confusion counts.
  every = read.labels(model.network.logits(np.stack([split.images[i] for i in range(len(split))])))[:, 0]
  truth = split.labels.astype(bool)
  test = summary["test"]
  assert (int((every & ~truth).sum()), int((every & truth).sum())) == (test["fp"], test["tp"])
  np.testing.assert_array_equal(table["label_Pneumonia"], every[:24])


def test_films_given_as_arrays_of_any_size_match_their_files(default_run):
  model = predict.load(default_run)
  grey = [p for p in _film_paths(default_run, _test_split(default_run).image_ids[:20]) if Image.open(p).mode == "L"]
  paths = grey[:6]  # 8-bit films: their pixels as an array are what decoding the file gives
  arrays = [np.asarray(Image.open(p)) for p in paths]
  assert arrays[0].shape != (model.network.image_size,) * 2
  by_path, by_array = model(paths), model(arrays)
  np.testing.assert_allclose(by_array["p_Pneumonia"], by_path["p_Pneumonia"], atol=1e-6)
  assert by_array["path"].tolist() == [f"array[{i}]" for i in range(6)]
  with pytest.raises(UserError, match="2-D uint8"):
    model([arrays[0].astype(np.float32)])
  with pytest.raises(UserError, match=r"looks like one colour image"):
    model(np.stack([arrays[0]] * 3, axis=-1))
  with pytest.raises(UserError, match=r"256x3 pixels is not a chest film"):
    model([arrays[0][:3]])


def test_the_command_writes_a_csv_and_an_explanation_per_film(default_run, tmp_path, capsys):
  films = tmp_path / "films"
  films.mkdir()
  for path in _film_paths(default_run, _test_split(default_run).image_ids[:3]):
    shutil.copy(path, films / path.name)
  table = predict.run(default_run, [str(films)], explain_films=True)
  written = pd.read_csv(default_run / "predictions" / "films.csv")
  assert len(written) == 3 and list(written.columns) == [
      "path", "p_Pneumonia", "label_Pneumonia", "threshold_Pneumonia", "checkpoint_step", "pixel_spacing_mm",
      "in_scope", "scope_reason", "explanation"]
  np.testing.assert_allclose(written["p_Pneumonia"], table["p_Pneumonia"])
  for overlay in written["explanation"]:
    with Image.open(overlay) as img:
      assert img.format == "PNG" and min(img.size) >= 200
  out = capsys.readouterr().out
  assert f"3 film(s) predicted with the checkpoint of step {table['checkpoint_step'][0]}" in out
  assert "operating point (eval.threshold=" in out
  predict.run(default_run, [str(films)], name="ward7.csv")  # the name given with its suffix gets no second one
  assert (default_run / "predictions" / "ward7.csv").is_file()


def test_a_dicom_gives_the_prediction_of_the_png_it_was_made_from(default_run, tmp_path):
  model = predict.load(default_run)
  _, pixels = _grey_film(default_run)
  # DICOM pixels are stretched over their own range: the PNG they are made from spans the full range.
  full = np.round((pixels - pixels.min()) * (255.0 / (pixels.max() - pixels.min()))).astype(np.uint8)
  Image.fromarray(full).save(tmp_path / "film.png")
  _write_dicom(tmp_path / "mono2_8bit.dcm", full, "MONOCHROME2", 8, spacing=(0.143, 0.139))
  _write_dicom(tmp_path / "mono1_12bit.dcm", ((255 - full.astype(np.uint16)) * 16), "MONOCHROME1", 12)
  table = model([tmp_path / "film.png", tmp_path / "mono2_8bit.dcm", tmp_path / "mono1_12bit.dcm"])
  assert table["p_Pneumonia"].nunique() == 1, table
  assert table["pixel_spacing_mm"].tolist() == ["unknown", "0.143 x 0.139", "unknown"]
  assert pydicom.dcmread(tmp_path / "mono1_12bit.dcm").BitsStored == 12


def test_a_folder_is_searched_for_films_dicom_without_a_suffix_included(default_run, tmp_path):
  _, pixels = _grey_film(default_run)
  (tmp_path / "scans" / "sub").mkdir(parents=True)
  _write_dicom(tmp_path / "scans" / "sub" / "IM0001", pixels, "MONOCHROME2", 8)  # as PACS exports name them
  Image.fromarray(pixels).save(tmp_path / "scans" / "film[1].png")  # glob characters in a real name
  (tmp_path / "scans" / "notes.txt").write_text("not a film")
  table = predict.load(default_run)([tmp_path / "scans"])
  assert sorted(pathlib.Path(p).name for p in table["path"]) == ["IM0001", "film[1].png"]
  assert len(predict.load(default_run)([str(tmp_path / "scans" / "film[1].png")])) == 1


def test_predicting_reads_the_run_folder_and_writes_only_predictions(default_run, tmp_path):
  def snapshot():
    return {str(p.relative_to(default_run)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in default_run.rglob("*") if p.is_file() and "predictions" not in p.parts and p.name != ".lock"}

  before = snapshot()
  film = _film_paths(default_run, _test_split(default_run).image_ids[:1])[0]
  with exclusive(default_run, "--workdir"):  # as while the run trains: predict takes no lock
    predict.run(default_run, [str(film)], name="while-locked")
  assert snapshot() == before
  assert (default_run / "predictions" / "while-locked.csv").is_file()


def test_an_unfinished_run_labels_at_one_half_and_says_so(default_run, tmp_path):
  unfinished = tmp_path / "run"
  shutil.copytree(default_run, unfinished, ignore=shutil.ignore_patterns("cache", "predictions", ".lock"))
  (unfinished / "summary.json").unlink()
  steps = sorted(int(p.stem) for p in (unfinished / "checkpoints").glob("*.sha256"))
  (unfinished / "checkpoints" / f"{steps[-1]}.sha256").unlink()  # as while that step is being saved
  model = predict.load(unfinished)
  read = model.network.readout
  assert read.thresholds == (0.5,) and read.temperatures == (1.0,) and "has not finished" in read.note
  assert model.network.step == steps[-2] and (unfinished / "checkpoints" / str(steps[-1])).is_dir()  # skipped, kept


def test_bad_inputs_get_one_line_each(default_run, tmp_path):
  (tmp_path / "truncated.png").write_bytes(_film_paths(default_run, ["00000001_000.png"])[0].read_bytes()[:200])
  (tmp_path / "notes.png").write_text("not an image")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("no films here")
  not_a_run = tmp_path / "not-a-run"
  not_a_run.mkdir()
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  (untrained / "config.json").write_text(json.dumps(json.loads((default_run / "config.json").read_text())))
  cases = [
      (default_run, [tmp_path / "truncated.png"], "truncated.png: cannot decode"),
      (default_run, [tmp_path / "notes.png"], "notes.png: cannot decode"),
      (default_run, [tmp_path / "empty"], "holds no films"),
      (default_run, [tmp_path / "missing.png"], "missing.png: no such file or folder"),
      (default_run, [str(tmp_path / "*.jpeg")], "matches no file"),
      (default_run, [], "needs films"),
      (not_a_run, [tmp_path / "notes.png"], "holds no trained run"),
      (untrained, [tmp_path / "notes.png"], "has no checkpoint yet"),
  ]
  for run, inputs, expected in cases:
    with pytest.raises(UserError, match=expected) as info:
      predict.run(run, [str(i) for i in inputs])
    assert "\n" not in str(info.value)
  with pytest.raises(UserError, match="--on_bad_image=skip"):
    predict.run(default_run, [str(tmp_path / "notes.png")])
  for name in ("../escape", ".csv", ".hidden"):
    with pytest.raises(UserError, match=rf"--output_name='{re.escape(name)}' must be a plain file name, not hidden"):
      predict.run(default_run, [str(tmp_path / "notes.png")], name=name)
  for name in ("", " "):  # an unset variable, --output_name=$NAME: never the first input's name in silence
    with pytest.raises(UserError, match=rf"--output_name='{name}' is empty; give the CSV a name"):
      predict.run(default_run, [str(tmp_path / "notes.png")], name=name)


def test_a_film_named_twice_is_found_once_and_a_pipe_is_named(tmp_path, caplog):
  films = tmp_path / "films"
  films.mkdir()
  Image.fromarray(_grey_film_pixels()).save(films / "a.png")
  Image.fromarray(_grey_film_pixels()).save(films / "b.png")
  found = predict.film_paths([str(films / "b.png"), str(films), str(films / ".." / "films" / "a.png")])
  assert found == [films / "b.png", films / "a.png"]
  assert "--inputs names 2 film(s) more than once; each is predicted once" in caplog.text
  os.mkfifo(tmp_path / "pipe")
  with pytest.raises(UserError, match=r"--inputs .*pipe is not a regular file \(a pipe, socket or device\)"):
    predict.film_paths([str(tmp_path / "pipe")])


def test_skipping_bad_films_predicts_the_rest_and_lists_them(default_run, tmp_path, capsys):
  (tmp_path / "notes.png").write_text("not an image")
  good = _film_paths(default_run, _test_split(default_run).image_ids[:2])
  table = predict.run(default_run, [*map(str, good), str(tmp_path / "notes.png")], on_bad_image="skip",
                      name="skipping")
  assert table["path"].tolist() == [str(p) for p in good]
  assert "skipped 1 unreadable film(s)" in capsys.readouterr().out
  with pytest.raises(UserError, match="none of the 1 film"):
    predict.run(default_run, [str(tmp_path / "notes.png")], on_bad_image="skip")


def test_the_command_line_exits_with_one_line(tmp_path):
  done = subprocess.run([sys.executable, "run.py", "--mode=predict", f"--workdir={tmp_path}", "--inputs=x.png"],
                        capture_output=True, text=True, cwd=pathlib.Path(__file__).parents[1], check=False)
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1].startswith("error: --inputs x.png: no such file or folder")


@pytest.mark.parametrize("name", ["config.json", "summary.json"])
def test_a_damaged_run_file_stops_predict_in_one_line_naming_it(default_run, tmp_path, name):
  run = tmp_path / "run"
  shutil.copytree(default_run, run, ignore=shutil.ignore_patterns("cache", "predictions", ".lock"))
  text = (run / name).read_text()
  (run / name).write_text(text[:len(text) // 3])
  with pytest.raises(UserError, match=rf"{name} is damaged \(JSONDecodeError.*\); rerun training with the same "
                                      r"command and --workdir=.* to rewrite it") as info:
    predict.load(run)
  assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, edit, message", [
    ("summary.json", lambda s: {**s, "test": "passed"}, r"summary.json is damaged: its test report has no operating "
                                                        r"point for .*TypeError"),
    ("summary.json", lambda s: {**s, "test": {}}, r"summary.json is damaged: its test report has no operating point"),
    ("config.json", lambda c: {**c, "data": {**c["data"], "image_size": "big"}},
     r"config.json does not rebuild the run's network \(TypeError"),
    ("config.json", lambda c: {k: v for k, v in c.items() if k != "model"},
     r"config.json does not rebuild the run's network \((AttributeError|KeyError)"),
    ("config.json", lambda c: {**c, "model": {**c["model"], "widths": [8] * 12}},
     r"config.json does not rebuild the run's network \(ZeroDivisionError"),
])
def test_a_run_file_of_the_wrong_shape_stops_predict_in_one_line_naming_it(default_run, tmp_path, name, edit,
                                                                           message):
  run = tmp_path / "run"
  shutil.copytree(default_run, run, ignore=shutil.ignore_patterns("cache", "predictions", ".lock"))
  (run / name).write_text(json.dumps(edit(json.loads((run / name).read_text()))))
  with pytest.raises(UserError, match=message + r".*; rerun training with the same command") as info:
    predict.load(run)
  assert "\n" not in str(info.value)


def _chest(path, **tags):
  return write_dicom(path, _grey_film_pixels(), **{"Modality": "CR", "BodyPartExamined": "CHEST",
                                                   "ViewPosition": "PA", **tags})


def _grey_film_pixels():
  return np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)


def test_films_outside_the_models_scope_are_flagged_once_per_kind(default_run, tmp_path, caplog):
  films = tmp_path / "pacs"
  films.mkdir()
  _chest(films / "a_chest.dcm", PixelSpacing=[0.15, 0.15])
  _chest(films / "b_thorax.dcm", BodyPartExamined="THORAX", PixelSpacing=[0, 0])  # uncalibrated detector
  _chest(films / "c_ct.dcm", Modality="CT")
  _chest(films / "d_mr.dcm", Modality="MR")
  _chest(films / "e_lateral.dcm", ViewPosition="LL")
  _chest(films / "f_tibia.dcm", BodyPartExamined="EXTREMITY")
  Image.fromarray(_grey_film_pixels()).save(films / "g.png")
  table = predict.run(default_run, [str(films)], name="pacs")
  assert table["in_scope"].tolist() == ["true", "true", "false", "false", "false", "false", "unknown"]
  assert table["scope_reason"][2] == "Modality CT is not a radiograph (CR, DX, DR)"
  assert table["scope_reason"][4] == "ViewPosition LL is lateral; the run trained on frontal films"
  assert table["scope_reason"][5] == "BodyPartExamined EXTREMITY is not the chest"
  assert table["pixel_spacing_mm"].tolist()[:2] == ["0.15 x 0.15", "unknown"]
  assert pd.read_csv(default_run / "predictions" / "pacs.csv")["in_scope"].tolist()[2:6] == ["false"] * 4
  warned = [r.getMessage() for r in caplog.records if "outside the model's scope" in r.getMessage()]
  assert len(warned) == 3 and warned[0].startswith("2 film(s) outside the model's scope by their modality")


def test_strict_inputs_refuse_a_film_outside_the_scope_in_one_line(default_run, tmp_path):
  _chest(tmp_path / "chest.dcm")
  _chest(tmp_path / "ct.dcm", Modality="CT")
  model = predict.load(default_run)
  assert len(model([tmp_path / "chest.dcm"], strict_inputs=True)) == 1
  with pytest.raises(UserError, match=r"ct.dcm is outside the model's scope \(Modality CT is not a radiograph "
                                      r"\(CR, DX, DR\)\); remove them, or drop --strict_inputs") as error:
    model(sorted(tmp_path.glob("*.dcm")), strict_inputs=True)
  assert "\n" not in str(error.value)
  result = run_command("--mode=predict", f"--workdir={default_run}", "--strict_inputs", str(tmp_path / "ct.dcm"))
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "outside the model's scope" in result.stderr
