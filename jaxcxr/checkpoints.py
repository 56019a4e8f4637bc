"""Orbax checkpoints holding the training state, the input-pipeline position and the run history.

Each checkpoint is one `ocp.args.Composite`:
  state — the `TrainState` pytree (params, optimizer state, step, RNG, epoch sums);
  data  — the grain iterator state after the last batch trained on (JSON; taken
          from the device prefetcher, which runs ahead of what was consumed);
  meta  — the run's signature (refuse a checkpoint of another run's settings)
          and the per-epoch history, so metrics.jsonl can be rebuilt exactly.
Orbax writes each step to a temporary folder and renames it when complete.
Beside each step's folder, `<step>.sha256` records the SHA-256 of every file in
it, written once the step is complete: a checkpoint whose files no longer match
(flipped bytes on disk, a truncated file) or that has no record (its process
died while saving) is not resumed from; the previous one is.
"""

import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
from typing import Any

import orbax.checkpoint as ocp

from jaxcxr import devices
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_json

log = logging.getLogger(__name__)

FOLDER = "checkpoints"  # a run folder's checkpoints live in RUN/checkpoints/


def saved_in(run_folder: str | pathlib.Path) -> bool:
  """Whether `run_folder` holds a checkpoint (orbax names each step's folder by its number)."""
  folder = pathlib.Path(run_folder).expanduser() / FOLDER
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


class Checkpointer:
  """Saves every so often, keeps the latest `keep`, and restores the newest checkpoint that loads."""

  def __init__(self, directory: pathlib.Path, keep: int, signature: dict | None, read_only: bool = False):
    """`signature=None` accepts any run's checkpoint; `read_only` (to apply a run, perhaps while it trains)
    creates, cleans and deletes nothing: a damaged checkpoint is skipped, and left for its run to handle."""
    self.signature = signature
    self.directory = directory
    self.read_only = read_only
    quiet = logging.getLogger("absl")
    level = quiet.level
    if read_only:  # orbax warns that a read-only folder is read-only and saves nothing: here that is the point
      quiet.setLevel(logging.ERROR)
    try:
      options = ocp.CheckpointManagerOptions(
          preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=not read_only, read_only=read_only,
          # A save killed mid-write leaves orbax's temporary folder; the workdir lock makes this run its only user.
          cleanup_tmp_directories=not read_only,
          # Synchronous: the state's buffers are donated to the next step right after a save.
          enable_async_checkpointing=False)
      self.manager = ocp.CheckpointManager(directory.absolute(), options=options)
    finally:
      quiet.setLevel(level)

  def save(self, state: Any, data_state: dict, history: list[dict]) -> None:
    step = int(state.step)
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
          meta=ocp.args.JsonSave({"signature": self.signature, "history": history})), force=True)
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # orbax wraps the OSError of a full disk in others
      for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
        shutil.rmtree(partial, ignore_errors=True)
      reason = _storage_error(e)
      if reason is None:  # not the disk: a bug, which a message about disk space would hide
        raise
      kept = self.latest_step()
      raise UserError(f"could not write the checkpoint of step {step} in {self.directory} ({reason}); "
                      f"{f'the checkpoint of step {kept} is kept' if kept is not None else 'no checkpoint is kept'}"
                      "; free disk space (or raise the file-size limit) and rerun the same command to resume") from e
    if devices.is_primary():  # the run's processes share the folder: one records it
      atomic_write_json(self._digest_path(step), _digest(self.directory / str(step)))
      kept = {str(s) for s in self.manager.all_steps()}
      for record in self.directory.glob("*.sha256"):
        if record.stem not in kept:
          record.unlink(missing_ok=True)
    devices.barrier(f"checkpoint {step} recorded")

  def _digest_path(self, step: int) -> pathlib.Path:
    return self.directory / f"{step}.sha256"

  def _verify(self, step: int) -> None:
    """Raises `CorruptCheckpoint` unless the step's files are exactly those recorded when it was saved."""
    record = self._digest_path(step)
    if not record.is_file():
      raise CorruptCheckpoint("it has no checksum record: it is still being written, or its process died while "
                              "saving it" if self.read_only else "it has no checksum record: its process died while "
                              "saving it")
    expected, found = json.loads(record.read_text()), _digest(self.directory / str(step))
    changed = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
    if changed:
      raise CorruptCheckpoint(f"{len(changed)} file(s) changed on disk since it was written, e.g. {changed[0]}")

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _check_signature(self, step: int) -> dict:
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if self.signature is not None and meta["signature"] != self.signature:
      diffs = sorted(k for k in set(meta["signature"]) | set(self.signature)
                     if meta["signature"].get(k) != self.signature.get(k))
      raise UserError(f"the checkpoint in {self.directory} was written by a run with other settings "
                      f"(differs in {', '.join(diffs)}), and resuming would mix the two runs; use a new --workdir, "
                      "or delete the checkpoints to start over (raising train.epochs alone continues a run, except "
                      "under train.schedule=warmup_cosine, which spans the whole run)")
    return meta

  def restore(self, abstract_state: Any) -> tuple[Any, dict, list[dict]] | None:
    """(state, data_state, history) from the newest usable checkpoint, or None if there is none.

    A checkpoint that fails its checksums or to load is reported, deleted (so
    the step can be saved again; only skipped when read-only) and the previous
    one is tried.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        meta = self._check_signature(step)  # first: another run's checkpoint is refused, never deleted
        self._verify(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # any corruption: fall back, loudly.
        log.warning("checkpoint at step %d in %s is unreadable or damaged (%s: %s); falling back to the "
                    "previous one", step, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
        if not self.read_only:
          self.manager.delete(step)
          if devices.is_primary():
            self._digest_path(step).unlink(missing_ok=True)
        continue
      log.info("%s the checkpoint at step %d in %s", "Loading" if self.read_only else "Resuming from", step,
               self.directory)
      return restored["state"], restored["data"], meta["history"]
    if steps and self.read_only:
      raise UserError(f"no usable checkpoint in {self.directory} (see above); rerun the training command to "
                      "repair the run, then apply it")
    if steps:
      raise UserError(f"no usable checkpoint is left in {self.directory} (each was damaged, see above); delete "
                      "that folder to start the run over")
    return None

  def close(self) -> None:
    self.manager.close()


class CorruptCheckpoint(Exception):
  """A checkpoint whose files are not those its save recorded."""


# tensorstore reports a full disk or a file-size limit as a ValueError naming the OS error (ENOSPC, EFBIG, EDQUOT)
# after the (long) paths it was writing.
_OS_ERROR_CODE = re.compile(r"os_error_code='(28|27|122)'")


def _storage_error(e: BaseException) -> str | None:
  """What `e` (or an exception it was raised from) says of the disk, if it is a storage error; None otherwise."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError):
      return str(e)
    code = _OS_ERROR_CODE.search(str(e))
    if code:
      return f"[Errno {code.group(1)}] {os.strerror(int(code.group(1)))}, as tensorstore reported it"
    e = e.__cause__ or e.__context__
  return None


def _digest(folder: pathlib.Path) -> dict[str, str]:
  """SHA-256 of every file under `folder`, by path relative to it."""
  out = {}
  for path in sorted(p for p in folder.rglob("*") if p.is_file()):
    h = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
    out[str(path.relative_to(folder))] = h.hexdigest()
  return out
