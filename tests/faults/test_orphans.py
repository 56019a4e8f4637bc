"""A run killed with SIGKILL leaves no process behind: neither grain's reader workers nor, for the speedup
command, the training runs it started."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow  # killed runs and their worker processes


KILL_WITH_WORKERS = textwrap.dedent("""
    import json, multiprocessing, os, signal, sys
    from jaxcxr import checkpoints
    save, calls, pids_file = checkpoints.Checkpointer.save, [0], sys.argv[1]

    def record_workers_then_die(self, *args):
      calls[0] += 1
      if calls[0] == 2:  # mid-run, the reader workers busy
        with open(pids_file, "w") as f:
          json.dump([p.pid for p in multiprocessing.active_children()], f)
        os.kill(os.getpid(), signal.SIGKILL)
      return save(self, *args)

    checkpoints.Checkpointer.save = record_workers_then_die
    sys.argv = ["run.py", *sys.argv[2:]]
    from jaxcxr import main
    main.run()
""")

START_A_CHILD = textwrap.dedent("""
    import sys
    from jaxcxr.perf import runs
    child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)"
    runs.run_child([sys.executable, "-c", child, sys.argv[1]])
""")


def _gone_within(pids, seconds):
  deadline = time.monotonic() + seconds
  alive = set(pids)
  while alive and time.monotonic() < deadline:
    for pid in list(alive):
      try:
        os.kill(pid, 0)
      except ProcessLookupError:
        alive.discard(pid)
    time.sleep(0.2)
  return not alive


def test_grain_workers_end_with_a_killed_run(tmp_path):
  pids_file, log = tmp_path / "workers.json", tmp_path / "stderr.txt"
  # Output to a file, not a pipe: a surviving worker would hold a pipe open and hang the wait.
  with open(log, "w") as stderr:
    killed = subprocess.run([sys.executable, "-c", KILL_WITH_WORKERS, str(pids_file),
                             "--config=configs/tiny.py", f"--workdir={tmp_path / 'run'}",
                             "--config.data.worker_processes=2"], cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"},
                            stdout=subprocess.DEVNULL, stderr=stderr, timeout=600)
  assert killed.returncode == -signal.SIGKILL, log.read_text()[-2000:]
  workers = json.loads(pids_file.read_text())
  assert len(workers) >= 2  # the two readers were running
  assert _gone_within(workers, 10)


def test_a_killed_speedup_command_leaves_no_training_run_behind(tmp_path):
  pid_file = tmp_path / "child.pid"
  parent = subprocess.Popen([sys.executable, "-c", START_A_CHILD, str(pid_file)], cwd=ROOT)
  deadline = time.monotonic() + 60
  while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
    time.sleep(0.1)
  child = int(pid_file.read_text())
  parent.kill()
  parent.wait()
  assert _gone_within([child], 5)
