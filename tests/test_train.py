"""End-to-end runs of the training loop on the tiny synthetic config (seconds each)."""

import copy
import json
import logging
import re
import shutil

import jax
import numpy as np
import pytest

from jaxcxr import conv
from jaxcxr.data import synthetic
from jaxcxr.errors import UserError
from tests.support import assert_same_state, crash_then_resume, final_state, learning, override, train_run, write_npz


def test_run_writes_paper_tables(straight):
  workdir, summary = straight
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2]
  for r in records:
    assert {"sec_per_epoch", "ms_per_step", "data_wait_fraction", "train_loss", "train_accuracy",
            "val_loss", "val_accuracy"} <= set(r)
    assert r["sec_per_epoch"] > 0 and 0 <= r["train_accuracy"] <= 1
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert set(on_disk["test"]) >= {"accuracy", "precision", "recall", "specificity", "f1", "auc",
                                  "tn", "fp", "fn", "tp"}
  t = on_disk["test"]
  assert t["tn"] + t["fp"] + t["fn"] + t["tp"] == summary["split_sizes"]["test"]
  assert on_disk["timing"]["compile_s"] > 0 and on_disk["synthetic"] is True
  assert on_disk["device"]["platform"] == "cpu"
  assert not (workdir / "report.html").exists() and on_disk["localisation"] is None  # logging.report=False


def test_resume_at_epoch_boundary_is_exact(straight, tiny_config, tmp_path):
  ref_dir, ref = straight
  tiny_config.train.epochs = 1
  train_run(tiny_config, tmp_path)
  tiny_config.train.epochs = 2
  resumed = train_run(tiny_config, tmp_path)
  assert learning(resumed["epochs"]) == learning(ref["epochs"])
  assert resumed["test"] == ref["test"]
  step, state = final_state(tmp_path)
  ref_step, ref_state = final_state(ref_dir)
  assert step == ref_step
  assert_same_state(state, ref_state)


def test_resume_after_a_crash_mid_epoch_is_exact(straight, tiny_config, tmp_path, monkeypatch):
  ref_dir, ref = straight
  resumed = crash_then_resume(tiny_config, tmp_path, monkeypatch)
  assert learning(resumed["epochs"]) == learning(ref["epochs"])
  assert_same_state(final_state(tmp_path)[1], final_state(ref_dir)[1])


def test_finished_run_reruns_as_a_noop(straight, tiny_config, capsys):
  workdir, ref = straight
  before = sorted(p.name for p in (workdir / "checkpoints").iterdir())
  again = train_run(tiny_config, workdir)
  assert again == json.loads((workdir / "summary.json").read_text())
  assert again["test"] == ref["test"]
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == before
  assert "Test split" in capsys.readouterr().out


def test_checkpoint_from_another_model_is_refused(straight, tiny_config):
  workdir, _ = straight
  tiny_config.model.widths = (8, 32)
  with pytest.raises(UserError, match="run with other settings.*model.widths.*new --workdir"):
    train_run(tiny_config, workdir)


@pytest.mark.parametrize("key,value", [("train.batch_size", 4), ("train.learning_rate", 3e-3),
                                       ("train.optimizer", "sgd"), ("data.augment.max_scale", 0.2),
                                       ("data.split_seed", 1), ("train.seed", 5)])
def test_a_checkpoint_of_other_training_settings_is_refused(straight, tiny_config, key, value):
  workdir, _ = straight
  override(tiny_config, key, value)
  with pytest.raises(UserError, match=rf"run with other settings \(differs in {key}\), and resuming would mix"):
    train_run(tiny_config, workdir)


def test_a_checkpoint_of_another_dataset_folder_is_refused(straight, tiny_config, tiny_nih):
  workdir, _ = straight
  with pytest.raises(UserError, match=r"differs in data_dir"):
    train_run(tiny_config, workdir, data_dir=str(tiny_nih))


def test_settings_that_change_no_result_resume(straight, tiny_config, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(straight[0], workdir)
  ref = straight[1]
  tiny_config.data.num_threads, tiny_config.model.lowering, tiny_config.checkpoint.keep = 1, "xla", 5
  tiny_config.train.eval_batch_size = 16
  assert train_run(tiny_config, workdir)["test"] == ref["test"]  # the finished run, recognised as the same
  # Other eval settings: the same finished run, its test split reported again with them.
  tiny_config.eval.bootstrap, tiny_config.eval.confidence = 50, 0.9
  again = train_run(tiny_config, workdir)
  assert again["epochs"] == ref["epochs"] and again["test"]["interval_confidence"] == 0.9
  assert {k: again["test"][k] for k in ("tn", "fp", "fn", "tp", "auc")} == \
      {k: ref["test"][k] for k in ("tn", "fp", "fn", "tp", "auc")}
  assert json.loads((workdir / "summary.json").read_text())["config"]["eval"]["bootstrap"] == 50


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(straight, tiny_config, tmp_path, caplog):
  _, ref = straight
  tiny_config.train.epochs = 1
  train_run(tiny_config, tmp_path)
  latest = max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  for f in (tmp_path / "checkpoints" / str(latest) / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"corrupt")
  tiny_config.train.epochs = 2
  resumed = train_run(tiny_config, tmp_path)
  assert any("unreadable" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
  assert learning(resumed["epochs"]) == learning(ref["epochs"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  tiny_config.train.optimizer = "sgd"
  tiny_config.train.schedule = "warmup_cosine"  # lr 0 at step 0, then astronomically large
  tiny_config.train.learning_rate = 1e38
  tiny_config.train.warmup_steps = 4
  tiny_config.checkpoint.every_steps = 1
  with pytest.raises(UserError, match=r"NaN/inf at step 2; the last good checkpoint \(step 1\) is kept"):
    train_run(tiny_config, tmp_path)
  step, state = final_state(tmp_path)
  assert step == 1
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_unwritable_workdir(tiny_config, tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(UserError, match="--workdir .* is not writable"):
    train_run(tiny_config, tmp_path / "file" / "run")


def test_empty_split_is_named(tiny_config, tmp_path):
  # No synthetic film has pneumonia and none is 'No Finding': no positives and no negatives.
  tiny_config.data.synthetic.pneumonia_fraction = 0.0
  tiny_config.data.synthetic.other_finding_fraction = 0.999  # seeded: none of the tiny set draws No Finding
  with pytest.raises(UserError, match="split 'train' is empty after applying data.target='Pneumonia', "
                                      "data.negatives='no_finding'"):
    train_run(tiny_config, tmp_path)


def test_missing_data_dir(tiny_config, tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    train_run(tiny_config, tmp_path / "w", data_dir=str(tmp_path / "nope"))
  (tmp_path / "Data_Entry_2017.csv").write_text("")
  with pytest.raises(UserError, match=r"Data_Entry_2017.csv is a file; data.dataset=nih reads a folder"):
    train_run(tiny_config, tmp_path / "w", data_dir=str(tmp_path / "Data_Entry_2017.csv"))


def test_one_class_test_split_reports_auc_undefined(tiny_config, tiny_nih, tmp_path, capsys):
  data = tmp_path / "nih"
  shutil.copytree(tiny_nih, data)
  test_names = set((data / "test_list.txt").read_text().split())
  csv = data / "Data_Entry_2017.csv"
  lines = csv.read_text().splitlines()
  lines = [lines[0]] + [l.replace(l.split(",")[1], "No Finding", 1) if l.split(",")[0] in test_names else l
                        for l in lines[1:]]
  csv.write_text("\n".join(lines) + "\n")
  tiny_config.train.epochs = 1
  summary = train_run(tiny_config, tmp_path / "w", data_dir=str(data))
  assert summary["test"]["auc"] is None and summary["test"]["tp"] == 0
  assert "AUC undefined" in capsys.readouterr().out
  assert synthetic.MARKER in {p.name for p in data.iterdir()}


def _kermany_tree(root):
  rng = np.random.default_rng(0)
  from PIL import Image
  for split, per_class in (("train", 24), ("val", 2), ("test", 8)):
    for cls in ("NORMAL", "PNEUMONIA"):
      (root / split / cls).mkdir(parents=True)
      for i in range(per_class):
        film = (synthetic.render_film(rng, 48, cls == "PNEUMONIA") * 255).astype(np.uint8)
        name = f"person{i}_bacteria_{i}.jpeg" if cls == "PNEUMONIA" else f"IM-{i:04d}-0001.jpeg"
        image = Image.fromarray(film)
        (image.convert("RGB") if i % 3 == 0 else image).save(root / split / cls / f"{split}{name}")
  return root


def test_trains_on_a_kermany_tree(tiny_config, tmp_path):
  tiny_config.data.dataset = "kermany"
  tiny_config.data.cache_dir = ""
  tiny_config.train.epochs = 1
  summary = train_run(tiny_config, tmp_path / "w", data_dir=str(_kermany_tree(tmp_path / "chest_xray")))
  assert summary["split_sizes"]["test"] == 16 and summary["split_positives"]["test"] == 8
  assert summary["split_sizes"]["train"] + summary["split_sizes"]["val"] == 52


def test_trains_on_a_medmnist_npz(tiny_config, tmp_path):

  tiny_config.data.dataset = "medmnist"
  tiny_config.data.cache_dir = ""
  tiny_config.train.epochs = 1
  summary = train_run(tiny_config, tmp_path / "w", data_dir=str(write_npz(tmp_path / "p.npz", counts=(40, 8, 10))))
  assert summary["split_sizes"] == {"train": 40, "val": 8, "test": 10}
  assert summary["test"]["tn"] + summary["test"]["fp"] + summary["test"]["fn"] + summary["test"]["tp"] == 10


def test_class_balanced_sampling_run(tiny_config, tmp_path):
  tiny_config.train.class_balance = "sampling"
  tiny_config.train.epochs = 1
  summary = train_run(tiny_config, tmp_path)
  negatives = summary["split_sizes"]["train"] - summary["split_positives"]["train"]
  assert summary["epochs"][0]["step"] == 2 * negatives // tiny_config.train.batch_size
  assert summary["pos_weight"] == 1.0


@pytest.mark.slow
def test_worker_processes_train_exactly_like_threads(straight, tiny_config, tmp_path):
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags, as under run.py
  _, ref = straight
  tiny_config.data.worker_processes = 2
  summary = train_run(tiny_config, tmp_path)
  assert learning(summary["epochs"]) == learning(ref["epochs"])


@pytest.fixture(scope="module", params=["resnet18", "resnet50", "densenet121"])
def backbone_run(request, tmp_path_factory, shared_cache):
  """A tiny variant of each backbone trained for the tiny config's 2 epochs in one go."""
  from jaxcxr.configs import tiny
  config = tiny.get_config(request.param)
  config.data.cache_dir = str(shared_cache)
  workdir = tmp_path_factory.mktemp(request.param)
  return config, workdir, train_run(config, workdir)


@pytest.mark.slow
def test_each_backbone_trains_end_to_end_with_batchnorm(backbone_run):
  config, workdir, summary = backbone_run
  assert summary["config"]["model"]["name"] == config.model.name and summary["lowering"] == conv.backbone_module("cpu")[1]
  assert [r["epoch"] for r in summary["epochs"]] == [1, 2]
  t = summary["test"]
  assert t["tn"] + t["fp"] + t["fn"] + t["tp"] == summary["split_sizes"]["test"]
  _, state = final_state(workdir)
  stats = jax.tree.leaves(state["batch_stats"])
  assert stats and any(np.abs(np.asarray(s)).max() > 0 for s in stats)  # the running averages moved


@pytest.mark.slow
def test_batchnorm_model_resumes_bitwise_after_a_crash(backbone_run, tmp_path, monkeypatch):
  config, ref_dir, ref = backbone_run
  resumed = crash_then_resume(config, tmp_path, monkeypatch)
  assert learning(resumed["epochs"]) == learning(ref["epochs"]) and resumed["test"] == ref["test"]
  assert_same_state(final_state(tmp_path)[1], final_state(ref_dir)[1])


@pytest.mark.slow
@pytest.mark.parametrize("backbone_run", ["resnet18"], indirect=True)
def test_a_run_whose_weights_file_is_gone_reruns_and_extends_from_its_checkpoint(backbone_run, tmp_path, caplog):
  config, ref_dir, ref = backbone_run
  shutil.copytree(ref_dir, tmp_path / "run")
  gone = tmp_path / "moved-away" / "resnet18.safetensors"  # what the run started from, moved since
  config = override(override(copy.deepcopy(config), "model.init_from", str(gone)), "train.epochs", 3)
  caplog.set_level(logging.INFO, logger="jaxcxr")
  with pytest.raises(UserError, match=r"model.init_from=.*resnet18.safetensors' is not a file"):
    train_run(config, tmp_path / "fresh")  # a run with no checkpoint needs the file
  extended = train_run(config, tmp_path / "run")
  assert learning(extended["epochs"][:2]) == learning(ref["epochs"]) and len(extended["epochs"]) == 3
  assert "model.init_from=" + str(gone) + " is gone" in caplog.text


def test_test_metrics_come_with_patient_bootstrap_intervals(straight, capsys):
  _, summary = straight
  t = summary["test"]
  assert t["threshold"] == {"rule": "0.5", "value": 0.5, "chosen": False, "note": None}
  for name in ("accuracy", "precision", "recall", "specificity", "f1", "auc"):
    if t[name] is not None:
      low, high = t["intervals"][name]
      assert low <= t[name] <= high
  assert t["interval_confidence"] == 0.95


def test_an_operating_point_chosen_on_validation_is_applied_to_test(tiny_config, tmp_path, capsys):
  tiny_config.train.epochs = 1
  tiny_config.eval.threshold = "recall:1.0"
  tiny_config.eval.bootstrap = 0
  summary = train_run(tiny_config, tmp_path)
  t = summary["test"]
  assert t["threshold"]["chosen"] and 0.0 <= t["threshold"]["value"] < 1.0 and "intervals" not in t
  assert t["tn"] + t["fp"] + t["fn"] + t["tp"] == summary["split_sizes"]["test"]
  assert "eval.threshold=recall:1.0, chosen on validation" in capsys.readouterr().out


def test_a_bad_threshold_rule_stops_before_any_work(tiny_config, tmp_path):
  tiny_config.eval.threshold = "median"
  with pytest.raises(UserError, match="eval.threshold='median'"):
    train_run(tiny_config, tmp_path)
  assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("damage", [
    lambda text: text[:len(text) // 2],  # as a disk that filled mid-write might leave it
    lambda text: json.dumps({**json.loads(text), "test": "passed"}),  # hand-edited
    lambda text: json.dumps({**json.loads(text), "test": {}}),
])
def test_a_damaged_summary_is_rewritten_by_rerunning(straight, tiny_config, tmp_path, caplog, damage):
  workdir = tmp_path / "copy"
  shutil.copytree(straight[0], workdir)
  (workdir / "summary.json").write_text(damage((workdir / "summary.json").read_text()))
  again = train_run(tiny_config, workdir)
  assert re.search(r"summary.json is damaged.*: the test split is reported again", caplog.text)
  assert again["test"] == straight[1]["test"]
  assert json.loads((workdir / "summary.json").read_text()) == json.loads(json.dumps(again))  # rewritten whole


def test_fewer_epochs_than_a_finished_run_says_the_run_is_not_cut_back(straight, tiny_config, tmp_path, caplog):
  workdir = tmp_path / "copy"
  shutil.copytree(straight[0], workdir)
  tiny_config.train.epochs = 1
  again = train_run(tiny_config, workdir)
  assert again["step"] == straight[1]["step"] == 16
  assert "The checkpoint is at step 16, past this config's 8 steps (train.epochs=1)" in caplog.text
