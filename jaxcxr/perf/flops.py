"""FLOPs of one training step or forward pass, counted by XLA's cost analysis of the plain formulation."""

import functools

import flax.linen as nn
import jax
import ml_collections

from jaxcxr import augment, conv, devices, inference, models, optim, train_step


def step_flops(model: nn.Module, state: train_step.TrainState, batch: dict, pos_weight: float,
               photometric: tuple[float, float] = (0.0, 0.0)) -> float | None:
  """FLOPs of one training step of `model` on `state` and `batch` (arrays or shapes).

  Counted on the plain formulation (XLA's own convolutions): the other
  lowerings loop over batch chunks with `lax.scan`, whose body cost analysis
  counts once, or call compiled kernels it cannot see. It is lowered for the
  host CPU whatever the device, from shapes alone: XLA's cost analysis of an
  uncompiled module answers only on the CPU backend (None from the GPU's), and
  the count is the same on every platform. Not compiled, so this costs well
  under a second. None if JAX has no CPU backend.
  """
  cpu = _cpu_sharding()
  if cpu is None:
    return None
  plain = models.with_xla_convolutions(model)
  step, _ = train_step.jit_steps(pos_weight, model.dtype, photometric)
  return _counted(step.lower(*train_step.placed_shapes((state.replace(apply_fn=plain.apply), batch), cpu)))


def forward_flops(model: nn.Module, variables: dict, films: jax.Array) -> float | None:
  """FLOPs of `inference.forward` of `model` on `variables` and (B, H, W) uint8 `films`, counted as `step_flops`
  counts a step."""
  cpu = _cpu_sharding()
  if cpu is None:
    return None
  plain = models.with_xla_convolutions(model)
  shapes = train_step.placed_shapes((variables, films), cpu)
  return _counted(inference.forward.lower(plain.apply, model.dtype, *shapes))


def _cpu_sharding() -> jax.sharding.Sharding | None:
  """The host CPU, where cost analysis answers; None if JAX_PLATFORMS names no cpu."""
  try:
    return jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  except RuntimeError:
    return None


def _counted(lowered) -> float | None:
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = (analysis or {}).get("flops")
  return float(flops) if flops else None


def config_step_flops(config: ml_collections.ConfigDict) -> float | None:
  """`step_flops` of the train step `config` describes (its model, optimizer, image and batch size)."""
  model_cfg = config.model.copy_and_resolve_references()
  if "lowering" in model_cfg:
    model_cfg.lowering = conv.XLA  # counted on the plain formulation anyway; needs no compiler
  model, _ = models.create_model(model_cfg, devices.CPU)
  tx = optim.create_optimizer(config.train, total_steps=1)
  state = jax.eval_shape(functools.partial(train_step.create_state, model, tx, config.data.image_size,
                                           config.train.seed))
  batch = train_step.batch_shapes(config.train.batch_size, config.data.image_size)
  return step_flops(model, state, batch, 1.0, augment.photometric_params(config.data.augment))
