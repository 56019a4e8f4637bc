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
