"""NIH's 14 findings at once (`data.target=all`): labels, loss, metrics, CheXNet's schedule, end-to-end runs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcxr import evaluate, metrics, optim, train_step
from jaxcxr.report import console
from jaxcxr.configs import chexnet, tiny
from jaxcxr.data import cache, nih
from jaxcxr.errors import UserError
from tests.support import crash_then_resume, final_state, learning, references, train_run


def test_target_all_gives_one_column_per_finding_matched_by_whole_name(tiny_nih):
  table = nih.read_release(tiny_nih, "all", "no_finding", 0.15, 0.2, 0)
  assert set(nih.FINDINGS) <= set(table.columns)
  sets = table["labels"].str.split("|").map(set)
  for finding in nih.FINDINGS:
    np.testing.assert_array_equal(table[finding].to_numpy(), sets.map(lambda s, f=finding: f in s).to_numpy())
  # Every film is kept (No Finding is 0 for each finding), and `label` says whether it has any finding.
  assert table["label"].notna().all()
  np.testing.assert_array_equal(table["label"].to_numpy(), (table[list(nih.FINDINGS)].sum(axis=1) > 0).to_numpy())


def test_a_multi_label_cache_keeps_its_label_matrix(tmp_path, tiny_nih):
  table = nih.load_examples(tiny_nih, "all", "no_finding", (), 0.15, 0.2, 0)
  rows = table[table["split"] == "val"]
  split = cache.build_or_load(rows, "val", tmp_path, 32, "pad", "error", 1, targets=nih.FINDINGS)
  again = cache.open_split(next(tmp_path.glob("val-*")))
  for s in (split, again):
    assert s.targets == nih.FINDINGS and s.outputs == 14 and s.labels.shape == (len(rows), 14)
    np.testing.assert_array_equal(s.labels, rows[list(nih.FINDINGS)].to_numpy())
  assert split.positives_per_target()["Pneumonia"] == int(rows["Pneumonia"].sum())
  assert split.num_positive == int((rows[list(nih.FINDINGS)].sum(axis=1) > 0).sum())


def test_the_loss_weights_each_findings_positives_and_averages_over_findings():
  logits = jnp.array([[0.3, -1.0], [2.0, 0.5]])
  labels = jnp.array([[1, 0], [0, 1]])
  loss = train_step.weighted_bce(logits, labels, np.array([3.0, 5.0]))
  plain = optax.sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32))
  expected = jnp.array([(3.0 * plain[0, 0] + plain[0, 1]) / 2, (plain[1, 0] + 5.0 * plain[1, 1]) / 2])
  np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_mean_auc_skips_findings_with_one_class():
  labels = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
  scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.3, 0.4], [0.6, 0.2, 0.3], [0.7, 0.4, 0.1]])
  per = metrics.per_target_auc(labels, scores)
  assert per[1] is None and per[0] == 0.75 and per[2] == 0.5
  assert metrics.mean_auc(labels, scores) == pytest.approx(0.625)
  assert metrics.mean_auc(labels[:, 1:2], scores[:, 1:2]) is None


def test_the_mean_auc_interval_uses_the_same_patient_draws_as_each_finding():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, (60, 1))
  scores = rng.uniform(size=(60, 1)) + 0.3 * labels
  patients = [str(i // 2) for i in range(60)]
  one = metrics.bootstrap_intervals(labels[:, 0], scores[:, 0], scores[:, 0] > 0.5, patients, 200, 0.9, 7)
  # With one finding the mean is that finding's AUC, so its interval is the same to the last bit.
  assert metrics.mean_auc_interval(labels, scores, patients, 200, 0.9, 7) == one["auc"]


def test_plateau_cuts_the_learning_rate_each_time_validation_stalls():
  cfg = chexnet.get_config().train
  assert optim.plateau_learning_rate(cfg, []) == 1e-3
  assert optim.plateau_learning_rate(cfg, [1.0, 0.9, 0.8]) == 1e-3
  assert optim.plateau_learning_rate(cfg, [1.0, 0.9, 0.95]) == pytest.approx(1e-4)
  assert optim.plateau_learning_rate(cfg, [1.0, 1.1, 1.2, 0.5, 0.6]) == pytest.approx(1e-6)
  cfg.plateau_patience = 2
  assert optim.plateau_learning_rate(cfg, [1.0, 0.9, 0.95]) == 1e-3
  assert optim.plateau_learning_rate(cfg, [1.0, 0.9, 0.95, 0.91]) == pytest.approx(1e-4)


def test_plateau_writes_its_learning_rate_into_the_optimizer_state():
  cfg = chexnet.get_config().train
  tx = optim.create_optimizer(cfg, 100)
  params = {"w": jnp.ones(3)}
  state = optim.after_epoch(cfg, tx.init(params), [1.0, 1.2], jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(1e-4)
  updates, _ = tx.update({"w": jnp.ones(3)}, state, params)
  np.testing.assert_allclose(updates["w"], -1e-4, rtol=1e-3)  # Adam's first step moves by the learning rate


def _multilabel_config(shared_cache, network="densenet121"):
  config = tiny.get_config(network)
  config.data.cache_dir = str(shared_cache)
  config.data.target = "all"
  config.train.schedule = "plateau"
  config.train.epochs = 3
  config.eval.threshold = "youden"
  config.eval.bootstrap = 100
  return config


def _stall_validation(monkeypatch):
  """Makes every epoch's validation loss worse than the last (by the step count), so `plateau` must cut."""
  epoch_metrics = evaluate.epoch_metrics

  def stalled(score, state, split):
    report = epoch_metrics(score, state, split)
    return {**report, "loss": report["loss"] + int(state.step)}

  monkeypatch.setattr(evaluate, "epoch_metrics", stalled)


@pytest.fixture(scope="module")
def multilabel_run(tmp_path_factory, shared_cache):
  config = _multilabel_config(shared_cache)
  workdir = tmp_path_factory.mktemp("multilabel")
  with pytest.MonkeyPatch.context() as monkeypatch:
    _stall_validation(monkeypatch)
    return config, workdir, train_run(config, workdir, report=True)


@pytest.mark.slow
def test_a_multi_label_run_reports_every_finding_as_chexnet_did(multilabel_run, capsys):
  config, workdir, summary = multilabel_run
  t = json.loads((workdir / "summary.json").read_text())["test"]
  assert t["targets"] == list(nih.FINDINGS) and set(t["findings"]) == set(nih.FINDINGS)
  defined = [r["auc"] for r in t["findings"].values() if r["auc"] is not None]
  assert 0 < len(defined) < 14  # the synthetic films hold only some findings, and some splits lack them
  assert t["mean_auc"] == pytest.approx(np.mean(defined)) and t["mean_auc_over"] == len(defined)
  for name, r in t["findings"].items():
    assert r["tn"] + r["fp"] + r["fn"] + r["tp"] == summary["split_sizes"]["test"]
    if r["auc"] is None:
      assert "AUC undefined: the split has only one class" in r["notes"] and name in t["notes"][0]
    elif r["intervals"]["auc"] is not None:
      low, high = r["intervals"]["auc"]
      assert low <= r["auc"] <= high
  low, high = t["mean_auc_interval"]
  assert low <= t["mean_auc"] <= high
  # CheXNet's weights: per finding, positives N/(P+N) and negatives P/(P+N) of the training split.
  train_positives, train_films = summary["split_positives"]["train"], summary["split_sizes"]["train"]
  assert set(train_positives) == set(nih.FINDINGS)
  for k, finding in enumerate(nih.FINDINGS):
    assert summary["neg_weight"][k] == pytest.approx(train_positives[finding] / train_films)
    assert summary["pos_weight"][k] == pytest.approx(1.0 - train_positives[finding] / train_films)
  table = console.summary_text(summary)
  assert "CheXNet" in table and f"mean ({len(defined)} findings)" in table and "Pneumothorax" in table
  _, state = final_state(workdir)
  assert np.asarray(state["params"]["head"]["kernel"]).shape[-1] == 14


@pytest.mark.slow
def test_the_plateau_learning_rate_of_a_run_follows_its_validation_losses(multilabel_run):
  config, workdir, summary = multilabel_run
  _, state = final_state(workdir)
  expected = optim.plateau_learning_rate(config.train, [r["val_loss"] for r in summary["epochs"]])
  assert expected == pytest.approx(1e-5)  # cut after epochs 2 and 3
  assert float(np.asarray(state["opt_state"]["hyperparams"]["learning_rate"])) == pytest.approx(expected)


@pytest.mark.slow
def test_a_multi_label_run_resumes_bitwise_after_a_crash(multilabel_run, tmp_path, monkeypatch):
  config, ref_dir, ref = multilabel_run
  with pytest.MonkeyPatch.context() as stall:  # apart: the crash helper undoes its own patches to resume
    _stall_validation(stall)
    resumed = crash_then_resume(config, tmp_path, monkeypatch)
  assert learning(resumed["epochs"]) == learning(ref["epochs"]) and resumed["test"] == ref["test"]


@pytest.mark.slow
def test_a_checkpoint_of_another_target_is_refused(multilabel_run, shared_cache):
  _, workdir, _ = multilabel_run
  config = _multilabel_config(shared_cache)
  config.data.target = "Pneumonia"
  with pytest.raises(UserError, match="target"):
    train_run(config, workdir)


def test_the_chexnet_config_is_cheXnets_recipe():
  config = chexnet.get_config()
  assert (config.model.name, config.data.image_size, config.data.target) == ("densenet121", 224, "all")
  assert (config.train.optimizer, config.train.learning_rate, config.train.batch_size) == ("adam", 1e-3, 16)
  assert (config.train.schedule, config.train.plateau_factor) == ("plateau", 0.1)
  # The published mean is the mean of the published per-finding figures, which cover exactly the 14 findings.
  assert sorted(nih.CHEXNET_AUROC) == sorted(nih.FINDINGS)
  assert nih.CHEXNET_MEAN_AUROC == pytest.approx(np.mean(list(nih.CHEXNET_AUROC.values())), abs=5e-4)


@pytest.mark.slow
def test_a_multi_label_report_lists_every_finding_and_pools_calibration(multilabel_run):
  _, workdir, _ = multilabel_run
  page = (workdir / "report.html").read_text()
  assert "CheXNet (2017)" in page and all(f"<td>{finding}</td>" in page for finding in nih.FINDINGS)
  assert "every finding pooled" in page
  assert 'alt="confusion matrix"' not in page  # one 2x2 matrix per finding would say less than the table
  assert references(page) == []
