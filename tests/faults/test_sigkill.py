"""`kill -9` or Ctrl-C at fixed points of a run, then the same command again: the result is the uninterrupted
run's.

Each point is reached deterministically: the run is started in a child process (a session of its own) that
wraps one function so that the process SIGKILLs itself, or sends its process group SIGINT as a terminal's
Ctrl-C does, on a given call. Afterwards nothing half-written may be visible under a final
name and no temporary may be left behind.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from tests.support import ROOT, learning

pytestmark = pytest.mark.slow  # kill -9 of whole commands, each rerun


KILL_AT = textwrap.dedent("""
    import functools, importlib, os, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where this test runs with SIGINT ignored
    how, where, calls_before, match = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    module_name, path = where.split(":")
    owner = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
      owner = getattr(owner, parent)
    original, count = getattr(owner, name), [0]

    @functools.wraps(original)
    def dying(*args, **kwargs):
      if any(match in str(a) for a in args):
        count[0] += 1
        if count[0] > calls_before:
          if how == "SIGKILL":
            os.kill(os.getpid(), signal.SIGKILL)
          os.killpg(os.getpgid(0), signal.SIGINT)
      return original(*args, **kwargs)

    setattr(owner, name, dying)
    sys.argv = ["run.py", *sys.argv[5:]]
    from jaxcxr import main
    main.run()
""")

# What is interrupted: (the function that kills, calls of it passed first, a text one of a call's arguments must
# contain for the call to count).
POINTS = {
    "cache build, mid-split": ("jaxcxr.data.images:load_film", 40, ""),
    "mid-epoch, before the step-8 save": ("jaxcxr.checkpoints:Checkpointer.save", 1, ""),
    "inside orbax's checkpoint write": (
        "orbax.checkpoint.checkpoint_manager:CheckpointManager._finalize_checkpoint", 1, ""),
    "after orbax's write, before the checksums": ("jaxcxr.checkpoints:_digest", 1, ""),
    # Its temporary is written in full; the rename over summary.json is what never happens.
    "the summary write, before its rename": ("jaxcxr.fsutil:os.replace", 0, "summary.json"),
    "the report write, before its rename": ("jaxcxr.fsutil:os.replace", 0, "report.html"),
}
# Where a predict command is interrupted, as above.
PREDICT_POINTS = {
    "the predictions' CSV, before its rename": ("jaxcxr.fsutil:os.replace", 0, ".csv"),
    "between two explanations": ("jaxcxr.fsutil:os.replace", 1, ".png"),
}


def _args(workdir):
  return ["--config=configs/tiny.py", f"--workdir={workdir}"]


def _command(*args, kill_at=None):
  prefix = [sys.executable, "-c", KILL_AT, *kill_at] if kill_at else [sys.executable, str(ROOT / "run.py")]
  return subprocess.run([*prefix, *args], cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                        capture_output=True, text=True, timeout=600, start_new_session=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  result = _command(*_args(workdir))
  assert result.returncode == 0, result.stderr
  return workdir, json.loads((workdir / "summary.json").read_text())


def _leftovers(workdir):
  return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                if p.name.endswith(".tmp") or "-building-" in p.name or "orbax-checkpoint-tmp" in p.name)


def _interrupt(workdir, how, point):
  where, calls_before, match = POINTS[point]
  return _command(*_args(workdir), kill_at=(how, where, str(calls_before), match))


def _rerun_ends_as(reference, tmp_path):
  rerun = _command(*_args(tmp_path))
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert learning(summary["epochs"]) == learning(reference["epochs"])
  assert summary["test"] == reference["test"]
  assert (tmp_path / "report.html").is_file()
  assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("point", list(POINTS))
def test_a_run_killed_here_ends_as_the_uninterrupted_run(reference, tmp_path, point):
  killed = _interrupt(tmp_path, "SIGKILL", point)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert not (tmp_path / "summary.json").exists()  # killed before it: a final name holds a whole file or nothing
  _rerun_ends_as(reference[1], tmp_path)


@pytest.mark.parametrize("point", ["cache build, mid-split", "mid-epoch, before the step-8 save"])
def test_ctrl_c_here_is_one_line_and_the_rerun_ends_as_the_uninterrupted_run(reference, tmp_path, point):
  interrupted = _interrupt(tmp_path, "SIGINT", point)
  assert interrupted.returncode == 130, interrupted.stderr[-2000:]
  assert "Traceback" not in interrupted.stderr and interrupted.stderr.strip().splitlines()[-1].startswith(
      "error: interrupted (Ctrl-C); what was finished is kept"), interrupted.stderr[-2000:]
  _rerun_ends_as(reference[1], tmp_path)


@pytest.mark.parametrize("point", list(PREDICT_POINTS))
def test_a_predict_killed_here_ends_as_the_uninterrupted_one(reference, point):
  workdir, _ = reference
  films = sorted((next((workdir / "cache").glob("synthetic-nih-*")) / "images").glob("*.png"))[:3]
  name = point.replace(" ", "-").replace("'", "")

  def predict(output_name, kill_at=None):
    return _command("--mode=predict", f"--workdir={workdir}", *map(str, films), "--explain",
                    f"--output_name={output_name}", kill_at=kill_at)

  assert predict(f"{name}-whole").returncode == 0
  where, calls_before, match = PREDICT_POINTS[point]
  killed = predict(name, kill_at=("SIGKILL", where, str(calls_before), match))
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert not (workdir / "predictions" / f"{name}.csv").exists()
  rerun = predict(name)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  whole, again = (pd.read_csv(workdir / "predictions" / f"{n}.csv") for n in (f"{name}-whole", name))
  pd.testing.assert_frame_equal(whole.drop(columns="explanation"), again.drop(columns="explanation"))
  assert all(pathlib.Path(p).is_file() for p in again["explanation"])
  assert _leftovers(workdir / "predictions") == []
