"""Live training curves: per-epoch scalars through tensorboardX, one value per step after a resume."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from jaxcxr import config as config_lib
from jaxcxr import tensorboard
from jaxcxr.errors import UserError
from tests.support import train_run

pytestmark = pytest.mark.slow  # whole runs, one killed and resumed


def _curves(folder) -> dict[str, list[tuple[int, float]]]:
  events = EventAccumulator(str(folder))
  events.Reload()
  return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture
def logged_config(tiny_config):
  tiny_config.logging.tensorboard = True
  tiny_config.train.epochs = 3
  return tiny_config


def test_every_epoch_writes_its_scalars(logged_config, tmp_path):
  summary = train_run(logged_config, tmp_path)
  curves = _curves(tmp_path / "tensorboard")
  assert set(curves) == {*tensorboard.SCALARS, "optimizer/learning_rate"}
  steps = [r["step"] for r in summary["epochs"]]
  assert [s for s, _ in curves["val/loss"]] == steps
  np.testing.assert_allclose([v for _, v in curves["val/loss"]], [r["val_loss"] for r in summary["epochs"]],
                             rtol=1e-6)
  assert [v for _, v in curves["optimizer/learning_rate"]] == pytest.approx([logged_config.train.learning_rate] * 3)


class Killed(Exception):
  pass


def test_a_resumed_run_keeps_one_value_per_step(logged_config, tmp_path, monkeypatch):
  # Killed right after epoch 2's scalars, before its checkpoint (step 16): the rerun resumes from step 15 and
  # logs epoch 2 again; the first run's value past step 15 must not stay beside it.
  original = tensorboard.Scalars.epoch

  def write_then_die(self, record, learning_rate):
    original(self, record, learning_rate)
    if record["step"] == 16:
      raise Killed

  monkeypatch.setattr(tensorboard.Scalars, "epoch", write_then_die)
  with pytest.raises(Killed):
    train_run(logged_config, tmp_path)
  monkeypatch.undo()
  summary = train_run(logged_config, tmp_path)
  curves = _curves(tmp_path / "tensorboard")
  assert [s for s, _ in curves["train/loss"]] == [r["step"] for r in summary["epochs"]] == [8, 16, 24]
  np.testing.assert_allclose([v for _, v in curves["train/loss"]], [r["train_loss"] for r in summary["epochs"]],
                             rtol=1e-6)


def test_without_tensorboardx_the_config_is_refused_in_one_line(tiny_config, monkeypatch):
  monkeypatch.setattr(tensorboard, "available", lambda: False)
  tiny_config.logging.tensorboard = True
  with pytest.raises(UserError, match=r"logging.tensorboard=True needs the tensorboardX package: pip install"):
    config_lib.validate(tiny_config)
