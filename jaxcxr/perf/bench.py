"""Train-step benchmark: the real jitted step on device-resident data, against the machine's peak.

  python -m jaxcxr.perf.bench                       # paper CNN, 224 px, batch 32 (configs/bench_step.py)
  python -m jaxcxr.perf.bench --torch               # with the PyTorch twin, alternating
  python -m jaxcxr.perf.bench --platform=gpu --config.model.dtype=bfloat16
  python -m jaxcxr.perf.bench --config.data.image_size=180 --config.train.batch_size=16   # any config key
  python -m jaxcxr.perf.bench --layers              # + each conv layer's passes in every lowering
  python -m jaxcxr.perf.bench --config=configs/resnet50.py --torch --inference   # the forward pass predict runs
  python -m jaxcxr.perf.bench --torch --noretain_host_memory   # glibc's default: big buffers re-mmapped each step
  python -m jaxcxr.perf.bench --end_to_end --platform=gpu --config.model.dtype=bfloat16 --config.train.batch_size=256

Builds the state and step exactly as training does (`train_step.create_state`,
`train_step.jit_steps`, the config's model, optimizer, image size and batch size), warms up, then times each step
after `block_until_ready`. FLOPs per step come from XLA's cost analysis; the
peak is a large matmul in the model's compute dtype, timed in the same process on the same device.
With --torch, the PyTorch twin (`benchmarks/torch_twin.py`: the paper CNN, or
torchvision's own backbone) runs the same shapes, one step each in turn, so both
see the same machine state. With --inference, the forward pass predict runs is timed instead of the step (the
twin in eval() and inference_mode()). With --layers, each distinct convolution of the model is also timed alone
(forward, input gradient, kernel gradient, both gradients) in each formulation that computes it differently:
the evidence behind `jaxcxr/conv/policy.py`'s table and `jaxcxr/conv/backbone.py`'s paths. With --end_to_end, the
same step is also fed by the training loop's own input path (an on-disk cache of random films, the grain
stream with the config's augmentation, threads and worker processes, the device prefetcher), and the two
rates are compared: whether the input pipeline keeps the device busy. Prints JSON.
"""

import importlib.util
import pathlib
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from absl import flags

from jaxcxr import augment, cli, conv, devices, hostmem, inference, input_pipeline, models, train_step
from jaxcxr.data import cache
from jaxcxr.errors import UserError
from jaxcxr.optim import create_optimizer
from jaxcxr.perf import runs
from jaxcxr.perf.flops import forward_flops, step_flops

# The twin lives in the checkout's benchmarks/, outside the package.
TORCH_TWIN = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "torch_twin.py"

_CONFIG = cli.config_flag("bench_step", "Config whose model, optimizer, image size and batch size are benchmarked.")
_PLATFORM = flags.DEFINE_enum("platform", devices.CPU, list(devices.PLATFORMS), "Device.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps (per framework).", lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.", lower_bound=0)
_TORCH = flags.DEFINE_bool("torch", False, "Also time the PyTorch twin, alternating step by step.")
_LAYERS = flags.DEFINE_bool("layers", False, "Also time each distinct conv layer's three passes in each formulation.")
_INFERENCE = flags.DEFINE_bool("inference", False, "Time the forward pass predict runs (evaluation mode) instead "
                               "of the train step; with --torch, against the twin in eval() and inference_mode().")
_RETAIN = flags.DEFINE_bool("retain_host_memory", True, "On CPU, keep freed host memory mapped (as training "
                             "does; jaxcxr.hostmem). It applies to the whole process, PyTorch twin included.")
_OUT = cli.path_flag("out", None, "Also write the JSON here.")
_END_TO_END = flags.DEFINE_bool("end_to_end", False, "Also time the step fed by the training input pipeline (cache "
                                "-> grain -> device), against the step alone on device-resident data.")
_FILMS = flags.DEFINE_integer("films", 1024, "Films in the end-to-end run's cache (random pixels: decoding is not "
                              "timed, reading, warping and transfer are).", lower_bound=1)


def _times_ms(fn, *args, repeats: int = 5) -> list[float]:
  """Wall ms of `repeats` synchronized calls of `fn`, after one untimed call (compilation)."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(1000.0 * (time.perf_counter() - t))
  return times


def matmul_peak_flops(device: jax.Device, dtype=jnp.float32) -> float:
  """Best FLOP/s of a square matmul in `dtype` on `device`: the ceiling the step is compared with.

  2048 wide on a CPU (seconds of work at most); 8192 on a GPU, where a smaller
  product takes too few microseconds to fill the chip and outlast the launch.
  Random operands: zeros run faster than real data on some GPUs.
  """
  n = 2048 if device.platform == devices.CPU else 8192
  a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), dtype), device)
  return 2.0 * n ** 3 / (min(_times_ms(jax.jit(jnp.matmul), a, a)) / 1000.0)


def _median_ms(fn, *args) -> float:
  return statistics.median(_times_ms(fn, *args))


def conv_layers(model: nn.Module, variables: dict, image: jax.Array) -> list[tuple[nn.Module, tuple[int, ...]]]:
  """Every convolution `model` applies (`conv.Conv`, or flax's and its subclasses), as built, with the shape of
  its input, in order, read off a shape-only forward pass."""
  found = {}

  def record(next_fun, args, kwargs, context):
    layer = context.module
    if context.method_name == "__call__" and isinstance(layer, (conv.Conv, nn.Conv)):
      found.setdefault(layer.path, (layer, tuple(args[0].shape)))  # a subclass's super() call is the same layer
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.apply(variables, image, train=False))
  return list(found.values())


def _layer_key(layer: nn.Module, x_shape: tuple[int, ...]) -> str:
  """What a layer's timing depends on: its input shape and its fields (identical layers are timed once)."""
  return repr((x_shape, layer.clone(parent=None, name=None)))


def time_conv_layers(layers: list[tuple[nn.Module, tuple[int, ...]]], device: jax.Device, dtype) -> list[dict]:
  """Median ms of each distinct layer's forward pass, input gradient, kernel gradient and backward pass (both
  gradients) in each formulation that computes it differently (`conv.variants`), with how many layers of the
  network share its shape and which formulation the network runs it with."""
  rows = {}
  for layer, x_shape in layers:
    key = _layer_key(layer, x_shape)
    if key in rows:
      rows[key]["count"] += 1
      continue
    formulations = conv.variants(layer, device.platform)
    x = jax.device_put(jax.random.normal(jax.random.key(0), x_shape, dtype), device)
    params = jax.device_put(next(iter(formulations.values())).init(jax.random.key(1), x), device)
    row = {"input": list(x_shape), "kernel": list(params["params"]["kernel"].shape),
           "strides": list(conv.strides_of(layer)),
           "count": 1, "runs": conv.formulation_of(layer)}
    out = jax.eval_shape(next(iter(formulations.values())).apply, params, x)
    g = jax.device_put(jax.random.normal(jax.random.key(2), out.shape, dtype), device)
    for name, formulation in formulations.items():
      apply = formulation.apply
      # Each gradient alone, and both as a train step computes them (where one custom_vjp computes both, the
      # input gradient's pullback may run the kernel gradient too): each pullback holds the forward pass's
      # residuals, computed once beforehand.
      pullbacks = {"input_grad_ms": jax.vjp(lambda x_, f=apply: f(params, x_), x)[1],
                   "kernel_grad_ms": jax.vjp(lambda p_, f=apply: f(p_, x), params)[1],
                   "backward_ms": jax.vjp(apply, params, x)[1]}
      row[name] = {"forward_ms": _median_ms(jax.jit(apply), params, x),
                   **{key: _median_ms(jax.jit(lambda pullback, g: pullback(g)), pullback, g)
                      for key, pullback in pullbacks.items()}}
    rows[key] = row
  return list(rows.values())


def load_torch_twin(path: pathlib.Path = TORCH_TWIN):
  """The PyTorch twin module, loaded by path: it lives in the checkout's benchmarks/, outside the package."""
  if not path.is_file():
    raise UserError(f"--torch needs {path}, which only a source checkout has; run from a clone of the repository")
  try:
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import  # the optional extra
  except ImportError as e:
    raise UserError("--torch needs PyTorch, the optional benchmark extra: pip install '.[bench]'") from e
  spec = importlib.util.spec_from_file_location("torch_twin", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def time_end_to_end(config, step, state, device: jax.Device, steps: int, warmup: int) -> dict:
  """Images/s of `step` fed as training feeds it: films read from an on-disk cache by the grain stream (the
  config's augmentation, `data.num_threads`, `data.prefetch`, `data.worker_processes`) and sent ahead to the
  device by the prefetcher; and the share of the time spent waiting for a batch."""
  size, batch = config.data.image_size, config.train.batch_size
  count = max(_FILMS.value, batch)
  films = np.random.default_rng(1).integers(0, 256, (count, size, size)).astype(np.uint8)
  examples = pd.DataFrame({"image_id": [f"film{i}" for i in range(count)], "label": np.arange(count) % 2,
                           "patient_id": [f"patient{i}" for i in range(count)], "path": [None] * count})
  with tempfile.TemporaryDirectory(prefix="jaxcxr-end-to-end-") as scratch:
    split = cache.build_or_load(examples, "train", pathlib.Path(scratch), size, config.data.aspect, "error",
                                films=films)
    epochs = -(-(steps + warmup + input_pipeline.DevicePrefetcher.DEPTH) // (count // batch))  # ceil
    stream = input_pipeline.train_dataset(input_pipeline.SplitSource(split), batch, epochs, config.train.seed,
                                          config.data.augment)
    iterator = input_pipeline.train_iterator(stream, config.data.num_threads, config.data.prefetch,
                                             config.data.worker_processes)
    try:
      batches = input_pipeline.DevicePrefetcher(iterator, lambda b: jax.device_put(b, device))
      batches.fill()  # the workers' start-up stays out of the time, as in training
      for _ in range(warmup):
        state = step(state, next(batches))
      jax.block_until_ready(state)
      wait_before, start = batches.wait_s, time.perf_counter()
      for _ in range(steps):
        state = step(state, next(batches))
      jax.block_until_ready(state)
      elapsed = time.perf_counter() - start
    finally:
      if config.data.worker_processes:
        iterator.close()
  return {"images_per_s": steps * batch / elapsed, "ms_per_step": 1000.0 * elapsed / steps,
          "data_wait_fraction": (batches.wait_s - wait_before) / elapsed, "films_cached": count,
          "augment": bool(config.data.augment.enabled), "num_threads": config.data.num_threads,
          "worker_processes": config.data.worker_processes, "host_cores": devices.host_cores()}


def _alternate(jax_call, torch_call, steps: int, warmup: int) -> tuple[list[float], list[float]]:
  """Wall ms of `steps` synchronized calls of `jax_call` and of `torch_call` (if any), one of each in turn, so
  that both see the same machine state; after `warmup` untimed calls of each."""
  for _ in range(warmup):
    jax.block_until_ready(jax_call())
    if torch_call:
      torch_call()
  jax_ms, torch_ms = [], []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(jax_call())
    jax_ms.append(1000.0 * (time.perf_counter() - t))
    if torch_call:
      t = time.perf_counter()
      torch_call()  # returns host values: it waits for the work
      torch_ms.append(1000.0 * (time.perf_counter() - t))
  return jax_ms, torch_ms


def _stats(ms: list[float], batch: int) -> dict:
  return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
          "images_per_s": 1000.0 * batch / statistics.median(ms)}


def main(argv):
  del argv
  runs.check_out_file(_OUT.value)  # before the minutes of work, not after them
  twin = load_torch_twin() if _TORCH.value else None  # fail before the minutes of JAX work
  config = cli.load_config(_CONFIG)
  if _INFERENCE.value and _END_TO_END.value:
    raise UserError("--end_to_end feeds the train step, which --inference does not time; give one of them")
  size, batch = config.data.image_size, config.train.batch_size
  if _PLATFORM.value == devices.CPU and _RETAIN.value:
    hostmem.retain_freed_memory()  # before the CPU backend starts, as jaxcxr.main does for training
  device = devices.select_devices(_PLATFORM.value, 1)[0]
  model, lowering = models.create_model(config.model, device.platform)
  tx = create_optimizer(config.train, total_steps=1_000_000)
  state = jax.jit(lambda: train_step.create_state(model, tx, size, config.train.seed),
                  out_shardings=jax.sharding.SingleDeviceSharding(device))()
  rng = np.random.default_rng(0)
  host = {"image": rng.integers(0, 256, (batch, size, size)).astype(np.uint8),
          "label": (np.arange(batch) % 2).astype(np.int32)}
  data = jax.device_put(host, device)
  photometric = augment.photometric_params(config.data.augment)
  torch_device = "cuda" if device.platform == devices.GPU else "cpu"
  t = time.perf_counter()
  if _INFERENCE.value:
    variables = train_step.eval_variables(state)
    jax.block_until_ready(inference.forward(model.apply, model.dtype, variables, data["image"]))  # compiles

    def jax_call():
      return inference.forward(model.apply, model.dtype, variables, data["image"])

    torch_call = twin.make_forward(config.model, size, host["image"], torch_device) if twin else None
    flops = forward_flops(model, variables, data["image"])
  else:
    train, _ = train_step.jit_steps(1.0, model.dtype, photometric)
    step = train.lower(state, data).compile()
    flops = step_flops(model, state, data, 1.0, photometric)

    def jax_call():
      nonlocal state
      state = step(state, data)
      return state.step

    torch_call = twin.make_step(config.model, size, config.train.learning_rate, host["image"], host["label"],
                                torch_device) if twin else None
  compile_s = time.perf_counter() - t
  jax_ms, torch_ms = _alternate(jax_call, torch_call, _STEPS.value, _WARMUP.value)
  peak = matmul_peak_flops(device, model.dtype)
  result = {"device": devices.record([device]), "model": config.model.to_dict(),
            "timed": "inference" if _INFERENCE.value else "train_step", "lowering": lowering, "image_size": size,
            "batch_size": batch, "optimizer": config.train.optimizer, "compile_s": compile_s,
            "steps": _STEPS.value, "jax": _stats(jax_ms, batch), "flops_per_step": flops,
            "matmul_peak_flops_per_s": peak, "matmul_peak_dtype": jnp.dtype(model.dtype).name,
            "default_matmul_precision": jax.config.jax_default_matmul_precision or "default"}
  if flops:
    result["jax"]["achieved_flops_per_s"] = flops / (result["jax"]["median_ms"] / 1000.0)
    result["jax"]["fraction_of_peak"] = result["jax"]["achieved_flops_per_s"] / peak
  if torch_ms:
    import torch  # pylint: disable=g-import-not-at-top
    result["torch"] = {**_stats(torch_ms, batch), "version": torch.__version__}
    result["jax_over_torch_images_per_s"] = result["jax"]["images_per_s"] / result["torch"]["images_per_s"]
  if _LAYERS.value:
    image = jnp.zeros((batch, size, size, 1), model.dtype)
    result["conv_layers"] = time_conv_layers(conv_layers(model, train_step.eval_variables(state), image), device,
                                             model.dtype)
  if _END_TO_END.value:  # last: the state is donated to these steps
    result["end_to_end"] = time_end_to_end(config, step, state, device, _STEPS.value, _WARMUP.value)
    result["end_to_end_over_step"] = result["end_to_end"]["images_per_s"] / result["jax"]["images_per_s"]
  runs.emit_json(result, _OUT.value)


if __name__ == "__main__":
  cli.run(main)
