"""GPU checks: skipped without a GPU (CI has none). On a GPU machine, run them with JAX free to find it:

  JAX_PLATFORMS= python -m pytest tests/test_gpu.py
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcxr import conv, devices, experiment, models, train_step
from jaxcxr.errors import UserError
from jaxcxr.perf.flops import step_flops


def _gpu():
  try:
    return devices.select_devices("gpu", 1)[0]
  except UserError:
    return None


GPU = _gpu()
pytestmark = pytest.mark.skipif(GPU is None, reason="no GPU visible to JAX (CI never has one)")


def test_tiny_run_trains_on_the_gpu(tiny_config, tmp_path):
  summary = experiment.train_and_evaluate(tiny_config, tmp_path, GPU)
  assert summary["device"]["platform"] == "gpu"
  t = summary["test"]
  assert t["tn"] + t["fp"] + t["fn"] + t["tp"] == summary["split_sizes"]["test"]
  assert devices.select_devices("gpu", 1)[0] == GPU


@pytest.mark.skipif(GPU is None or len(jax.devices("gpu")) < 2, reason="needs two or more GPUs")
def test_data_parallel_over_every_gpu_trains_as_one(tiny_config, tmp_path):
  every = devices.select_devices("gpu")[:8]  # 4 films a device: the tiny training split holds 60-70
  tiny_config.train.batch_size = tiny_config.train.eval_batch_size = 4 * len(every)
  one = experiment.train_and_evaluate(tiny_config, tmp_path / "one", every[:1])
  all_of_them = experiment.train_and_evaluate(tiny_config, tmp_path / "all", every)
  assert all_of_them["device"]["num_devices"] == len(every) and one["device"]["num_devices"] == 1
  t = all_of_them["test"]
  assert t["tn"] + t["fp"] + t["fn"] + t["tp"] == all_of_them["split_sizes"]["test"]


def test_bfloat16_step_on_the_gpu():
  model = models.PaperCNN(widths=(8, 16), convs_per_block=2, dense=(16,), dtype=jnp.bfloat16, conv=conv.module("xla"))
  state = jax.device_put(train_step.create_state(model, optax.adam(1e-3), image_size=32, seed=0), GPU)
  batch = jax.device_put({"image": np.random.default_rng(0).integers(0, 256, (8, 32, 32)).astype(np.uint8),
                          "label": (np.arange(8) % 2).astype(np.int32)}, GPU)
  step, _ = train_step.jit_steps(pos_weight=1.0, dtype=jnp.bfloat16)
  for _ in range(3):
    state = step(state, batch)
  assert int(state.sums["first_nonfinite_step"]) == -1
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))


def test_step_flops_counted_for_a_gpu_state_as_for_a_cpu_one():
  # XLA's GPU backend analyses no uncompiled module; step_flops lowers for the host CPU instead.
  model = models.PaperCNN(widths=(8, 16), convs_per_block=2, dense=(16,), conv=conv.module("xla"))
  state = train_step.create_state(model, optax.adam(1e-3), image_size=32, seed=0)
  batch = {"image": np.zeros((8, 32, 32), np.uint8), "label": np.zeros(8, np.int32)}
  on_cpu = step_flops(model, state, batch, 1.0)
  assert on_cpu > 0
  assert step_flops(model, jax.device_put(state, GPU), jax.device_put(batch, GPU), 1.0) == on_cpu


def test_torch_twin_runs_on_cuda_beside_the_gpu_step():
  torch = pytest.importorskip("torch", reason="PyTorch is the optional 'bench' extra")
  if not torch.cuda.is_available():
    pytest.skip("this PyTorch has no CUDA")
  from jaxcxr.configs import tiny
  from jaxcxr.perf import bench
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32)).astype(np.uint8)
  step = bench.load_torch_twin().make_step(tiny.get_config().model, 32, 1e-3, images,
                                           np.array([0, 1, 0, 1], np.int32), "cuda")
  losses = [step() for _ in range(3)]
  assert all(np.isfinite(losses)) and losses[-1] != losses[0]
