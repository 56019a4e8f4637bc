"""The speedup command's report from made-up results, without training: the figures, report.md and report.html.

`speedup.write_report` runs in a child process: the speedup module defines absl flags (--config, --out) that
the benchmark module, imported by other tests of this process, defines too."""

import base64
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from PIL import Image

from jaxcxr.report import figures, html

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOT_RUN = "--platform=gpu but JAX has no GPU backend"
FIGURES = ["step_times.png", "epoch_times.png", "loss.png", "accuracy.png"]
CURVES = ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]
# Every table of report.md, by its header.
HEADERS = [
    ["platform", "device", "cores", "conv lowering", "compile s", "median ms/step", "mean s/epoch", "FLOPs/step",
     "status"],
    ["epoch", "cpu s/epoch", "cpu s/step", "cpu1 s/epoch", "cpu1 s/step"],
    ["platform", "speedup per step", "std over steps", "speedup per epoch"],
    ["epoch", *(f"{p} {c}" for c in CURVES for p in ("cpu", "cpu1"))],
    ["platform", *CURVES]]
WRITE = ("import json, pathlib, sys\n"
         "from jaxcxr.perf import speedup\n"
         "out = pathlib.Path(sys.argv[1])\n"
         "results = json.loads((out / 'results.json').read_text())\n"
         "speedup.write_report(out, {'results': results, 'comparison': speedup.compare(results)})")


def _platform(name: str, ms: float, cores: int, devices: int = 1) -> dict:
  """One platform as `run_platform` returns it: 2 epochs of 3 timed steps, steps `ms` long, on `devices`."""
  epochs = [{"epoch": i + 1, "step": 3 * (i + 1), "steps_timed": 3, "sec_per_epoch": 3 * ms / 1000 + 0.01,
             "ms_per_step": ms, "step_ms": [ms, ms * 1.1, ms * 0.9], "train_loss": 0.7 - 0.1 * i,
             "train_accuracy": 0.5 + 0.1 * i, "val_loss": 0.72 - 0.1 * i, "val_accuracy": 0.55 + 0.1 * i,
             "val_auc": 0.6} for i in range(2)]
  return {"platform": name, "ran": True, "lowering": "direct", "batch_size": 16,
          "device": {"device_kind": "cpu", "host_cores": cores, "platform": "cpu", "jax_version": "0.10",
                     "num_devices": devices},
          "timing": {"compile_s": 1.5, "flops_per_step": 2.0e9, "median_ms_per_step": ms}, "epochs": epochs,
          "test": {"accuracy": 0.6}}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  """What the command writes for two platforms that ran (one 50x slower) and one that did not."""
  out = tmp_path_factory.mktemp("report")
  results = [_platform("cpu", 20.0, 16), _platform("cpu1", 1000.0, 1),
             {"platform": "gpu", "ran": False, "reason": NOT_RUN}]
  (out / "results.json").write_text(json.dumps(results))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", WRITE, str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return out


def test_the_four_figures_are_pngs(out):
  assert json.loads((out / "speedup.json").read_text())["figures"] == FIGURES
  for name in FIGURES:
    with Image.open(out / name) as img:
      assert img.format == "PNG" and img.size == (900, 540)


def test_html_holds_every_table_and_the_reason(out):
  document = (out / "report.html").read_text()
  assert document.count("<table>") == len(HEADERS)
  for header in HEADERS:
    assert "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>" in document
  assert f"gpu did not run: {html.escape(NOT_RUN)}" in document
  assert "<td>cpu1</td><td>0.02x</td><td>0.00</td><td>0.02x</td>" in document


def test_html_inlines_the_figures_and_points_nowhere_else(out):
  document = (out / "report.html").read_text()
  sources = re.findall(r'src="data:image/png;base64,([^"]*)"', document)
  assert len(sources) == len(FIGURES)
  for source in sources:
    with Image.open(io.BytesIO(base64.b64decode(source, validate=True))) as img:
      img.verify()
      assert img.format == "PNG"
  references = re.findall(r'(?:src|href)\s*=\s*"?([^"\s>]*)', document, flags=re.IGNORECASE)
  assert len(references) == len(FIGURES) and all(r.startswith("data:image/png;base64,") for r in references)


def test_report_md_holds_the_same_rows(out):
  text = (out / "report.md").read_text()
  for header in HEADERS[:2] + HEADERS[3:4]:
    assert "| " + " | ".join(header) + " |" in text
  assert f"| gpu | - | - | - | - | - | - | - | not run: {NOT_RUN} |" in text
  assert "- **cpu1**: 0.02x +/- 0.00 per step, 0.02x per epoch" in text
  assert "- **cpu1**: train_loss 0.00e+00, train_accuracy 0.00e+00, val_loss 0.00e+00, val_accuracy 0.00e+00" in text


def test_log_axis_only_for_series_orders_of_magnitude_apart():
  assert figures.needs_log_axis({"gpu": ([1, 2], [3.0, 3.1]), "cpu": ([1, 2], [300.0, None])})
  assert not figures.needs_log_axis({"cpu1": ([1, 2], [800.0, 790.0]), "cpu": ([1, 2], [400.0, None])})


@pytest.mark.parametrize("ratio, log", [(100.0, True), (2.0, False)])
def test_a_chart_of_series_far_apart_is_drawn_in_decades(monkeypatch, ratio, log):
  drawn = []
  monkeypatch.setattr(figures, "png", lambda figure: drawn.append(figure) or b"")
  figures.line_chart("t", "step", "ms", {"gpu": ([1, 2, 3], [1.0] * 3), "cpu": ([1, 2, 3], [ratio] * 3)})
  (ax,) = drawn[0].axes
  assert ax.get_yscale() == ("log" if log else "linear")
  assert ax.get_ylabel() == ("ms (log scale)" if log else "ms")


SCALING = ("import json, sys\n"
           "from jaxcxr.perf import speedup\n"
           "results = json.loads(sys.argv[1])\n"
           "comparison = speedup.compare(results)\n"
           "parsed = [speedup.parse_platform(p) for p in ('gpu:4', 'cpu', 'cpu1:2', 'tpu', 'gpu:0')]\n"
           "print(json.dumps({'parsed': parsed, 'scaling': comparison['scaling'],"
           " 'markdown': speedup.markdown(results, comparison)}))")


def test_device_counts_are_parsed_and_their_scaling_reported():
  results = [_platform("cpu:1", 100.0, 2), _platform("cpu:2", 60.0, 2, devices=2),
             {"platform": "cpu:4", "ran": False, "reason": "train.num_devices=4 but only 2 cpu device(s) are visible"}]
  done = subprocess.run([sys.executable, "-c", SCALING, json.dumps(results)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr
  report = json.loads(done.stdout)
  assert report["parsed"] == [["gpu", 4], ["cpu", None], None, None, None]
  one, two = report["scaling"]
  assert (one["devices"], two["devices"]) == (1, 2)
  assert one["images_per_s"] == pytest.approx(160.0) and two["images_per_s"] == pytest.approx(16 / 0.06)
  assert one["efficiency"] == pytest.approx(1.0) and two["efficiency"] == pytest.approx(16 / 0.06 / 160 / 2)
  assert "## Scaling over devices" in report["markdown"] and "| cpu:2 | 2 | 266.7 | 83% |" in report["markdown"]
  assert "not run: train.num_devices=4 but only 2 cpu device(s) are visible" in report["markdown"]
