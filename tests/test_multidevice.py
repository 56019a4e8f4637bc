"""Data parallel training over several devices, on 4 CPU devices (XLA's host-platform device count), in a
child process because the device count is fixed when JAX starts.

Tolerances: the 4-device runs reduce the same global batch in another order, so float32 losses may differ in
the last bits; they are compared to a relative 1e-5, and the test counts and AUC exactly.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow  # 4 CPU devices in a child process, many runs


SCRIPT = textwrap.dedent("""
    import json, pathlib, sys
    import jax
    from jaxcxr import devices, experiment
    from jaxcxr.configs import tiny
    from jaxcxr.errors import UserError

    out, network = pathlib.Path(sys.argv[1]), sys.argv[2]

    def config(epochs=2, **train_keys):
      c = tiny.get_config(network)
      c.data.cache_dir = str(out / "cache")
      c.train.epochs = epochs
      c.train.update(train_keys)
      if network == "paper_cnn":
        c.model.lowering = "xla"  # the same lowering for every device count, so only the layout differs
      return c

    def run(name, n, **kw):
      s = experiment.train_and_evaluate(config(**kw), out / name, jax.devices()[:n])
      return {"epochs": [[r["train_loss"], r["val_loss"], r["val_auc"]] for r in s["epochs"]],
              "test": {k: s["test"][k] for k in ("tn", "fp", "fn", "tp", "auc")}, "device": s["device"]}

    result = {"one": run("one", 1), "four": run("four", 4)}
    if network == "paper_cnn":
      run("four_then_one", 4, epochs=1)
      result["four_then_one"] = run("four_then_one", 1)
      run("one_then_four", 1, epochs=1)
      result["one_then_four"] = run("one_then_four", 4)
      direct = config()
      direct.model.lowering = "direct"
      attempts = {"batch": lambda: experiment.train_and_evaluate(config(batch_size=6), out / "b", jax.devices()),
                  "count": lambda: devices.select_devices("cpu", 8),
                  "direct": lambda: experiment.train_and_evaluate(direct, out / "d", jax.devices())}
      errors = {}
      for name, attempt in attempts.items():
        try:
          attempt()
          errors[name] = None
        except UserError as e:
          errors[name] = str(e)
      result["errors"] = errors
    print("RESULT " + json.dumps(result))
""")


def _runs(tmp_path, network):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), network], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])


def _close(a, b):
  assert len(a["epochs"]) == len(b["epochs"])
  for x, y in zip(a["epochs"], b["epochs"]):
    assert x == pytest.approx(y, rel=1e-5)
  assert a["test"] == b["test"]


@pytest.fixture(scope="module")
def paper_runs(tmp_path_factory):
  return _runs(tmp_path_factory.mktemp("multidevice"), "paper_cnn")


def test_four_devices_train_as_one(paper_runs):
  _close(paper_runs["four"], paper_runs["one"])
  assert paper_runs["four"]["device"]["num_devices"] == 4
  assert paper_runs["four"]["device"]["devices"] == ["cpu:0", "cpu:1", "cpu:2", "cpu:3"]
  assert paper_runs["one"]["device"]["num_devices"] == 1 and paper_runs["one"]["device"]["local_device_count"] == 4


@pytest.mark.parametrize("resumed", ["four_then_one", "one_then_four"])
def test_a_checkpoint_resumes_on_another_device_count(paper_runs, resumed):
  _close(paper_runs[resumed], paper_runs["one"])


def test_impossible_device_settings_are_one_line(paper_runs):
  errors = paper_runs["errors"]
  assert "train.batch_size=6 does not divide over the run's 4 devices" in errors["batch"]
  assert "train.num_devices=8 but only 4 cpu device(s) are visible" in errors["count"]
  assert "model.lowering=direct computes on one device, not over 4" in errors["direct"]


def test_batchnorm_statistics_are_those_of_the_global_batch(tmp_path):
  runs = _runs(tmp_path, "resnet18")
  _close(runs["four"], runs["one"])
