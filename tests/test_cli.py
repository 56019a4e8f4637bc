"""Every absl command shares one entry (`jaxcxr.cli`): a bad config override or config file is one line, the
same for training and for the perf commands."""

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

PERF_COMMANDS = ["jaxcxr.perf.bench", "jaxcxr.perf.data_bench", "jaxcxr.perf.speedup"]  # run.py: test_config.py


def _command(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                        capture_output=True, text=True, timeout=120)


def _one_line(result) -> str:
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
  return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("module", PERF_COMMANDS)
def test_an_unknown_config_key_is_one_line_for_every_perf_command(module, tmp_path):
  line = _one_line(_command(module, "--config.train.no_such_key=1", f"--out={tmp_path / 'out'}"))
  assert line.startswith("error: unknown config key in a --config override") and "configs/default.py" in line


@pytest.mark.parametrize("args,message", [
    (["--config=configs/none.py"], "error: --config=configs/none.py could not be loaded"),
    (["--config.train.epochs=0"], "error: invalid config: train.epochs=0 must be at least 1"),
])
def test_a_config_that_cannot_load_or_run_is_one_line_before_any_work(args, message, tmp_path):
  assert _one_line(_command("jaxcxr.perf.bench", *args, f"--out={tmp_path / 'out'}")).startswith(message)
  assert not (tmp_path / "out").exists()
