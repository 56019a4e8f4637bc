"""FLOP counting of the train step."""

import numpy as np

from jaxcxr import models, optim, train_step
from jaxcxr.configs import tiny
from jaxcxr.perf import flops
from tests.support import tiny_batch, tiny_state


def test_step_flops_is_none_without_a_cpu_backend(monkeypatch):
  state, batch = tiny_state(), tiny_batch()
  model = models.PaperCNN(widths=(4, 8), convs_per_block=1, dense=(8,), dropout=0.0)
  assert flops.step_flops(model, state, batch, 1.0) > 0

  def devices(platform=None):
    raise RuntimeError(f"Unknown backend {platform}")  # what JAX says when JAX_PLATFORMS leaves the CPU out

  monkeypatch.setattr(flops.jax, "devices", devices)
  assert flops.step_flops(model, state, batch, 1.0) is None


def test_a_config_counts_as_its_built_step():
  """What the speedup command reports for a config: the same count as the step training builds from it."""
  config = tiny.get_config()
  model = models.PaperCNN(widths=(8, 16), convs_per_block=1, dense=(16,), dropout=0.3)
  state = train_step.create_state(model, optim.create_optimizer(config.train, 1), 32, 0)
  batch = {"image": np.zeros((8, 32, 32), np.uint8), "label": np.zeros(8, np.int32)}
  counted = flops.step_flops(model, state, batch, 1.0, (0.1, 0.05))
  assert counted > 0 and flops.config_step_flops(config) == counted
