"""External validation (`--mode=evaluate`): a trained run applied unchanged to another dataset's test split, finding
by finding, against its own internal test AUROC."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from jaxcxr import external, metrics, workdir
from jaxcxr.configs import tiny
from jaxcxr.data import findings, nih
from jaxcxr.errors import UserError
from tests.support import run_command, train_run, write_kermany, write_npz


def _other(dataset, **data):
  config = tiny.get_config()
  config.data.dataset = dataset
  config.data.update(data)
  return config.data


def _fingerprint(folder):
  """Every file of the run outside external/, with its bytes' hash: what evaluating must leave as it was."""
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
          if p.is_file() and external.FOLDER not in p.relative_to(folder).parts}


@pytest.fixture(scope="module")
def nih_all_run(tmp_path_factory, shared_cache):
  """A tiny run of NIH's 14 findings on the synthetic default."""
  config = tiny.get_config()
  config.data.cache_dir, config.data.target, config.eval.bootstrap = str(shared_cache), "all", 200
  folder = tmp_path_factory.mktemp("nih-all")
  return folder, train_run(config, folder)


@pytest.mark.slow
def test_a_synthetic_nih_run_is_reported_on_a_chexpert_test_split_finding_by_finding(nih_all_run, chexpert_dir,
                                                                                      capsys):
  folder, internal = nih_all_run
  before = _fingerprint(folder)
  summary = external.evaluate(folder, _other("chexpert"), str(chexpert_dir))
  shared = [f for f in nih.FINDINGS if f in findings.CHEXPERT_LABELER.values()]
  assert list(summary["findings"]) == shared  # the 7 both label, in the run's order
  assert summary["not_shared"] == {"run_only": [f for f in nih.FINDINGS if f not in shared],
                                   "dataset_only": list(findings.CHEXPERT_ONLY)}
  assert summary["films"] == 18 and summary["split"] == "test"  # valid.csv's films
  for name, r in summary["findings"].items():
    own = internal["test"]["findings"][name]
    assert r["internal_auc"] == pytest.approx(own["auc"]) if own["auc"] is not None else r["internal_auc"] is None
    assert r["threshold"] == pytest.approx(own["threshold"]["value"])  # the run's own operating point
    if r["auc"] is not None and r["internal_auc"] is not None:
      assert r["auc_difference"] == pytest.approx(r["auc"] - r["internal_auc"])
      low, high = r["auc_difference_interval"]
      assert -1.0 <= low <= high <= 1.0
  assert any(r["auc_difference"] is not None for r in summary["findings"].values())
  out = folder / external.FOLDER / "chexpert"
  assert json.loads((out / "summary.json").read_text())["findings"].keys() == summary["findings"].keys()
  assert "<img" in (out / "report.html").read_text()
  printed = capsys.readouterr().out
  assert all(name in printed for name in shared) and "not scored (the run predicts" in printed
  assert _fingerprint(folder) == before  # the run itself is only read


def test_the_difference_interval_draws_the_external_set_as_its_own_interval_does():
  rng = np.random.default_rng(0)
  labels, scores = rng.integers(0, 2, 60), rng.uniform(size=60)
  patients = [f"p{i // 2}" for i in range(60)]
  perfect = np.repeat([0, 1], 40)  # the other set separates perfectly: its AUROC is 1 in every draw
  other_patients = [f"q{i}" for i in range(80)]
  own = metrics.bootstrap_intervals(labels, scores, scores > 0.5, patients, 300, 0.9, 3)["auc"]
  difference = metrics.auc_difference_interval(labels, scores, patients, perfect, perfect + 0.5, other_patients,
                                               300, 0.9, 3)
  np.testing.assert_allclose(difference, [own[0] - 1.0, own[1] - 1.0])


@pytest.mark.slow
def test_a_run_without_test_scores_reports_again_when_rerun_and_evaluate_says_so(straight, tiny_config, tmp_path,
                                                                                 chexpert_dir):
  folder = tmp_path / "run"
  shutil.copytree(straight[0], folder, ignore=shutil.ignore_patterns(".lock"))
  (folder / workdir.TEST_SCORES).unlink()
  summary = external.evaluate(folder, _other("chexpert", target="Pneumonia"), str(chexpert_dir))
  assert summary["findings"]["Pneumonia"]["internal_auc"] is None
  assert "test_scores.npz is missing" in summary["notes"][0]
  train_run(tiny_config, folder)  # a finished run: only its test report is made again
  assert workdir.read_test_scores(folder)["labels"].shape == (straight[1]["split_sizes"]["test"], 1)


@pytest.mark.slow
def test_evaluate_on_the_command_line_matches_pneumonia_to_a_kermany_class(straight, tmp_path):
  folder = tmp_path / "run"
  shutil.copytree(straight[0], folder, ignore=shutil.ignore_patterns(".lock"))
  tree = write_kermany(tmp_path / "chest_xray")
  result = run_command("--mode=evaluate", f"--workdir={folder}", f"--data_dir={tree}", "--config.data.dataset=kermany")
  assert result.returncode == 0, result.stderr
  assert "Pneumonia" in result.stdout and (folder / "external" / "kermany" / "summary.json").is_file()


@pytest.mark.parametrize("case", ["no shared finding", "no data_dir", "a folder of another format"])
def test_evaluate_refuses_what_it_cannot_score_in_one_line(straight, tmp_path, case):
  folder = tmp_path / "run"
  shutil.copytree(straight[0], folder, ignore=shutil.ignore_patterns(".lock", "cache"))
  if case == "no shared finding":
    with pytest.raises(UserError, match="the run predicts Pneumonia and data.dataset=medmnist labels positive: no "
                                        "finding in common"):
      external.evaluate(folder, _other("medmnist"), str(write_npz(tmp_path / "pneumoniamnist.npz")))
  elif case == "no data_dir":
    with pytest.raises(UserError, match="--mode=evaluate needs --data_dir"):
      external.evaluate(folder, _other("chexpert"), None)
  else:  # refused after its folder was made: the folder goes too
    with pytest.raises(UserError, match="no NIH metadata in"):
      external.evaluate(folder, _other("nih"), str(tmp_path))
  assert not (folder / external.FOLDER).exists()


@pytest.mark.slow
def test_test_scores_of_another_step_than_the_network_applied_are_not_compared(straight, tmp_path, chexpert_dir):
  folder = tmp_path / "run"
  shutil.copytree(straight[0], folder, ignore=shutil.ignore_patterns(".lock"))
  saved = workdir.read_test_scores(folder)
  workdir.write_test_scores(folder, saved["step"] + 1, saved["labels"], saved["logits"], saved["patients"])
  summary = external.evaluate(folder, _other("chexpert", target="Pneumonia"), str(chexpert_dir))
  assert summary["findings"]["Pneumonia"]["internal_auc"] is None
  assert f"the run's internal test scores step {saved['step'] + 1}'s" in summary["notes"][0]


def test_damaged_test_scores_are_named_and_a_rerun_reports_again(straight, tmp_path):
  folder = tmp_path / "run"
  shutil.copytree(straight[0], folder, ignore=shutil.ignore_patterns(".lock", "cache", "checkpoints"))
  assert workdir.test_scores_intact(folder)
  (folder / workdir.TEST_SCORES).write_bytes((folder / workdir.TEST_SCORES).read_bytes()[:100])  # cut short
  with pytest.raises(UserError, match="test_scores.npz is damaged .*rerun training with the same command"):
    workdir.read_test_scores(folder)
  assert not workdir.test_scores_intact(folder)  # so a rerun of the finished run reports the test split again
