"""Training runs as child processes, for the measurements that time whole runs (speedup, data benchmark)."""

import ctypes
import json
import os
import pathlib
import signal
import subprocess
import sys

from absl import flags
from ml_collections import config_flags

from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_text


def check_out_file(path: str | None, what: str = "--out") -> None:
  """Refuses, before any work, an output file that could not be written at the end: a folder, or a path whose
  folder does not exist or is not writable."""
  if not path:
    return
  target = pathlib.Path(path).expanduser()
  if target.is_dir():
    raise UserError(f"{what}={path} is a folder; pass a file name for the JSON (e.g. {target / 'bench.json'})")
  folder = next(p for p in target.parents if p.exists())  # folders still missing are made by the write
  if not folder.is_dir():
    raise UserError(f"{what}={path}: {folder} is a file, not a folder; pass another path")
  if not os.access(folder, os.W_OK):
    raise UserError(f"{what}={path}: its folder {folder} is not writable; pass a writable path")


def emit_json(obj: dict, path: str | None) -> None:
  """Prints `obj` as JSON (what the benchmarks report) and, given a path, writes it there atomically."""
  text = json.dumps(obj, indent=2)
  print(text)
  if path:
    atomic_write_text(path, text + "\n")


def config_args(flag_name: str = "config") -> list[str]:
  """`--config=FILE` (absolute) and every `--config.key=value` override this process was given, so a child
  `jaxcxr.main` trains on the same config, from any working directory."""
  flag = flags.FLAGS[flag_name]
  overrides = config_flags.get_override_values(flag)
  return [f"--config={os.path.abspath(config_flags.get_config_filename(flag))}",
          *(f"--config.{key}={value if isinstance(value, str) else value!r}" for key, value in overrides.items())]


def training_command(platform: str, workdir: os.PathLike, config: list[str], *extra: str) -> list[str]:
  """The `python -m jaxcxr.main` command line of one training run that is measured, not looked at: no run page
  (its maps are not part of the timing); `extra` flags come last and win."""
  return [sys.executable, "-m", "jaxcxr.main", f"--platform={platform}", f"--workdir={os.path.abspath(workdir)}",
          *config, "--config.logging.report=False", *extra]


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
  """In the child, before it runs: the kernel sends it SIGKILL when the measuring process dies (Linux), so a
  killed speedup command leaves no training run behind, writing into the folders a rerun replaces."""
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def last_wins(command: list[str]) -> list[str]:
  """`command` with each `--name=value` flag kept at its last occurrence only: a measurement's own settings come
  after the user's overrides and win, and a child refuses a flag given twice with two values (`cli`)."""
  last = {arg.partition("=")[0]: i for i, arg in enumerate(command) if arg.startswith("--") and "=" in arg}
  return [arg for i, arg in enumerate(command)
          if not (arg.startswith("--") and "=" in arg) or last[arg.partition("=")[0]] == i]


def run_child(command: list[str], *, pin_to_one_core: bool = False, **kwargs) -> subprocess.CompletedProcess:
  """`subprocess.run(command, **kwargs)` for a training run that must not outlive this process (`last_wins` of
  its flags); with `pin_to_one_core`, the child also runs on the first core this process may use."""
  def prepare():
    _die_with_parent()
    if pin_to_one_core:
      os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  return subprocess.run(last_wins(command), preexec_fn=prepare, **kwargs)  # pylint: disable=subprocess-popen-preexec-fn
