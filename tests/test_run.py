"""run.py as a user runs it: exit codes and one-line errors, no tracebacks."""

import ctypes
import json

import pytest

from tests.support import run_command


def _last_line(stderr: str) -> str:
  return stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path, shared_cache):
  result = run_command("--config=configs/tiny.py", f"--workdir={tmp_path}", f"--config.data.cache_dir={shared_cache}")
  assert result.returncode == 0, result.stderr
  assert "Test split" in result.stdout and "accuracy" in result.stdout
  assert "SYNTHETIC" in result.stderr and "epoch   2 |" in result.stderr
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["step"] > 0
  # The CPU training entry retains freed host memory (jaxcxr.hostmem), where the C library is glibc.
  assert summary["device"]["host_memory_retained"] is hasattr(ctypes.CDLL(None), "gnu_get_libc_version")


def test_gpu_missing_is_one_clear_line(tmp_path):
  result = run_command("--platform=gpu", f"--workdir={tmp_path}")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  line = _last_line(result.stderr)
  assert line.startswith("error: --platform=gpu but JAX has no GPU backend") and "pip install '.[gpu]'" in line


@pytest.mark.parametrize("args, expected", [
    (["--platform=tpu"], "value should be one of <cpu|gpu>"),
    (["--config.train.epochz=3"], "epochz"),
    (["--config.train.epochs=zero"], "epochs"),
    (["--num_processes=0"], "flag --num_processes=0: 0 is not a positive integer"),
    (["--inputs=film.png", "--explain"], "error: --explain, --inputs would be ignored with --mode=train: they apply "
                                         "to --mode=predict only"),
    (["--mode=predict", "--inputs=film.png", "--config.train.epochs=3", "--data_dir=/data"],
     "error: --config, --data_dir would be ignored with --mode=predict: predict applies the run's own config.json"),
    (["--strict_inputs", "--platforms=cuda"], "error: --platforms, --strict_inputs would be ignored with --mode=train: "
                                              "they apply to --mode=export/predict only; drop them"),
    (["--mode=export", "--platform=gpu"], "error: --platform would be ignored with --mode=export: export lowers on "
                                           "the CPU for each platform of --platforms (e.g. --platforms=cpu,cuda)"),
    (["--mode=evaluate", "--num_processes=2"], "error: --num_processes would be ignored with --mode=evaluate: evaluate "
                                               "applies the run in one process, on one device of --platform"),
    (["--config.train.epochs=2", "--config.train.epochs=3"],
     "error: --config.train.epochs is given twice ('2' and '3'); give it once"),
    (["--platform", "cpu", "--platform=gpu"], "error: --platform is given twice ('cpu' and 'gpu'); give it once"),
    (["--external_split=all"], "error: --external_split would be ignored with --mode=train: they apply to "
                               "--mode=evaluate only; drop them, or add --mode=evaluate"),
    (["--mode=export", "--config.eval.calibration=none", "--explain"],
     "error: --config, --explain would be ignored with --mode=export: export applies the run's own config.json"),
])
def test_bad_flags_are_rejected(tmp_path, args, expected):
  result = run_command(*args, f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  assert expected in result.stderr
  assert not list(tmp_path.iterdir())  # refused before anything is written


def test_missing_data_dir(tmp_path):
  result = run_command(f"--data_dir={tmp_path / 'nope'}", f"--workdir={tmp_path / 'w'}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert _last_line(result.stderr).startswith(f"error: --data_dir={tmp_path / 'nope'} does not exist")


def test_describe_mode(tmp_path, tiny_nih):
  result = run_command("--mode=describe", f"--data_dir={tiny_nih}", f"--workdir={tmp_path}")
  assert result.returncode == 0, result.stderr
  report = json.loads((tmp_path / "describe.json").read_text())
  assert report["all"]["missing_on_disk"] == 0
  assert all(v == 0 for v in report["shared_patients"].values())
  assert "published test" in result.stdout
