"""The RSNA Pneumonia Detection Challenge reader, its boxes in the cached films' pixels, and the pointing game the
report scores explanations with, on a folder in the challenge's layout (tests/release_data.py)."""

import types

import numpy as np
import pytest

from jaxcxr import explain
from jaxcxr.configs import tiny
from jaxcxr.data import cache, datasets, images, rsna, splits
from jaxcxr.errors import UserError
from jaxcxr.report import run_report
from tests.release_data import write_rsna
from tests.support import train_run


@pytest.fixture(scope="module")
def rsna_dir(tmp_path_factory):
  return write_rsna(tmp_path_factory.mktemp("rsna"))


def _data(**values):
  config = tiny.get_config()
  config.data.dataset = "rsna"
  config.data.update(values)
  return config


def test_rsna_reads_one_film_per_patient_id_with_its_label_and_dicom(rsna_dir):
  labels = (rsna_dir / rsna.LABELS).read_text().splitlines()[1:]
  positives = {line.split(",")[0] for line in labels if line.endswith(",1")}
  table = datasets.read(_data(negatives="rest").data, rsna_dir).table
  assert len(table) == 80 and table["image_id"].is_unique and table["path"].notna().all()
  assert set(table.loc[table["label"] == 1, "image_id"]) == positives and (table["label"] == 0).sum() == 80 - len(positives)
  assert set(table["split"]) == {"train", "val", "test"}
  splits.check_patient_disjoint(table)
  # no_finding: only the Normal class is negative; "No Lung Opacity / Not Normal" leaves the task.
  healthy = datasets.read(_data(negatives="no_finding").data, rsna_dir).table
  classes = dict(line.split(",") for line in (rsna_dir / rsna.CLASSES).read_text().splitlines()[1:])
  assert set(healthy.loc[healthy["label"] == 0, "image_id"]) == {p for p, c in classes.items() if c == rsna.NORMAL}
  assert healthy["label"].isna().sum() == sum(c == "No Lung Opacity / Not Normal" for c in classes.values())


def test_a_box_is_carried_into_the_fitted_films_pixels():
  # A 200 x 100 film padded to 200 x 200 (50 rows above), then resized to 50: a quarter of the scale.
  assert images.fitted_box((20, 10, 40, 8), 200, 100, 50, "pad") == (5.0, 15.0, 10.0, 2.0)
  # Cropped to 100 x 100 (50 columns off the left), resized to 50: half the scale.
  assert images.fitted_box((60, 10, 40, 8), 200, 100, 50, "crop") == (5.0, 5.0, 20.0, 4.0)


def test_the_pointing_game_counts_maps_that_peak_inside_a_box():
  heatmap = np.zeros((32, 32))
  heatmap[10, 20] = 1.0  # peak centre at row 10.5, column 20.5 of a 32 px map; at 64 px film pixels: 21, 41
  assert explain.peak_in_boxes(heatmap, [(40, 20, 4, 4)], 64)
  assert explain.peak_in_boxes(heatmap, [(0, 0, 2, 2), (41, 21, 1, 1)], 64)  # any box will do
  assert not explain.peak_in_boxes(heatmap, [(42, 20, 4, 4)], 64)


def test_the_report_scores_localisation_on_the_generated_boxes(rsna_dir):
  table = datasets.read(_data().data, rsna_dir).table
  test_ids = list(table.loc[table["split"] == "test", "image_id"])
  boxes = rsna.boxes_in_film(rsna_dir, test_ids, 32, "pad")
  assert boxes and set(boxes) <= set(test_ids)
  # The generator's boxes are at 96 px; at the run's 32 px each is a third.
  first = next(iter(boxes))
  line = next(l for l in (rsna_dir / rsna.LABELS).read_text().splitlines() if l.startswith(first))
  x, y, w, h = map(float, line.split(",")[1:5])
  np.testing.assert_allclose(boxes[first][0], (x / 3, y / 3, w / 3, h / 3))
  # A network whose maps peak at each box's centre for every other film, in a corner otherwise.
  ids = list(boxes)
  aimed = set(ids[::2])

  def heatmaps(films, targets, method):
    out = np.zeros((len(films), 32, 32))
    for k, name in enumerate(ids):
      bx, by, bw, bh = boxes[name][0]
      row, col = (int(by + bh / 2), int(bx + bw / 2)) if name in aimed else (0, 0)
      out[k, row, col] = 1.0
    return out

  split = types.SimpleNamespace(image_ids=ids, images=np.zeros((len(ids), 32, 32), np.uint8))
  network = types.SimpleNamespace(heatmaps=heatmaps, readout=types.SimpleNamespace(targets=(rsna.TARGET,)))
  found = run_report.localisation(network, split, None, 32, boxes)
  corner_hits = sum(any(bx <= 0.5 <= bx + bw and by <= 0.5 <= by + bh for bx, by, bw, bh in boxes[n])
                    for n in ids if n not in aimed)
  assert found["truth"] == "boxes" and found["films"] == len(ids)
  assert all(n == len(aimed) + corner_hits for n in found["inside"].values())


@pytest.mark.parametrize("case,match", [
    ("no labels CSV", f"no {rsna.LABELS} in"),
    ("a Target of 2", "Target 2 is not 0 or 1"),
    ("a negative corner", "box(es) with a negative corner or no area"),
    ("a positive row without a box", "Target 1 row(s) without a box"),
    ("an unknown class", "class 'Opacity' is not one of"),
    ("a positive film of class Normal", "film(s) of .* disagree"),
])
def test_bad_rsna_files_get_one_line(rsna_dir, tmp_path, case, match):
  for name in (rsna.LABELS, rsna.CLASSES):
    (tmp_path / name).write_text((rsna_dir / name).read_text())
  (tmp_path / rsna.IMAGES).symlink_to(rsna_dir / rsna.IMAGES)
  labels = (tmp_path / rsna.LABELS).read_text().splitlines()
  positive = next(i for i, l in enumerate(labels) if l.endswith(",1"))
  pid = labels[positive].split(",")[0]
  if case == "no labels CSV":
    (tmp_path / rsna.LABELS).unlink()
  elif case == "a Target of 2":
    labels[positive] = labels[positive][:-1] + "2"
  elif case == "a negative corner":
    labels[positive] = f"{pid},-3,10,5,5,1"
  elif case == "a positive row without a box":
    labels[positive] = f"{pid},,,,,1"
  elif case == "an unknown class":
    (tmp_path / rsna.CLASSES).write_text((tmp_path / rsna.CLASSES).read_text().replace("Lung Opacity", "Opacity", 1))
  else:
    (tmp_path / rsna.CLASSES).write_text((tmp_path / rsna.CLASSES).read_text().replace(f"{pid},Lung Opacity",
                                                                                         f"{pid},Normal"))
  if case != "no labels CSV":
    (tmp_path / rsna.LABELS).write_text("\n".join(labels) + "\n")
  with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
    datasets.read(_data().data, tmp_path)


def test_a_box_outside_its_film_and_a_missing_dicom_are_named(rsna_dir, tmp_path):
  for name in (rsna.LABELS, rsna.CLASSES):
    (tmp_path / name).write_text((rsna_dir / name).read_text())
  (tmp_path / rsna.IMAGES).mkdir()
  for dcm in (rsna_dir / rsna.IMAGES).iterdir():
    (tmp_path / rsna.IMAGES / dcm.name).symlink_to(dcm)
  labels = (tmp_path / rsna.LABELS).read_text().splitlines()
  positive = next(i for i, l in enumerate(labels) if l.endswith(",1"))
  pid = labels[positive].split(",")[0]
  labels[positive] = f"{pid},90,10,20,20,1"  # 90 + 20 columns of a 96 px film
  (tmp_path / rsna.LABELS).write_text("\n".join(labels) + "\n")
  with pytest.raises(UserError, match=f"film {pid}'s box \\(90, 10, 20, 20\\) reaches outside its 96x96 DICOM"):
    rsna.boxes_in_film(tmp_path, [pid], 32, "pad")
  table = datasets.read(_data().data, tmp_path).table
  gone = table.loc[table["split"] == "test", "image_id"].iloc[0]
  (tmp_path / rsna.IMAGES / f"{gone}.dcm").unlink()
  with pytest.raises(cache.BadImages, match=f"{gone}: listed in the metadata but not found on disk"):
    datasets.cache_splits(_data().data, str(tmp_path), tmp_path / "cache", ("test",))


@pytest.mark.slow
def test_rsna_trains_the_tiny_config_and_plays_the_pointing_game(rsna_dir, tmp_path):
  summary = train_run(_data(), tmp_path, str(rsna_dir), report=True)
  found = summary["localisation"]
  assert found["truth"] == "boxes" and found["films"] == summary["split_positives"]["test"]
  assert "boxes (the pointing game)" in (tmp_path / "report.html").read_text()
