"""Temperature scaling: fitted on validation, it lowers a miscalibrated split's ECE and leaves AUROC and the
operating point's calls as they were; a finished run asked for another calibration reports again."""

import json
import shutil

import ml_collections
import numpy as np
import pytest

from jaxcxr import calibration, evaluate, metrics
from jaxcxr.configs import default
from tests.support import train_run


def _overconfident(n, seed, scale=4.0):
  """Labels and logits `scale` times too confident: the true log-odds of each film are logits / scale."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  true_logodds = 2.0 * ((2 * labels - 1) + rng.normal(size=n))
  return labels, scale * true_logodds


def test_the_fitted_temperature_undoes_a_known_overconfidence():
  labels, logits = _overconfident(20_000, 0)
  temperature, note = calibration.fit_temperature(labels, logits)
  assert note is None and temperature == pytest.approx(4.0, rel=0.05)
  assert calibration.log_loss(labels, logits / temperature) < calibration.log_loss(labels, logits)


@pytest.mark.parametrize("labels, logits, why", [
    ([1, 1, 1], [0.5, 1.0, 2.0], "needs both classes"),
    ([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3], "every validation logit is the same"),
    ([0, 0, 1, 1], [3.0, 2.0, -2.0, -3.0], "too little signal"),   # anti-correlated: no positive temperature helps
    ([0, 0, 1, 1], [-0.2, -0.1, 0.1, 0.2], "separated perfectly"),  # the loss falls without end as T goes to 0
])
def test_no_temperature_is_fitted_where_none_can_be(labels, logits, why):
  temperature, note = calibration.fit_temperature(np.array(labels), np.array(logits))
  assert temperature == 1.0 and why in note


def _eval_config(method, threshold="youden"):
  cfg = ml_collections.ConfigDict(default.get_config().eval.to_dict())
  cfg.calibration, cfg.threshold, cfg.bootstrap = method, threshold, 0
  return cfg


@pytest.mark.parametrize("threshold", ["youden", "recall:0.9"])
def test_calibration_lowers_ece_and_changes_no_ranking_nor_call(threshold):
  val_labels, val_logits = _overconfident(2000, 1)
  test_labels, test_logits = _overconfident(2000, 2)
  none = evaluate._operating_point_report(_eval_config(calibration.NONE, threshold), val_labels, val_logits,
                                          test_labels, test_logits, [str(i) for i in range(2000)])
  scaled = evaluate._operating_point_report(_eval_config(calibration.TEMPERATURE, threshold), val_labels,
                                            val_logits, test_labels, test_logits, [str(i) for i in range(2000)])
  fitted = scaled["calibration"]
  assert fitted["ece_after"] < fitted["ece_before"] / 2 and fitted["brier_after"] < fitted["brier_before"]
  assert none["calibration"]["temperature"] == 1.0 and none["calibration"]["ece_after"] == fitted["ece_before"]
  assert scaled["auc"] == none["auc"]
  assert {k: scaled[k] for k in ("tn", "fp", "fn", "tp")} == {k: none[k] for k in ("tn", "fp", "fn", "tp")}
  # The threshold moved with the probabilities: the same cut through the logits, on the calibrated scale.
  assert metrics.logit(scaled["threshold"]["value"]) * fitted["temperature"] == \
      pytest.approx(metrics.logit(none["threshold"]["value"]), rel=1e-9)


def test_a_finished_run_asked_for_another_calibration_reports_again(straight, tiny_config, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(straight[0], workdir)
  ref = straight[1]
  assert ref["test"]["calibration"]["method"] == calibration.TEMPERATURE
  tiny_config.eval.calibration = calibration.NONE
  again = train_run(tiny_config, workdir)
  assert again["epochs"] == ref["epochs"] and again["test"]["calibration"]["method"] == calibration.NONE
  assert again["test"]["calibration"]["temperature"] == 1.0 and again["test"]["auc"] == ref["test"]["auc"]
  assert json.loads((workdir / "summary.json").read_text())["config"]["eval"]["calibration"] == calibration.NONE


def test_the_default_run_reports_ece_before_and_after(default_run):
  summary = json.loads((default_run / "summary.json").read_text())
  fitted = summary["test"]["calibration"]
  assert fitted["method"] == calibration.TEMPERATURE and fitted["temperature"] > 0
  assert {"ece_before", "ece_after", "brier_before", "brier_after"} <= set(fitted)
  page = (default_run / "report.html").read_text()
  assert "ECE before" in page and "before and after eval.calibration=temperature" in page
