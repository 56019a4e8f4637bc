"""Orbax checkpoints holding the training state, the input-pipeline position and the run history.

Each checkpoint is one `ocp.args.Composite`:
  state — the `TrainState` pytree (params, optimizer state, step, RNG, epoch sums);
  data  — the grain iterator state after the last batch trained on (JSON; taken
          from the device prefetcher, which runs ahead of what was consumed);
  meta  — the model signature (refuse a checkpoint from another architecture)
          and the per-epoch history, so metrics.jsonl can be rebuilt exactly.
Orbax writes each step to a temporary folder and renames it when complete.
"""

import logging
import pathlib
from typing import Any

import orbax.checkpoint as ocp

from jaxcxr.errors import UserError

log = logging.getLogger(__name__)


class Checkpointer:
  """Saves every so often, keeps the latest `keep`, and restores the newest checkpoint that loads."""

  def __init__(self, directory: pathlib.Path, keep: int, signature: dict):
    if keep < 1:
      raise UserError(f"checkpoint.keep={keep} must be at least 1")
    self.signature = signature
    self.directory = directory
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(keep), create=True,
        # Synchronous: the state's buffers are donated to the next step right after a save.
        enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(directory.absolute(), options=options)

  def save(self, state: Any, data_state: dict, history: list[dict]) -> None:
    step = int(state.step)
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave({"signature": self.signature, "history": history})), force=True)
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _check_signature(self, step: int) -> dict:
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta["signature"] != self.signature:
      diffs = sorted(k for k in set(meta["signature"]) | set(self.signature)
                     if meta["signature"].get(k) != self.signature.get(k))
      raise UserError(f"the checkpoint in {self.directory} was written by a different model config "
                      f"(differs in {', '.join(diffs)}); use a new --workdir or delete the checkpoints")
    return meta

  def restore(self, abstract_state: Any) -> tuple[Any, dict, list[dict]] | None:
    """(state, data_state, history) from the newest readable checkpoint, or None if there is none.

    A checkpoint that fails to load is reported, deleted (so the step can be
    saved again) and the previous one is tried.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        meta = self._check_signature(step)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # any corruption: fall back, loudly.
        log.warning("checkpoint at step %d in %s is unreadable (%s: %s); falling back to the "
                        "previous one", step, self.directory, type(e).__name__, str(e).splitlines()[0][:200])
        self.manager.delete(step)
        continue
      log.info("Resuming from the checkpoint at step %d in %s", step, self.directory)
      return restored["state"], restored["data"], meta["history"]
    if steps:
      raise UserError(f"no readable checkpoint in {self.directory}; delete that folder to start over")
    return None

  def close(self) -> None:
    self.manager.close()
