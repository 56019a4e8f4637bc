"""CheXpert and MIMIC-CXR-JPG, the CheXpert labeler's value codes, the uncertain policies and the masks of the
common label space, on files in the published layouts (tests/release_data.py; docs/data.md cites the formats)."""

import gzip
import logging

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcxr import evaluate, metrics, train, train_step
from jaxcxr.configs import tiny
from jaxcxr.data import cache, chexpert, datasets, findings, mimic, splits
from jaxcxr.errors import UserError
from tests.release_data import LABELER_COLUMNS
from tests.support import plain_film, train_run

HEADER = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(LABELER_COLUMNS)


def _row(path, view="Frontal", ap_pa="PA", **values):
  """A CSV line for `path` with the labeler values given by column (spaces as underscores), others blank."""
  cells = [values.get(c.replace(" ", "_"), "") for c in LABELER_COLUMNS]
  return ",".join([f"CheXpert-v1.0-small/{path}", "Female", "60", view, ap_pa, *cells])


def _write(root, train_rows, valid_rows):
  root.mkdir(parents=True, exist_ok=True)
  (root / "train.csv").write_text("\n".join([HEADER, *train_rows]) + "\n")
  (root / "valid.csv").write_text("\n".join([HEADER, *valid_rows]) + "\n")
  return root


def _config(dataset="chexpert", target="all", **data):
  config = tiny.get_config()
  config.data.dataset, config.data.target = dataset, target
  config.data.update(data)
  return config


TRAIN = [_row("train/patient00001/study1/view1_frontal.jpg", Pneumonia="-1.0", Edema="1.0"),
         _row("train/patient00001/study1/view2_lateral.jpg", view="Lateral", ap_pa="", Pneumonia="1.0"),
         _row("train/patient00002/study1/view1_frontal.jpg", ap_pa="AP", No_Finding="1.0"),
         _row("train/patient00003/study1/view1_frontal.jpg", Pleural_Effusion="1.0", Pneumonia="0.0")]
VALID = [_row("valid/patient64541/study1/view1_frontal.jpg", Pneumonia="1.0"),
         _row("valid/patient64542/study1/view1_frontal.jpg", No_Finding="1.0")]


def test_chexpert_reads_its_release_layout(chexpert_dir):
  table = datasets.read(_config().data, chexpert_dir).table
  test = table[table["split"] == "test"]
  assert set(test["official_split"]) == {"valid"} and test["image_id"].str.startswith("valid/patient").all()
  assert set(table.loc[table["split"] != "test", "split"]) == {"train", "val"}  # val carved from train
  splits.check_patient_disjoint(table)
  assert table["patient_id"].str.fullmatch(r"patient\d{5}").all()
  assert table["path"].notna().all()  # every Path found below the folder, whatever the folder is named
  assert set(table["view"]) == {"AP", "PA", "lateral"}
  # The folder holding CheXpert-v1.0-small/ works too.
  assert chexpert.find_root(chexpert_dir.parent) == chexpert_dir


@pytest.mark.parametrize("policy,expected", [("zeros", 0), ("ones", 1), ("ignore", findings.MISSING)])
def test_uncertain_labels_follow_the_policy_and_blanks_are_negative(tmp_path, policy, expected):
  table = datasets.read(_config(uncertain=policy).data, _write(tmp_path, TRAIN, VALID)).table.set_index("image_id")
  first = table.loc["train/patient00001/study1/view1_frontal.jpg"]
  assert first["Pneumonia"] == expected and first["Edema"] == 1 and first["Cardiomegaly"] == 0  # blank: negative
  # The labeler's Pleural Effusion is the common label space's (NIH's) Effusion.
  assert table.loc["train/patient00003/study1/view1_frontal.jpg", "Effusion"] == 1
  single = datasets.read(_config(target="Pneumonia", negatives="rest", uncertain=policy).data, tmp_path).table
  label = single.set_index("image_id").loc["train/patient00001/study1/view1_frontal.jpg", "label"]
  assert (np.isnan(label) if policy == "ignore" else label == expected)  # ignored: the film leaves the task


def test_views_name_frontal_lateral_ap_and_pa(tmp_path):
  # A Frontal/Lateral value of neither kind is kept as written, so no view filter takes it for frontal.
  root = _write(tmp_path, TRAIN + [_row("train/patient00005/study1/view1_oblique.jpg", view="Oblique")], VALID)
  for views, kept in (("frontal", {"PA", "AP"}), ("lateral", {"lateral"}), ("AP", {"AP"}),
                      ("PA,lateral", {"PA", "lateral"})):
    config = _config(views=views)
    table = datasets.read(config.data, root).table
    assert set(splits.select_examples(table, datasets.views_of(config.data))["view"]) == kept


def test_mimic_reads_its_three_tables_and_official_split(mimic_dir, caplog):
  table = datasets.read(_config("mimic").data, mimic_dir).table
  assert set(table["official_split"]) == {"train", "validate", "test"}
  assert (table["split"] == table["official_split"].map(mimic.OFFICIAL_SPLITS)).all()
  assert table["path"].notna().all() and table["path"].str.contains(r"/files/p\d\d/p\d{8}/s\d{8}/").all()
  assert set(table["view"]) <= {"AP", "PA", "lateral"}
  splits.check_patient_disjoint(table)
  # A study the labeler table lacks is left out with a warning, never taken as negative.
  gz = mimic_dir / f"{mimic.TABLES['labels']}.gz"
  lines = gzip.decompress(gz.read_bytes()).decode().splitlines()
  short = mimic_dir.parent / "mimic-short"
  short.mkdir()
  for name in (mimic.TABLES["split"], mimic.TABLES["metadata"]):
    (short / name).symlink_to(mimic_dir / name)
  (short / "files").symlink_to(mimic_dir / "files")
  (short / mimic.TABLES["labels"]).write_text("\n".join(lines[:1] + lines[2:]) + "\n")
  with caplog.at_level(logging.WARNING):
    fewer = datasets.read(_config("mimic").data, short).table
  study = lines[1].split(",")[1]
  assert "left out, not taken as negative" in caplog.text and study in caplog.text
  films = fewer["image_id"].isin(mimic_films_of(mimic_dir, study))
  assert films.any() and fewer.loc[films, "label"].isna().all()
  assert table.loc[table["image_id"].isin(mimic_films_of(mimic_dir, study)), "label"].notna().all()


def mimic_films_of(root, study):
  rows = [line.split(",") for line in (root / mimic.TABLES["split"]).read_text().splitlines()[1:]]
  return {dicom for dicom, st, _, _ in rows if st == study}


def test_a_masked_finding_changes_neither_loss_nor_auroc():
  labels = jnp.array([[1, findings.MISSING], [0, 1], [1, 0]])
  logits = jnp.array([[2.0, 0.3], [-1.0, 1.0], [0.5, -0.5]])
  moved = logits.at[0, 1].set(-40.0)  # the masked finding's logit, anywhere
  base = train_step.weighted_bce(logits, labels, jnp.ones(2), jnp.ones(2))
  np.testing.assert_array_equal(base, train_step.weighted_bce(moved, labels, jnp.ones(2), jnp.ones(2)))
  # Film 0's loss is its one labelled finding's, over the two targets (the mean over targets, the masked one 0).
  alone = train_step.weighted_bce(logits[:, :1], labels[:, :1], jnp.ones(1), jnp.ones(1))
  np.testing.assert_allclose(base[0], alone[0] / 2, rtol=1e-6)
  scores = np.asarray(logits)
  assert metrics.per_target_auc(np.asarray(labels), scores) == \
      metrics.per_target_auc(np.asarray(labels), np.asarray(moved)) == [1.0, 1.0]


def test_masked_films_take_no_part_in_weights_or_the_test_report():
  labels = np.array([[1, findings.MISSING], [0, 1], [1, 0], [0, findings.MISSING], [1, 1], [0, 0]], np.int32)
  split = cache.CachedSplit("train", np.zeros((6, 4, 4), np.uint8), labels, [str(i) for i in range(6)],
                            [f"p{i}" for i in range(6)], targets=("A", "B"))
  positive, negative = train.class_weights(split, "pos_weight")
  assert positive == [0.5, 0.5] and negative == [0.5, 0.5]  # B: 2 of its 4 labelled films, not 2 of 6
  assert split.positives_per_target() == {"A": 3, "B": 2} and split.known_per_film == pytest.approx(10 / 6)
  config = tiny.get_config().eval
  config.bootstrap = 0
  logits = np.array([[1, 9], [-1, 2], [1, -2], [-1, -9], [1, 3], [-1, -3]], np.float32)
  report = evaluate._finding_report(config, split, logits, split, logits, 1)
  assert report["films"] == 4 and report["auc"] == 1.0
  assert report["tp"] + report["fn"] + report["tn"] + report["fp"] == 4


@pytest.mark.parametrize("case,match", [
    ("no valid.csv", "valid.csv missing; point --data_dir at the unpacked CheXpert"),
    ("a label of 2.0", "column 'Pneumonia' holds '2.0' in 1 row"),
    ("no AP/PA column", "lacks column(s) 'AP/PA'"),
    ("a Path without a patient", "names no patientNNNNN folder"),
    ("a file cut short", "train.csv is cut short: its last line"),
])
def test_bad_chexpert_files_get_one_line(tmp_path, case, match):
  root = _write(tmp_path, TRAIN, VALID)
  if case == "no valid.csv":
    (root / "valid.csv").unlink()
  elif case == "a label of 2.0":
    _write(root, TRAIN + [_row("train/patient00004/study1/view1_frontal.jpg", Pneumonia="2.0")], VALID)
  elif case == "a file cut short":
    (root / "train.csv").write_text((root / "train.csv").read_text()[:-25])
  elif case == "no AP/PA column":
    (root / "train.csv").write_text((root / "train.csv").read_text().replace(",AP/PA", ",APPA", 1))
  else:
    _write(root, TRAIN + [_row("train/somebody/study1/view1_frontal.jpg")], VALID)
  with pytest.raises(UserError, match=match.replace("(", r"\(").replace(")", r"\)")):
    datasets.read(_config().data, root)


def _mimic_copy(mimic_dir, folder):
  folder.mkdir()
  for name in (mimic.TABLES["split"], mimic.TABLES["metadata"], f"{mimic.TABLES['labels']}.gz"):
    (folder / name).write_bytes((mimic_dir / name).read_bytes())
  return folder


def test_mimic_tables_that_disagree_are_named(mimic_dir, tmp_path):
  labels = gzip.decompress((mimic_dir / f"{mimic.TABLES['labels']}.gz").read_bytes()).decode().splitlines()
  # Leading zeros on the IDs (a spreadsheet's re-save) read as the same IDs.
  padded = _mimic_copy(mimic_dir, tmp_path / "padded")
  (padded / f"{mimic.TABLES['labels']}.gz").write_bytes(gzip.compress(
      ("\n".join(labels[:1] + ["0" + line for line in labels[1:]]) + "\n").encode()))
  assert datasets.read(_config("mimic").data, padded).table["label"].notna().sum() == \
      datasets.read(_config("mimic").data, mimic_dir).table["label"].notna().sum()
  both = _mimic_copy(mimic_dir, tmp_path / "both")
  (both / mimic.TABLES["labels"]).write_text("\n".join(labels) + "\n")
  with pytest.raises(UserError, match="holds both mimic-cxr-2.0.0-chexpert.csv and mimic-cxr-2.0.0-chexpert.csv.gz"):
    datasets.read(_config("mimic").data, both)
  twice = _mimic_copy(mimic_dir, tmp_path / "twice")
  flipped = labels[1].replace("1.0", "0.0", 1) if "1.0" in labels[1] else labels[1].replace(",,", ",1.0,", 1)
  (twice / f"{mimic.TABLES['labels']}.gz").write_bytes(gzip.compress(("\n".join(labels + [flipped]) + "\n").encode()))
  with pytest.raises(UserError, match=f"gives study {labels[1].split(',')[1]} 2 different rows"):
    datasets.read(_config("mimic").data, twice)
  moved = _mimic_copy(mimic_dir, tmp_path / "moved")
  subject, study = labels[1].split(",")[:2]
  (moved / f"{mimic.TABLES['labels']}.gz").write_bytes(gzip.compress(("\n".join(
      labels[:1] + [labels[1].replace(subject, "19999999", 1)] + labels[2:]) + "\n").encode()))
  with pytest.raises(UserError, match=f"study {study} is subject {subject}'s in .* but subject 19999999's"):
    datasets.read(_config("mimic").data, moved)


def test_bad_mimic_files_get_one_line(mimic_dir, tmp_path):
  (tmp_path / mimic.TABLES["split"]).write_text("dicom_id,study_id,subject_id,split\nabc,50000000,10000032,dev\n")
  with pytest.raises(UserError, match="split 'dev' in 1 row"):
    datasets.read(_config("mimic").data, tmp_path)
  (tmp_path / mimic.TABLES["split"]).unlink()
  with pytest.raises(UserError, match=f"no {mimic.TABLES['split']}"):
    datasets.read(_config("mimic").data, tmp_path)


def test_a_path_whose_film_is_missing_is_a_bad_image(tmp_path):
  root = _write(tmp_path / "release", TRAIN, VALID + [_row("valid/patient64543/study1/view1_frontal.jpg")])
  for line in TRAIN + VALID:
    film = root / line.split(",")[0].split("/", 1)[1]
    film.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(plain_film((40, 40), 90)).save(film)
  with pytest.raises(cache.BadImages, match="patient64543/study1/view1_frontal.jpg: listed in the metadata but not "
                                            "found on disk"):
    datasets.cache_splits(_config().data, str(root), tmp_path / "cache", ("test",))
  assert not list((tmp_path / "cache").glob("test-*"))  # nothing half-built left as a cache


@pytest.mark.parametrize("key,value,match", [
    ("data.uncertain", "half", "data.uncertain='half' must be one of ignore, zeros, ones"),
    ("data.views", "LL", "data.views='LL' must list CheXpert's views, frontal, lateral, AP, PA"),
    ("data.target", "Pleural Other", "data.target='Pleural Other' must be one of all, any, Atelectasis"),
])
def test_labeler_settings_are_checked_before_any_work(key, value, match):
  from jaxcxr import config as config_lib  # pylint: disable=g-import-not-at-top
  config = _config()
  config.data[key.split(".")[1]] = value
  with pytest.raises(UserError, match=match):
    config_lib.validate(config, weights_needed=False)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["chexpert", "mimic"])
def test_each_labeler_reader_trains_the_tiny_config_end_to_end(dataset, chexpert_dir, mimic_dir, tmp_path):
  config = _config(dataset, uncertain="ignore")
  summary = train_run(config, tmp_path, str(chexpert_dir if dataset == "chexpert" else mimic_dir))
  test = summary["test"]
  assert test["targets"] == list(findings.CHEXPERT_LABELER.values())
  assert summary["epochs"][-1]["train_loss"] < summary["epochs"][0]["train_loss"] * 1.5
  assert all(r["tp"] + r["fn"] + r["tn"] + r["fp"] <= summary["split_sizes"]["test"] for r in test["findings"].values())
  assert (tmp_path / "test_scores.npz").is_file()
