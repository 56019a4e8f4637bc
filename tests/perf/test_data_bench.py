"""The input-pipeline benchmark end to end on a few small films (its timings are not asserted)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # the data benchmark's training runs


def test_json_from_a_small_run(tmp_path):
  out = tmp_path / "bench.json"
  result = subprocess.run(
      [sys.executable, "-m", "jaxcxr.perf.data_bench", "--images=24", "--batches=3", "--train_sizes=48",
       f"--out={out}", f"--workdir={tmp_path / 'scratch'}", "--config.data.image_size=32",
       "--config.train.batch_size=8"],
      cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  data = json.loads(out.read_text())
  assert data["image_size"] == 32 and data["batch_size"] == 8
  assert data["preprocess"]["images"] == 24 and data["preprocess"]["images_per_s"] > 0
  assert [row["augment"] for row in data["loader"]] == ["off", "nearest", "bilinear", "nearest"]
  assert all(row["batch_size"] == 8 and row["images_per_s"] > 0 for row in data["loader"])
  (training,) = data["training"]
  assert training["images"] == 48 and training["train_steps"] > 0 and 0 <= training["data_wait_fraction"] < 1
  assert training["peak_rss_mb"] > 0


@pytest.mark.parametrize("flag, message", [
    ("--train_sizes=abc", "--train_sizes=abc: each must be a whole number of films, e.g. --train_sizes=160,480"),
    ("--train_sizes=0", "--train_sizes=0: each must be a whole number of films"),
    ("--workdir=notes.txt", "--workdir notes.txt is a file, not a directory; pass a directory"),
    ("--workdir=used", "--workdir used is not empty; pass a new or empty folder"),
])
def test_bad_flags_stop_before_any_work_in_one_line(tmp_path, flag, message):
  (tmp_path / "notes.txt").write_text("mine")
  (tmp_path / "used").mkdir()
  (tmp_path / "used" / "films").mkdir()
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.data_bench", flag], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "used"]
  assert [p.name for p in (tmp_path / "used").iterdir()] == ["films"]
