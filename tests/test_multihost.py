"""Several processes through jax.distributed, as on several hosts: two local CPU processes (collectives through
gloo) train as one, resume after both are killed, and stop when one dies."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxcxr import devices
from jaxcxr.errors import UserError
from tests.support import learning, train_run

pytestmark = pytest.mark.slow  # several processes, jax.distributed


ROOT = pathlib.Path(__file__).parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir: pathlib.Path, port: int, cache: pathlib.Path, *extra: str) -> list[subprocess.Popen]:
  """The tiny config's run as two processes on this machine, each told the other's coordinator."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)
  return [subprocess.Popen([sys.executable, "-m", "jaxcxr.main", "--config=configs/tiny.py",
                            f"--workdir={workdir}", f"--config.data.cache_dir={cache}",
                            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}",
                            *extra],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i in range(2)]


def _finish(processes: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
  """Each process's (exit code, stdout, stderr) once it has ended."""
  outputs = [p.communicate(timeout=timeout) for p in processes]
  return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs)]


def _wait_for(path: pathlib.Path, processes: list[subprocess.Popen], timeout: float = 600) -> None:
  deadline = time.monotonic() + timeout
  while not path.exists():
    assert all(p.poll() is None for p in processes), "a process ended before the checkpoint was written"
    assert time.monotonic() < deadline, f"{path} never appeared"
    time.sleep(0.05)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("two-processes")
  done = _finish(_launch(workdir, _free_port(), workdir / "cache", "--config.logging.tensorboard=true"))
  for rc, _, err in done:
    assert rc == 0, err[-3000:]
  return workdir, json.loads((workdir / "summary.json").read_text()), done


def test_two_processes_train_as_one_process_does(two_processes, tiny_config, tmp_path):
  _, summary, _ = two_processes
  tiny_config.model.lowering = "xla"  # what auto picks over several devices
  one = train_run(tiny_config, tmp_path)
  assert summary["device"]["num_devices"] == 2
  for mine, theirs in zip(summary["epochs"], one["epochs"]):
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_auc"):
      np.testing.assert_allclose(mine[key], theirs[key], rtol=1e-5, err_msg=key)  # all-reduce order aside
  counts = ("tn", "fp", "fn", "tp")
  assert {k: summary["test"][k] for k in counts} == {k: one["test"][k] for k in counts}
  np.testing.assert_allclose(summary["test"]["auc"], one["test"]["auc"], rtol=1e-6)


def test_only_process_zero_reports(two_processes):
  workdir, _, ((_, out0, err0), (_, out1, err1)) = two_processes
  assert "Test split" in out0 and "epoch   2 |" in err0
  assert "Test split" not in out1 and "epoch   2 |" not in err1 and "Report:" not in err1  # gloo prints its own line
  assert (workdir / "report.html").is_file() and (workdir / "metrics.jsonl").read_text().count("\n") == 2
  assert len(list((workdir / "tensorboard").iterdir())) == 1  # one event file: process 0's


def test_both_processes_killed_after_a_checkpoint_resume_to_the_same_result(two_processes, tmp_path):
  _, uninterrupted, _ = two_processes
  port = _free_port()
  processes = _launch(tmp_path, port, tmp_path / "cache")
  _wait_for(tmp_path / "checkpoints" / "5.sha256", processes)
  for p in processes:
    p.send_signal(signal.SIGKILL)
  _finish(processes)
  assert not (tmp_path / "summary.json").exists()
  done = _finish(_launch(tmp_path, _free_port(), tmp_path / "cache"))
  for rc, _, err in done:
    assert rc == 0, err[-3000:]
  assert "Resuming from the checkpoint at step" in done[0][2]
  resumed = json.loads((tmp_path / "summary.json").read_text())
  assert learning(resumed["epochs"]) == learning(uninterrupted["epochs"])
  assert resumed["test"] == uninterrupted["test"]


def test_when_one_process_dies_the_other_stops_within_the_heartbeat_timeout(tmp_path):
  processes = _launch(tmp_path, _free_port(), tmp_path / "cache")
  _wait_for(tmp_path / "checkpoints" / "5.sha256", processes)
  processes[1].send_signal(signal.SIGKILL)
  killed = time.monotonic()
  rc, _, err = _finish(processes[:1], timeout=devices.HEARTBEAT_TIMEOUT_S + 120)[0]
  _finish(processes[1:])
  assert time.monotonic() - killed < devices.HEARTBEAT_TIMEOUT_S + 60
  assert rc != 0 and not (tmp_path / "summary.json").exists()
  # In a collective, the loss is caught and said in one line; outside one, JAX's own watchdog ends the process.
  assert ("error: process 0 lost another process of the run" in err
          or "JAX distributed service detected fatal errors" in err), err[-3000:]


def test_bad_process_flags_get_one_line():
  with pytest.raises(UserError, match=r"--num_processes=2 needs --coordinator_address=HOST:PORT"):
    devices.start_processes("cpu", None, 2, 0)
  with pytest.raises(UserError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
    devices.start_processes("cpu", "127.0.0.1:1", 2, 2)
  devices.start_processes("cpu", None, 1, 0)  # one process: nothing to join
