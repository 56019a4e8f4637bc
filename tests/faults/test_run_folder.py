"""Faults around a run's folder: a second run on it, damaged or half-written checkpoints, a failing disk."""

import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import orbax.checkpoint as ocp
import pytest

from jaxcxr import checkpoints, fsutil, predict
from jaxcxr.errors import UserError
from tests.support import Killed, assert_same_state, dead_pid, final_state, learning, run_command, train_run

pytestmark = pytest.mark.slow  # fault injection around whole runs


HOLD = textwrap.dedent("""
    import pathlib, sys, time
    from jaxcxr import fsutil
    with fsutil.exclusive(pathlib.Path(sys.argv[1]), "--workdir"):
      print("held", flush=True)
      time.sleep(600)
""")


def _holder(folder):
  process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == "held"
  return process


def test_a_second_run_on_a_busy_workdir_stops_at_once_and_touches_nothing(tmp_path):
  holder = _holder(tmp_path)
  try:
    result = run_command("--config=configs/tiny.py", f"--workdir={tmp_path}")
  finally:
    holder.kill()
    holder.wait()
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: another run is using --workdir {tmp_path} (process {holder.pid} on {socket.gethostname()}); wait for "
      "it to finish, or pass "
      "another --workdir")
  assert sorted(p.name for p in tmp_path.iterdir()) == [fsutil.LOCK_FILE]


def test_the_lock_dies_with_a_killed_run(tmp_path):
  holder = _holder(tmp_path)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  with fsutil.exclusive(tmp_path, "--workdir"):  # free at once: nothing stale to clean up
    with pytest.raises(UserError, match="another run is using --workdir"):
      with fsutil.exclusive(tmp_path, "--workdir"):
        pass


def _flip(path):
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 2, len(data) // 2 + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {"flipped bytes": _flip, "truncated": _truncate, "missing": lambda path: path.unlink()}


def _damage_checkpoint(workdir, how, step=None):
  step = step or max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  largest = max((p for p in (workdir / "checkpoints" / str(step) / "state").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  DAMAGE[how](largest)
  return step


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_newest_checkpoint_is_caught_and_the_previous_one_used(straight, tiny_config, tmp_path, caplog,
                                                                         how):
  ref_dir, ref = straight
  tiny_config.train.epochs = 1
  train_run(tiny_config, tmp_path)
  damaged = _damage_checkpoint(tmp_path, how)
  tiny_config.train.epochs = 2
  resumed = train_run(tiny_config, tmp_path)
  assert f"checkpoint at step {damaged}" in caplog.text and "changed on disk since it was written" in caplog.text
  assert learning(resumed["epochs"]) == learning(ref["epochs"]) and resumed["test"] == ref["test"]
  assert_same_state(final_state(tmp_path)[1], final_state(ref_dir)[1])


def test_a_run_killed_while_saving_resumes_from_the_checkpoint_before(straight, tiny_config, tmp_path,
                                                                      monkeypatch, caplog):
  """Killed after orbax finished the step-8 folder but before its checksums were recorded."""
  caplog.set_level(logging.INFO, logger="jaxcxr")
  ref_dir, ref = straight
  original = checkpoints.atomic_write_json

  def die_at_step_8(path, obj):
    if path.name == "8.sha256":
      raise Killed
    original(path, obj)

  monkeypatch.setattr(checkpoints, "atomic_write_json", die_at_step_8)
  with pytest.raises(Killed):
    train_run(tiny_config, tmp_path)
  monkeypatch.undo()
  resumed = train_run(tiny_config, tmp_path)
  assert "checkpoint at step 8" in caplog.text and "no checksum record" in caplog.text
  assert "Resuming from the checkpoint at step 5" in caplog.text
  assert learning(resumed["epochs"]) == learning(ref["epochs"])


def test_a_failing_checkpoint_write_is_one_line_and_leaves_no_partial_folder(tiny_config, tmp_path, monkeypatch):
  original = ocp.CheckpointManager.save

  def disk_full_at_step_8(self, step, *args, **kwargs):
    if step == 8:
      (pathlib_step := self.directory / f"{step}.orbax-checkpoint-tmp-1").mkdir()
      (pathlib_step / "partial").write_bytes(b"x")
      raise OSError(errno.ENOSPC, "No space left on device")
    return original(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full_at_step_8)
  with pytest.raises(UserError) as error:
    train_run(tiny_config, tmp_path)
  message = str(error.value)
  assert "\n" not in message and "could not write the checkpoint of step 8" in message
  assert "No space left on device" in message and "the checkpoint of step 5 is kept" in message
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["5", "5.sha256"]


def test_the_same_command_after_a_failed_save_resumes_exactly(straight, tiny_config, tmp_path, monkeypatch):
  ref_dir, ref = straight
  test_a_failing_checkpoint_write_is_one_line_and_leaves_no_partial_folder(tiny_config, tmp_path, monkeypatch)
  monkeypatch.undo()
  resumed = train_run(tiny_config, tmp_path)
  assert learning(resumed["epochs"]) == learning(ref["epochs"])
  assert_same_state(final_state(tmp_path)[1], final_state(ref_dir)[1])


def test_with_every_checkpoint_damaged_the_run_stops_clearly(tiny_config, tmp_path):
  tiny_config.train.epochs = 1
  train_run(tiny_config, tmp_path)
  for step in (5, 8):
    _damage_checkpoint(tmp_path, "flipped bytes", step)
  tiny_config.train.epochs = 2
  with pytest.raises(UserError, match="no usable checkpoint is left in .*; delete that folder to start the run over"):
    train_run(tiny_config, tmp_path)


def test_a_full_disk_during_the_cache_build_is_one_line_and_leaves_no_build_folder(tiny_config, tmp_path,
                                                                                   monkeypatch):
  from jaxcxr.data import cache
  tiny_config.data.cache_dir = str(tmp_path / "cache")

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(cache, "_decode_all", full)
  with pytest.raises(UserError) as error:
    train_run(tiny_config, tmp_path / "run")
  assert "\n" not in str(error.value) and "could not write the preprocessed cache" in str(error.value)
  assert "No space left on device" in str(error.value)
  assert not list((tmp_path / "cache").glob(".*-building-*")) and not list((tmp_path / "cache").glob("train-*"))


def test_a_temporary_left_by_a_killed_write_is_removed_by_the_next_write(tmp_path):

  host = socket.gethostname()
  stale = tmp_path / f".summary.json.{dead_pid()}@{host}.abc123.tmp"
  live = tmp_path / f".summary.json.{os.getppid()}@{host}.def456.tmp"
  stale.write_text("{half")
  live.write_text("{being written")
  fsutil.atomic_write_json(tmp_path / "summary.json", {"step": 1})
  assert not stale.exists() and live.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["summary.json", live.name])


def test_a_full_disk_during_an_atomic_write_keeps_the_previous_file(tmp_path, monkeypatch):
  target = tmp_path / "summary.json"
  fsutil.atomic_write_json(target, {"step": 1})

  def full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(fsutil.os, "fsync", full)
  with pytest.raises(UserError, match="could not write .*summary.json: No space left on device"):
    fsutil.atomic_write_json(target, {"step": 2})
  monkeypatch.undo()
  assert json.loads(target.read_text()) == {"step": 1} and sorted(p.name for p in tmp_path.iterdir()) == \
      ["summary.json"]


def _tmpfs(mount, options):
  """A real tmpfs mounted at `mount` with `options`, unmounted afterwards; skipped without root."""
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                                         capture_output=True).returncode != 0:
    pytest.skip("mounting a tmpfs needs root")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
  """A real 128 KiB filesystem (tmpfs): room for a run's small files, not for a checkpoint. Needs root."""
  yield from _tmpfs(tmp_path / "disk", "size=128k")


# orbax's writer threads, stopped by the failed write, leave a callback for an asyncio loop that is already closed;
# pytest reports it when it is collected, after the test. The run's own error is what the test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_really_full_disk_during_the_checkpoint_write_is_one_line(tiny_config, small_disk):
  """tensorstore reports ENOSPC as a ValueError, not an OSError: the one line must still come."""
  with pytest.raises(UserError) as error:
    train_run(tiny_config, small_disk / "run")  # the cache stays in the shared folder: only the run is here
  message = str(error.value)
  assert "\n" not in message and "could not write the checkpoint of step 5" in message, message
  assert "No space left on device" in message and "no checkpoint is kept" in message, message
  checkpoints = small_disk / "run" / "checkpoints"  # gone with its folder if nothing was kept there
  assert not checkpoints.exists() or not [p for p in checkpoints.iterdir() if "tmp" in p.name]


def test_a_cache_larger_than_its_disk_is_refused_before_a_film_is_decoded(tiny_config, tiny_nih, small_disk,
                                                                          tmp_path):
  tiny_config.data.cache_dir = str(small_disk / "cache")
  tiny_config.data.image_size = 96  # dozens of training films of 9 KiB: more than the 128 KiB disk holds
  with pytest.raises(UserError, match=r"the train split's cache needs .* MiB \(\d+ films of 96x96 px\) but "
                                      r".*/disk/cache has 0.1 MiB free; free disk space, point data.cache_dir"):
    train_run(tiny_config, tmp_path / "run", str(tiny_nih))
  assert not [p for p in (small_disk / "cache").rglob("*") if p.name.startswith(("train", ".train"))]


def test_predict_on_a_read_only_run_folder_stops_before_reading_a_film(default_run, tmp_path):
  """A real read-only filesystem (a tmpfs remounted ro), where root's writes fail too."""
  mount = tmp_path / "ro"
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                                         capture_output=True).returncode != 0:
    pytest.skip("mounting a tmpfs needs root")
  try:
    shutil.copytree(default_run, mount / "run", ignore=shutil.ignore_patterns("cache", "predictions", ".lock"))
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    film = next((default_run / "cache").rglob("*.png"))
    with pytest.raises(UserError, match=r"the predictions folder .*/ro/run/predictions is not writable "
                                        r"\(Read-only file system\)") as error:
      predict.run(mount / "run", [str(film)])
    assert "\n" not in str(error.value) and not (mount / "run" / "predictions").exists()
  finally:
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def read_only_disk(tmp_path):
  """A real read-only filesystem (a tmpfs mounted ro). Needs root."""
  yield from _tmpfs(tmp_path / "ro", "ro,size=64k")


def test_a_read_only_data_cache_dir_is_named_as_the_config_key(tiny_config, read_only_disk, tmp_path):
  tiny_config.data.cache_dir = str(read_only_disk / "cache")
  with pytest.raises(UserError, match=r"data.cache_dir .*/ro/cache is not writable \(Read-only file system\)"):
    train_run(tiny_config, tmp_path / "run")
  assert not list((tmp_path / "run").glob("cache*"))
