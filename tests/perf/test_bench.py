"""The step benchmark's JSON, on a tiny model (its timings are not asserted: machines are noisy)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

# Importing jaxcxr.perf.bench parses its default --config file, which ml_collections 1.1 loads with the deprecated
# SourceFileLoader.load_module(); the warning is theirs, about their loader, not about code here.
IMPORTS_BENCH = pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ["--config=configs/tiny.py", "--steps=3", "--warmup=1"]  # 32 px, batch 8


def _bench(*args):
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.bench", *_later_wins(TINY, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout)


def _later_wins(base, args):
  """`base` flags less those `args` give again (a flag given twice with two values is refused)."""
  given = {a.partition("=")[0] for a in args}
  return [*(a for a in base if a.partition("=")[0] not in given), *args]


@pytest.fixture(scope="module")
def tiny_step():
  """The tiny config's step benchmark, run once for the tests that read it."""
  return _bench()


def test_json_schema(tiny_step):
  data = tiny_step
  assert data["device"]["platform"] == "cpu" and data["image_size"] == 32 and data["batch_size"] == 8
  jax_stats = data["jax"]
  assert jax_stats["min_ms"] <= jax_stats["median_ms"] <= jax_stats["max_ms"]
  assert jax_stats["images_per_s"] == pytest.approx(8000.0 / jax_stats["median_ms"])
  assert data["flops_per_step"] > 0 and data["matmul_peak_flops_per_s"] > 0
  assert jax_stats["achieved_flops_per_s"] == pytest.approx(data["flops_per_step"] / jax_stats["median_ms"] * 1e3)
  assert "torch" not in data
  assert data["device"]["host_memory_retained"] in (True, False)  # False only off glibc
  assert data["matmul_peak_dtype"] == "float32"


@pytest.mark.slow
def test_bfloat16_step_is_compared_with_a_bfloat16_peak():
  data = _bench("--config.model.dtype=bfloat16")
  assert data["model"]["dtype"] == "bfloat16" and data["matmul_peak_dtype"] == "bfloat16"
  assert data["jax"]["fraction_of_peak"] > 0


@pytest.mark.slow
def test_torch_twin_side_by_side_with_glibc_defaults():
  pytest.importorskip("torch", reason="PyTorch is the optional 'bench' extra")
  data = _bench("--torch", "--noretain_host_memory")
  assert data["device"]["host_memory_retained"] is False
  assert data["torch"]["median_ms"] > 0
  assert data["jax_over_torch_images_per_s"] == pytest.approx(
      data["jax"]["images_per_s"] / data["torch"]["images_per_s"])


@pytest.mark.slow
@IMPORTS_BENCH
@pytest.mark.parametrize("config_name", ["paper", "resnet18", "resnet50", "densenet121"])
def test_torch_twin_has_the_same_parameter_count(config_name):
  torch = pytest.importorskip("torch", reason="PyTorch is the optional 'bench' extra")
  import importlib

  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxcxr import models
  from jaxcxr.perf import bench
  cfg = importlib.import_module(f"jaxcxr.configs.{config_name}").get_config()
  model = models.create_model(cfg.model)[0]
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 180, 180, 1)), train=False))
  jax_count = sum(x.size for x in jax.tree.leaves(variables["params"]))  # BatchNorm statistics are not parameters
  captured = {}
  original = torch.optim.Adam

  def spy(params, **kwargs):
    params = list(params)
    captured["count"] = sum(p.numel() for p in params)
    return original(params, **kwargs)

  torch.optim.Adam = spy
  try:
    bench.load_torch_twin().make_step(cfg.model, 180, 1e-3, np.zeros((2, 180, 180), np.uint8), np.zeros(2, np.int32))
  finally:
    torch.optim.Adam = original
  assert captured["count"] == jax_count


@pytest.mark.slow
def test_layers_lists_every_conv_with_every_lowering():
  from jaxcxr.configs import tiny
  model = tiny.get_config().model
  layers = _bench("--layers")["conv_layers"]
  assert sum(row["count"] for row in layers) == len(model.widths) * model.convs_per_block
  assert [row["kernel"][3] for row in layers for _ in range(row["count"])] == [
      w for w in model.widths for _ in range(model.convs_per_block)]
  assert layers[0]["input"] == [8, 32, 32, 1] and layers[1]["input"][3] == model.widths[0]
  for row in layers:
    lowerings = ("xla", "gemm", "winograd", "direct")  # CI has a C++ compiler
    assert set(row) == {"input", "kernel", "strides", "count", "runs", *lowerings}
    assert row["strides"] == [1, 1] and row["runs"] == "direct"  # auto on 2 cores
    for lowering in lowerings:
      assert set(row[lowering]) == {"forward_ms", "input_grad_ms", "kernel_grad_ms", "backward_ms"}
      assert all(ms > 0 for ms in row[lowering].values())


@pytest.mark.slow
def test_layers_of_a_backbone_time_each_formulation_that_computes_the_layer():
  from jaxcxr import conv
  layers = _bench("--config=configs/tiny.py:resnet18", "--layers")["conv_layers"]
  # stem, 3x3s of stride 1 (the first stage's two share a shape), the strided 3x3, the strided 1x1 shortcut
  assert sum(row["count"] for row in layers) == 6
  kinds = {(tuple(row["kernel"][:2]), tuple(row["strides"])): row for row in layers}
  stem, same, strided, shortcut = (kinds[k] for k in (((7, 7), (2, 2)), ((3, 3), (1, 1)), ((3, 3), (2, 2)),
                                                          ((1, 1), (2, 2))))
  lowerings = conv.runnable("cpu")
  for row in (stem, strided):
    assert set(row) - {"input", "kernel", "strides", "count", "runs"} == {"xla", "patches"}
    assert row["runs"] == "patches"
  assert set(same) - {"input", "kernel", "strides", "count", "runs"} == set(lowerings)
  assert same["runs"] == conv.resolve(conv.AUTO, "cpu")
  assert set(shortcut) - {"input", "kernel", "strides", "count", "runs"} == {"xla", "matmul"}
  assert shortcut["runs"] == "matmul" and shortcut["input"] == [8, 8, 8, 8]
  assert all(ms > 0 for row in layers for name in (*lowerings, "matmul", "patches") if name in row
             for ms in row[name].values())


@pytest.mark.slow
def test_inference_times_the_forward_pass_beside_the_twins(tiny_step):
  pytest.importorskip("torch", reason="PyTorch is the optional 'bench' extra")
  step, forward = tiny_step, _bench("--inference", "--torch")
  assert step["timed"] == "train_step" and forward["timed"] == "inference"
  # A forward pass is about a third of a step's work (the backward pass is about twice it).
  assert 0.2 < forward["flops_per_step"] / step["flops_per_step"] < 0.5
  assert forward["torch"]["median_ms"] > 0 and forward["jax_over_torch_images_per_s"] == pytest.approx(
      forward["jax"]["images_per_s"] / forward["torch"]["images_per_s"])


@IMPORTS_BENCH
def test_torch_twin_missing_from_an_installed_copy_is_a_clear_error(tmp_path):
  from jaxcxr.errors import UserError
  from jaxcxr.perf import bench
  with pytest.raises(UserError, match="source checkout"):
    bench.load_torch_twin(tmp_path / "benchmarks" / "torch_twin.py")


def test_torch_flag_without_pytorch_exits_with_the_install_hint(tmp_path):
  # Whether or not PyTorch is installed here, a sitecustomize makes `import torch` fail in the child.
  (tmp_path / "sitecustomize.py").write_text(
      "import sys\nclass _Block:\n  def find_spec(self, name, *a):\n"
      "    if name == 'torch':\n      raise ModuleNotFoundError(name)\n"
      "sys.meta_path.insert(0, _Block())\n")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(tmp_path)}
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.bench", *TINY, "--torch"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --torch needs PyTorch, the optional benchmark extra: pip install '.[bench]'")


@pytest.mark.slow
@IMPORTS_BENCH
def test_torch_twin_trains_under_bfloat16_autocast():
  pytest.importorskip("torch", reason="PyTorch is the optional 'bench' extra")
  import numpy as np

  from jaxcxr.configs import tiny
  from jaxcxr.perf import bench
  cfg = tiny.get_config().model
  cfg.dtype = "bfloat16"
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32)).astype(np.uint8)
  step = bench.load_torch_twin().make_step(cfg, 32, 1e-3, images, np.array([0, 1, 0, 1], np.int32))
  losses = [step() for _ in range(3)]
  assert all(np.isfinite(losses)) and losses[-1] != losses[0]


@pytest.mark.slow
def test_runs_outside_a_checkout_with_config_overrides(tmp_path):
  """The default config ships in the package: from any folder, image and batch size come from --config.*."""
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.bench", "--steps=1", "--warmup=0",
                           "--config.data.image_size=32", "--config.train.batch_size=4"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  data = json.loads(result.stdout)
  assert data["image_size"] == 32 and data["batch_size"] == 4 and data["model"]["widths"] == [16, 32, 64, 128, 256]


@pytest.mark.slow
def test_a_backbone_is_benchmarked_through_the_same_step():
  from jaxcxr import conv  # pylint: disable=g-import-not-at-top
  data = _bench("--config=configs/tiny.py:resnet18")
  assert data["model"]["name"] == "resnet18" and data["lowering"] == conv.backbone_module("cpu")[1]
  assert data["flops_per_step"] > 0 and data["jax"]["median_ms"] > 0


@pytest.mark.parametrize("args,message", [
    (["--config.train.batch_size=0"], "error: invalid config: train.batch_size=0 must be at least 1"),
    (["--config.data.image_size=4"], "data.image_size=4 must be at least 8"),
    (["--steps=0"], "flag --steps=0: 0 is not a positive integer"),
    (["--inference", "--end_to_end"], "error: --end_to_end feeds the train step, which --inference does not time"),
], ids=["batch-0", "image-4", "steps-0", "inference-end-to-end"])
def test_bad_arguments_are_one_line_before_any_work(args, message):
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.bench", *_later_wins(TINY, args)], cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode != 0 and "Traceback" not in result.stderr and message in result.stderr


@pytest.mark.slow
def test_end_to_end_feeds_the_same_step_through_the_input_pipeline():
  data = _bench("--end_to_end", "--films=64", "--config.data.worker_processes=1")
  e2e = data["end_to_end"]
  assert e2e["images_per_s"] > 0 and 0.0 <= e2e["data_wait_fraction"] <= 1.0
  assert e2e["augment"] is True and e2e["worker_processes"] == 1 and e2e["host_cores"] >= 1
  assert data["end_to_end_over_step"] == pytest.approx(e2e["images_per_s"] / data["jax"]["images_per_s"])


def test_an_output_file_that_could_not_be_written_is_refused_before_any_work(tmp_path):
  from jaxcxr.errors import UserError  # pylint: disable=g-import-not-at-top
  from jaxcxr.perf import runs  # pylint: disable=g-import-not-at-top
  runs.check_out_file(str(tmp_path / "bench.json"))  # a new file in a writable folder
  with pytest.raises(UserError, match="is a folder; pass a file name"):
    runs.check_out_file(str(tmp_path))
  runs.check_out_file(str(tmp_path / "missing" / "bench.json"))  # the write makes the folder
  (tmp_path / "notes.txt").write_text("")
  with pytest.raises(UserError, match="notes.txt is a file, not a folder; pass another path"):
    runs.check_out_file(str(tmp_path / "notes.txt" / "bench.json"))
  result = subprocess.run([sys.executable, "-m", "jaxcxr.perf.bench", "--config=configs/tiny.py", f"--out={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith(f"error: --out={tmp_path} is a")


def test_a_measurements_own_flags_win_over_the_users_overrides_given_to_its_child():
  from jaxcxr.perf import runs  # pylint: disable=g-import-not-at-top
  command = ["python", "-m", "jaxcxr.main", "--config.logging.report=True", "--workdir=w",
             "--config.logging.report=False", "--explain", "film.png"]
  assert runs.last_wins(command) == ["python", "-m", "jaxcxr.main", "--workdir=w", "--config.logging.report=False",
                                     "--explain", "film.png"]
