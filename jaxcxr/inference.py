"""A trained network ready to apply: its parameters on the device(s) it runs on, its network's own input
scaling and its operating points. Built in one of two ways, and then applied the same way by `predict`, the run
report's gallery and its localisation check:

  network = inference.from_checkpoint(workdir)                         # a run folder's newest intact checkpoint
  network = inference.from_state(config, state, summary, put)           # training's final state, in memory

Films reach it as (N, size, size) uint8 arrays at the run's size (`prepare` fits any other film the way the
training cache does), in jitted batches of one fixed size, so one compilation serves every call.
"""

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxcxr import config as config_lib
from jaxcxr import devices, explain, metrics, optim, workdir
from jaxcxr.checkpoints import Checkpointer
from jaxcxr.data import datasets, images
from jaxcxr.errors import UserError
from jaxcxr.models import DTYPES, create_model, prepare_input
from jaxcxr.train_step import TrainState, eval_variables, state_template

UNFINISHED_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class TrainedNetwork:
  """A network with its trained variables where `put` places batches, and each target's operating point."""
  config: ml_collections.ConfigDict
  targets: tuple[str, ...]
  thresholds: tuple[float, ...]
  threshold_note: str
  step: int
  batch_size: int
  variables: Any
  apply_fn: Any
  dtype: Any
  put: Callable[[np.ndarray], jax.Array]  # a batch onto the device(s) the variables live on

  @property
  def image_size(self) -> int:
    return self.config.data.image_size

  def prepare(self, film: np.ndarray) -> np.ndarray:
    """A 2-D uint8 film of any size made the run's (size, size) input, as training's cache makes it."""
    film = np.asarray(film)
    if film.ndim != 2 or film.dtype != np.uint8:
      raise UserError(f"a film given as an array must be 2-D uint8 greyscale; got {film.dtype} {film.shape} "
                      "(pass paths to have PNG, JPEG or DICOM files decoded)")
    try:
      images.check_size("a film given as an array", film.shape[1], film.shape[0])
    except images.BadImageError as e:
      raise UserError(str(e)) from e
    return film if film.shape == (self.image_size,) * 2 else \
        images.fit(film, self.image_size, self.config.data.aspect)

  def _batches(self, films: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
    """`films` in batches of the fixed size, the last padded with zeros; each with its count of real films."""
    for start in range(0, len(films), self.batch_size):
      chunk = films[start:start + self.batch_size]
      padded = np.zeros((self.batch_size, self.image_size, self.image_size), np.uint8)
      padded[:len(chunk)] = chunk
      yield self.put(padded), len(chunk)

  def logits(self, films: np.ndarray) -> np.ndarray:
    """(N, targets) logits for (N, size, size) uint8 films already at the run's size."""
    out = [devices.host_array(_forward(self.apply_fn, self.dtype, self.variables, batch))[:n]
           for batch, n in self._batches(films)]
    return np.concatenate(out) if out else np.zeros((0, len(self.targets)), np.float32)

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

  def labels(self, logits: np.ndarray) -> np.ndarray:
    """1 where a film is called positive: its probability above the threshold, compared as the test report does
    (the logit above the threshold's logit)."""
    columns = [metrics.called(logits[:, k], t) for k, t in enumerate(self.thresholds)]
    return np.stack(columns, axis=1).astype(np.int32) if columns else np.zeros(logits.shape, np.int32)

  def caption(self, logits: np.ndarray, target: int) -> str:
    """What an explained film's overlay says: the target, its probability and the call at the threshold."""
    verdict = "positive" if self.labels(logits[None])[0, target] else "negative"
    return (f"{self.targets[target]} p={float(probability(logits[target])):.3f}: {verdict} "
            f"(threshold {self.thresholds[target]:.3f})")


def probability(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _forward(apply_fn, dtype, variables, films):
  return apply_fn(variables, prepare_input(films, dtype), train=False).reshape(films.shape[0], -1)


_explain = jax.jit(explain.class_activation_map, static_argnums=(0, 1, 2))


def operating_points(summary: dict | None, targets: tuple[str, ...], step: int) -> tuple[tuple[float, ...], str]:
  """Each target's threshold as the run chose it on validation, if `summary` (the run's) is of checkpoint
  `step`; else 0.5. Also what to say about them."""
  if summary is None or summary.get("step") != step:
    why = "the run has not finished" if summary is None else f"its summary is of step {summary.get('step')}"
    return (UNFINISHED_THRESHOLD,) * len(targets), (f"labels at {UNFINISHED_THRESHOLD}: {why}, so no operating "
                                                    f"point was chosen on validation for step {step}")
  test = summary["test"]
  chosen = [test["findings"][t]["threshold"] for t in targets] if "findings" in test else [test["threshold"]]
  rules = sorted({c["rule"] for c in chosen})
  return tuple(c["value"] for c in chosen), f"labels at the run's operating point (eval.threshold={', '.join(rules)})"


def from_state(config: ml_collections.ConfigDict, state: TrainState, summary: dict | None,
               put: Callable[[np.ndarray], jax.Array]) -> TrainedNetwork:
  """`state`'s network at the operating points of `summary` (0.5 without one of its step), applied to batches
  that `put` places where the state lives."""
  targets = datasets.target_names(config.data)
  step = int(state.step)
  thresholds, note = operating_points(summary, targets, step)
  return TrainedNetwork(config, targets, thresholds, note, step, config_lib.eval_batch_size(config.train),
                        eval_variables(state), state.apply_fn, DTYPES[config.model.dtype], put)


def from_checkpoint(folder: str | pathlib.Path, platform: str = devices.CPU) -> TrainedNetwork:
  """The run in `folder` from its newest intact checkpoint, on one device of `platform`. Reads only: the
  checkpoints are opened read-only, so a run may be applied while it trains."""
  folder = pathlib.Path(folder).expanduser()
  raw = workdir.read_config(folder) if folder.is_dir() else None
  if raw is None:
    raise UserError(f"--workdir {folder} holds no trained run (no config.json or summary.json); pass the folder "
                    "a training run wrote")
  config = ml_collections.ConfigDict(raw)
  if not (folder / "checkpoints").is_dir():
    raise UserError(f"--workdir {folder} has no checkpoint yet; train it first (python run.py --workdir={folder})")
  device = devices.select_devices(platform, 1)[0]
  model, _ = create_model(config.model, device.platform, outputs=len(datasets.target_names(config.data)))
  sharding = jax.sharding.SingleDeviceSharding(device)
  # The optimizer only gives the checkpoint's shape; its step count does not change that shape.
  _, abstract = state_template(model, optim.create_optimizer(config.train, 1), config.data.image_size,
                               config.train.seed, sharding)
  checkpoints = Checkpointer(folder / "checkpoints", config.checkpoint.keep, None, read_only=True)
  try:
    restored = checkpoints.restore(abstract)
  finally:
    checkpoints.close()
  if restored is None:
    raise UserError(f"--workdir {folder} has no checkpoint yet; train it first (python run.py --workdir={folder})")
  return from_state(config, restored[0], workdir.read_summary(folder), functools.partial(jax.device_put,
                                                                                          device=sharding))
