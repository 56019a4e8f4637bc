"""Datasets trained together (`data.dataset=nih+chexpert`): one label space, masks for what a dataset does not
label, each dataset's own split, and patients kept apart per dataset."""

import pytest

from jaxcxr import config as config_lib
from jaxcxr.configs import tiny
from jaxcxr.data import datasets, findings, nih, splits
from jaxcxr.errors import UserError
from tests.support import train_run


def _config(dataset="nih+chexpert", target="all", **data):
  config = tiny.get_config()
  config.data.dataset, config.data.target = dataset, target
  config.data.update(data)
  return config


def test_joined_datasets_share_one_label_space_and_mask_what_each_does_not_label(tiny_nih, chexpert_dir, tmp_path):
  config = _config()
  examples, where = datasets.read_source(config.data, f"{tiny_nih},{chexpert_dir}", tmp_path)
  assert examples.targets == datasets.target_names(config.data) == findings.COMMON  # NIH's 14 and CheXpert's 5
  table = examples.table
  nih_films, chexpert_films = table["image_id"].str.startswith("nih:"), table["image_id"].str.startswith("chexpert:")
  assert (nih_films | chexpert_films).all() and nih_films.any() and chexpert_films.any()
  assert (table.loc[nih_films, list(findings.CHEXPERT_ONLY)] == findings.MISSING).all().all()
  only_nih = [f for f in nih.FINDINGS if f not in findings.CHEXPERT_LABELER.values()]
  assert (table.loc[chexpert_films, only_nih] == findings.MISSING).all().all()
  assert (table.loc[chexpert_films & (table["split"] == "test"), "official_split"] == "valid").all()  # its own split
  assert table["patient_id"].str.match(r"^(nih|chexpert):").all()  # patient 1 of one is not patient 1 of the other
  splits.check_patient_disjoint(table)
  assert str(tiny_nih) in where and str(chexpert_dir) in where


def test_a_joint_single_target_keeps_the_films_of_every_dataset(tiny_nih, rsna_like_dirs, tmp_path):
  config = _config("nih+rsna", target="Pneumonia", negatives="rest")
  examples, _ = datasets.read_source(config.data, f"{tiny_nih},{rsna_like_dirs}", tmp_path)
  assert examples.targets == () and set(examples.table["image_id"].str.split(":").str[0]) == {"nih", "rsna"}
  assert datasets.target_names(config.data) == ("Pneumonia",)


@pytest.fixture(scope="module")
def rsna_like_dirs(tmp_path_factory):
  from tests.release_data import write_rsna  # pylint: disable=g-import-not-at-top
  return write_rsna(tmp_path_factory.mktemp("rsna"), films=20)


@pytest.mark.parametrize("dataset,data,match", [
    ("nih+nih", {}, "data.dataset='nih\\+nih' names nih twice; name each dataset once"),
    ("nih+kermany", {}, "joins datasets of the common label space only: nih, chexpert, mimic, rsna"),
    ("nih+chexpert", {"views": "PA"}, "filters one dataset's views; leave it empty for a joint dataset"),
    ("nih+chexpert", {"target": "Hernia"}, "data.target='Hernia' must be one of all, Atelectasis"),
])
def test_impossible_joins_are_refused_before_any_work(dataset, data, match):
  config = _config(dataset, **data)
  with pytest.raises(UserError, match=match):
    config_lib.validate(config, weights_needed=False)


def test_a_joint_dataset_needs_one_data_dir_each(tmp_path):
  with pytest.raises(UserError, match="joins 2 datasets but --data_dir names 1 folder"):
    datasets.read_source(_config().data, str(tmp_path), tmp_path)


@pytest.mark.slow
def test_nih_and_chexpert_train_together_end_to_end(chexpert_dir, shared_cache, tmp_path):
  config = _config()
  config.data.cache_dir = str(shared_cache)
  summary = train_run(config, tmp_path, f",{chexpert_dir}")  # the synthetic NIH default, and CheXpert
  assert summary["test"]["targets"] == list(findings.COMMON) and summary["synthetic"]
  chexpert_only = summary["test"]["findings"]["Fracture"]
  # Scored on CheXpert's test films only: NIH's are masked for it.
  assert chexpert_only["tp"] + chexpert_only["fn"] + chexpert_only["tn"] + chexpert_only["fp"] == 18
