"""A trained network ready to apply: its parameters on the device(s) it runs on, its network's own input
scaling, and its `readout` (each target's temperature and operating point). Built in one of two ways, and
then applied the same way by `predict`, the run report's gallery and its localisation check:

  network = inference.from_checkpoint(workdir)                         # a run folder's newest intact checkpoint
  network = inference.from_state(config, state, summary, put)           # training's final state, in memory

Films reach it as (N, size, size) uint8 arrays at the run's size (`images.fit_array` fits any other film the
way the training cache does), in jitted batches of one fixed size, so one compilation serves every call.
"""

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcxr import checkpoints as checkpoints_lib
from jaxcxr import config as config_lib
from jaxcxr import devices, explain, exported, optim, readout, workdir
from jaxcxr.checkpoints import Checkpointer
from jaxcxr.data import datasets
from jaxcxr.errors import UserError
from jaxcxr.models import DTYPES, create_model, prepare_input
from jaxcxr.readout import Readout
from jaxcxr.train_step import TrainState, eval_variables, state_template


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
  """A network with its trained variables where `put` places batches, and how its logits are read."""
  config: ml_collections.ConfigDict
  readout: Readout
  step: int
  batch_size: int
  variables: Any
  apply_fn: Any
  dtype: Any
  put: Callable[[np.ndarray], jax.Array]  # a batch onto the device(s) the variables live on

  @property
  def image_size(self) -> int:
    return self.config.data.image_size

  @property
  def aspect(self) -> str:
    return self.config.data.aspect

  @property
  def views(self) -> tuple[str, ...]:
    """The views the run trained on (data.views; empty: all the dataset's own)."""
    return datasets.views_of(self.config.data)

  def _batches(self, films: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """`films` in batches of the fixed size, the last padded with zeros; each with its count of real films."""
    for start in range(0, len(films), self.batch_size):
      chunk = films[start:start + self.batch_size]
      padded = np.zeros((self.batch_size, self.image_size, self.image_size), np.uint8)
      padded[:len(chunk)] = chunk
      yield self.put(padded), len(chunk)

  def logits(self, films: np.ndarray) -> np.ndarray:
    """(N, targets) logits for (N, size, size) uint8 films already at the run's size."""
    out = [devices.host_array(forward(self.apply_fn, self.dtype, self.variables, batch))[:n]
           for batch, n in self._batches(films)]
    return np.concatenate(out) if out else np.zeros((0, len(self.readout.targets)), np.float32)

  def heatmaps(self, films: np.ndarray, targets: np.ndarray, method: str = explain.METHODS[0]) -> np.ndarray:
    """(N, size, size) class activation maps in [0, 1] (`explain`), film i explained for target index
    `targets[i]`."""
    out = []
    for start, (batch, n) in zip(range(0, len(films), self.batch_size), self._batches(films)):
      which = np.zeros(self.batch_size, np.int32)
      which[:n] = targets[start:start + n]
      out.append(devices.host_array(_explain(self.apply_fn, self.dtype, method, self.variables, batch,
                                             self.put(which)))[:n])
    return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size), np.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def forward(apply_fn, dtype, variables, films):
  """(B, targets) logits of `films` (B, H, W) uint8: the network in evaluation mode, as predict applies it."""
  return apply_fn(variables, prepare_input(films, dtype), train=False).reshape(films.shape[0], -1)


_explain = jax.jit(explain.class_activation_map, static_argnums=(0, 1, 2))


def from_state(config: ml_collections.ConfigDict, state: TrainState, summary: dict | None,
               put: Callable[[np.ndarray], jax.Array]) -> TrainedNetwork:
  """`state`'s network read at the temperatures and operating points of `summary` (none without one of its
  step), applied to batches that `put` places where the state lives."""
  step = int(state.step)
  return TrainedNetwork(config, readout.from_summary(summary, datasets.target_names(config.data), step), step,
                        config_lib.eval_batch_size(config.train),
                        eval_variables(state), state.apply_fn, DTYPES[config.model.dtype], put)


def from_checkpoint(folder: str | pathlib.Path, platform: str = devices.CPU,
                    lowering: str | None = None) -> TrainedNetwork:
  """The run in `folder` from its newest intact checkpoint, on one device of `platform`, its convolutions
  computed by `lowering` where given (every lowering has the same parameters), else by the run's. Reads only:
  the checkpoints are opened read-only, so a run may be applied while it trains."""
  folder = pathlib.Path(folder).expanduser()
  raw = workdir.read_config(folder) if folder.is_dir() else None
  if raw is None and exported.is_export(folder):
    raise UserError(f"--workdir {folder} is an export, not a run folder: --mode=predict applies it, and the other "
                    f"modes take the run folder that holds it ({folder.parent})")
  if raw is None:
    raise UserError(f"--workdir {folder} holds no trained run (no config.json or summary.json); pass the folder "
                    "a training run wrote")
  config = ml_collections.ConfigDict(raw)
  if not (folder / checkpoints_lib.FOLDER).is_dir():
    raise UserError(f"--workdir {folder} has no checkpoint yet; train it first (python run.py --workdir={folder})")
  device = devices.select_devices(platform, 1)[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  try:
    if lowering is not None:
      config.model.lowering = lowering
    model, _ = create_model(config.model, device.platform, outputs=len(datasets.target_names(config.data)))
    # The optimizer only gives the checkpoint's shape; its step count does not change that shape.
    _, abstract = state_template(model, optim.create_optimizer(config.train, 1), config.data.image_size,
                                 config.train.seed, sharding)
  # A hand-edited or foreign config.json: too many layers for its image size divide a side down to zero.
  except (KeyError, AttributeError, TypeError, ValueError, ArithmeticError) as e:
    raise UserError(f"{folder / workdir.CONFIG} does not rebuild the run's network ({type(e).__name__}: {e}); "
                    f"{workdir.rerun_fix(folder)}") from e
  checkpoints = Checkpointer(folder / checkpoints_lib.FOLDER, config.checkpoint.keep, None, read_only=True)
  try:
    restored = checkpoints.restore(abstract)
  finally:
    checkpoints.close()
  if restored is None:
    raise UserError(f"--workdir {folder} has no checkpoint yet; train it first (python run.py --workdir={folder})")
  try:
    return from_state(config, restored[0], workdir.read_summary(folder),
                      functools.partial(jax.device_put, device=sharding))
  except readout.MalformedSummary as e:
    raise UserError(f"{folder / workdir.SUMMARY} is damaged: {e}; {workdir.rerun_fix(folder)}") from e
