"""The GPU acceptance command, on the CPU at tiny sizes (`--platform=cpu --quick`), so it cannot rot where CI has
no GPU: every part runs, and its JSON and tables are written."""

import json
import os
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow  # every benchmark and training command once, each in its own process


def test_every_part_runs_and_its_tables_are_written(tmp_path):
  out = tmp_path / "check"
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.gpu_check", "--platform=cpu", "--quick",
                           f"--out={out}"], cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / "gpu_check.json").read_text())
  assert report["platform"] == "cpu" and report["quick"] and report["versions"]["jax"]
  failed = {name: r["reason"] for name, r in report["parts"].items() if not r["ok"]}
  assert not failed, failed
  assert set(report["parts"]) == {"tests", "step paper_cnn batch 8 float32", "step resnet18 batch 8 float32",
                                  "end_to_end", "speedup", "chexnet", "predict"}
  step = report["parts"]["step resnet18 batch 8 float32"]["figures"]
  assert step["model"]["name"] == "resnet18" and step["torch"]["images_per_s"] > 0
  assert report["parts"]["predict"]["figures"]["explanations"] == report["parts"]["predict"]["figures"]["films"] > 0
  assert (out / "chexnet" / "report.html").is_file()
  table = (out / "gpu_check.md").read_text()
  for heading in ("## Parts", "## Train step against PyTorch", "## End to end against the step alone",
                  "## Speedup over cpu1", "## One CheXNet epoch"):
    assert heading in table
  assert "7 of 7 parts ran" in result.stderr


def test_without_a_gpu_the_full_check_stops_in_one_line_before_any_part(tmp_path):
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.gpu_check", f"--out={tmp_path / 'check'}"],
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: --platform=gpu but JAX has no GPU backend")
  assert not (tmp_path / "check").exists()


# In its own process: the command's absl flags would clash with the other benchmarks' imported by other tests.
FAILING_PART = """
import sys
from jaxcxr import cli
from jaxcxr.perf import gpu_check
results = {"tests": {"ok": True, "seconds": 1.0, "figures": {"passed": 3}},
           "speedup": {"ok": False, "seconds": 2.0, "reason": "error: no room on purpose"}}
gpu_check.parts = lambda out, platform, quick: [gpu_check.Part(n, [sys.executable], 60, dict) for n in results]
gpu_check.run_part = lambda part: results[part.name]
cli.run(gpu_check.main)
"""


def test_a_failed_part_is_an_error_exit_naming_it_and_the_others_are_kept(tmp_path):
  result = subprocess.run([sys.executable, "-c", FAILING_PART, "--platform=cpu", f"--out={tmp_path / 'check'}"],
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: 1 of 2 parts failed (speedup); each one's reason is in ")
  assert "what the others measured is kept" in result.stderr and "1 of 2 parts ran" in result.stderr
  parts = json.loads((tmp_path / "check" / "gpu_check.json").read_text())["parts"]
  assert parts["tests"]["figures"] == {"passed": 3} and parts["speedup"]["reason"] == "error: no room on purpose"
  assert "error: no room on purpose" in (tmp_path / "check" / "gpu_check.md").read_text()
