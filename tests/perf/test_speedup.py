"""The speedup command end to end on CPU: cpu vs cpu1, with the unavailable GPU explained."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from jaxcxr import conv
from tests.support import learning

pytestmark = pytest.mark.slow  # the speedup command: several training processes


ROOT = pathlib.Path(__file__).resolve().parents[2]


def _speedup(out, platforms):
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  return subprocess.run([sys.executable, "-m", "jaxcxr.perf.speedup", "--config=configs/tiny.py",
                         f"--platforms={platforms}", f"--out={out}", "--config.train.epochs=2"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def speedup_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("speedup")
  return out, _speedup(out, "cpu,cpu1,gpu")


def test_exits_zero_with_two_platforms(speedup_run):
  _, result = speedup_run
  assert result.returncode == 0, result.stderr
  # The platform that did not run says why on the console too, not only in report.md.
  assert "[speedup] gpu did not run: --platform=gpu but JAX has no GPU backend" in result.stderr


def test_report_tables(speedup_run):
  out, _ = speedup_run
  report = (out / "report.md").read_text()
  assert "| gpu | - |" in report and "not run: --platform=gpu but JAX has no GPU backend" in report
  table5 = [l for l in report.splitlines() if l.startswith("| 1 |") or l.startswith("| 2 |")]
  assert len(table5) == 4  # two epochs in Table 5, two in Tables 3-4
  assert all(float(c) > 0 for c in table5[0].strip("|").split("|")[1:])
  assert "**cpu1**:" in report


def test_json_has_everything(speedup_run):
  out, _ = speedup_run
  data = json.loads((out / "speedup.json").read_text())
  ran = {r["platform"]: r for r in data["results"]}
  assert ran["cpu"]["ran"] and ran["cpu1"]["ran"] and not ran["gpu"]["ran"]
  assert len(ran["cpu"]["epochs"][0]["step_ms"]) == ran["cpu"]["epochs"][0]["steps_timed"]
  assert ran["cpu"]["timing"]["flops_per_step"] > 0
  assert ran["cpu"]["device"]["jax_version"]
  # cpu1 is pinned to one core, so `auto` resolves for one core there.
  assert ran["cpu1"]["device"]["host_cores"] == 1 and ran["cpu1"]["lowering"] == "direct"  # CI has a compiler
  assert ran["cpu"]["lowering"] == conv.resolve("auto", "cpu", ran["cpu"]["device"]["host_cores"])
  cmp = data["comparison"]
  assert cmp["reference"] == "cpu" and cmp["platforms"]["cpu"]["speedup_mean"] == pytest.approx(1.0)
  # Same seed, data and steps: the curves agree across thread counts.
  assert max(cmp["platforms"]["cpu1"]["max_abs_difference"].values()) < 1e-3


def test_figures(speedup_run):
  out, _ = speedup_run
  for name in ("step_times.png", "epoch_times.png", "loss.png", "accuracy.png"):
    with Image.open(out / name) as img:
      assert img.size == (900, 540)


def test_a_folder_it_did_not_write_is_never_removed(tmp_path):
  (tmp_path / "cpu1").mkdir()
  (tmp_path / "cpu1" / "notes.txt").write_text("mine")
  result = _speedup(tmp_path, "cpu,cpu1")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'cpu1'} exists and was not written by the speedup command; move it away or choose "
      "another --out")
  assert (tmp_path / "cpu1" / "notes.txt").read_text() == "mine" and not (tmp_path / "cpu").exists()


@pytest.mark.parametrize("platforms, out, message", [
    ("cpu,cpu", "out", "--platforms names cpu more than once; each platform runs once, so name it once"),
    ("cpu,cpu1", "notes.txt", "--out {tmp}/notes.txt is a file, not a directory; pass a directory"),
])
def test_a_repeated_platform_or_an_out_that_is_a_file_stops_in_one_line(tmp_path, platforms, out, message):
  (tmp_path / "notes.txt").write_text("mine")
  result = _speedup(tmp_path / out, platforms)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f"error: {message.format(tmp=tmp_path)}"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_fewer_than_two_platforms_is_an_error_and_a_rerun_replaces_its_own_runs(tmp_path):
  result = _speedup(tmp_path, "cpu,gpu")  # one platform ran: an error, and a run to replace
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith("error: only 1 platform(s) ran")
  assert (tmp_path / "report.md").is_file()
  (tmp_path / "cpu" / "left-over").write_text("")
  assert _speedup(tmp_path, "cpu,gpu").returncode == 1
  assert (tmp_path / "cpu" / "summary.json").is_file() and not (tmp_path / "cpu" / "left-over").exists()


def test_a_killed_command_rerun_ends_as_the_uninterrupted_one(speedup_run, tmp_path):
  """SIGKILL mid-way through the first platform's training (its child dies with it), then the same command."""
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  command = [sys.executable, "-m", "jaxcxr.perf.speedup", "--config=configs/tiny.py",
             "--platforms=cpu,cpu1,gpu", f"--out={tmp_path}", "--config.train.epochs=2"]
  running = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = tmp_path / "cpu" / "checkpoints" / "5.sha256"
  deadline = time.monotonic() + 300
  while not checkpoint.exists():
    assert running.poll() is None and time.monotonic() < deadline, "the first run never reached its checkpoint"
    time.sleep(0.05)
  running.send_signal(signal.SIGKILL)
  running.wait()
  assert not (tmp_path / "speedup.json").exists()
  rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  out, _ = speedup_run

  def learned(folder):
    results = json.loads((folder / "speedup.json").read_text())["results"]
    return [(r["platform"], r["ran"], [{k: v for k, v in e.items() if k != "step_ms"} for e in learning(r["epochs"])]
             if r["ran"] else r["reason"], r.get("test")) for r in results]

  assert learned(tmp_path) == learned(out)
  leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or "-building-" in p.name
               or "orbax-checkpoint-tmp" in p.name]
  assert leftovers == []
