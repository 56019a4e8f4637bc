"""Everything only a GPU can show, in one command of a few minutes: run it on any machine with a GPU.

  python -m jaxcxr.perf.gpu_check --out=runs/gpu-check                 # on --platform=gpu
  python -m jaxcxr.perf.gpu_check --platform=cpu --quick --out=/tmp/gc # the same parts at tiny sizes (CI)

Each part is one of the project's own commands, run as its own process with its own time limit, so a part that
fails or runs out of time is recorded with its one-line reason and the others go on:

  tests        the GPU tests (tests/test_gpu.py, the multi-GPU ones where there are several)
  step         the train step of the paper CNN and each backbone at 224 px, batch 64 and 256, float32 and
               bfloat16, beside the PyTorch twin in the same process (`jaxcxr.perf.bench --torch`)
  end_to_end   the step fed by the real input pipeline at batch 256 in bfloat16, against the step alone
  speedup      the paper config trained on the CPU and on the GPU (`jaxcxr.perf.speedup`)
  chexnet      one epoch of configs/chexnet.py at 224 px: images/s, data wait, peak device memory
  predict      predict with --explain on that run's films, on the GPU (its report page is the run's own)

Writes DIR/gpu_check.json (the machine, the versions and every figure) and DIR/gpu_check.md (the tables that
docs/performance.md shows, generated here rather than copied by hand).
"""

import dataclasses
import functools
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable

import jax
from absl import flags

from jaxcxr import cli, devices
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_json, atomic_write_text, ensure_writable_dir
from jaxcxr.perf import runs
from jaxcxr.report.tables import Table, fmt

_PLATFORM = flags.DEFINE_enum("platform", devices.GPU, list(devices.PLATFORMS), "Device every part runs on.")
_OUT = cli.path_flag("out", "runs/gpu-check", "Output folder: gpu_check.json, gpu_check.md and each part's files.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny sizes and few steps: proves every part runs (CI), measures nothing.")

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the checkout: its tests/ and configs/
NETWORKS = ("paper_cnn", "resnet18", "resnet50", "densenet121")
FULL_CONFIGS = {"paper_cnn": "bench_step", "resnet18": "resnet18", "resnet50": "resnet50",
                "densenet121": "densenet121"}


@dataclasses.dataclass(frozen=True)
class Part:
  """One command of the check; `collect` reads its figures from the files it wrote."""
  name: str
  command: list[str]
  limit_s: int
  collect: Callable[[], dict]
  env: dict = dataclasses.field(default_factory=dict)


# A quick part on a CPU shared with other work (CI's 2 cores, a test suite beside it) can take several times its
# unloaded minute to import torch and compile; the full parts' limits bound a GPU session's device time instead.
QUICK_LIMIT_S = 180

def _config(name: str, quick: bool) -> str:
  """The config file (with its variant) a network is measured with: its own at full size, a tiny one in quick."""
  if quick:
    return f"{ROOT / 'configs' / 'tiny.py'}" + ("" if name == "paper_cnn" else f":{name}")
  return str(ROOT / "configs" / f"{FULL_CONFIGS[name]}.py")


def _read_json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text())


def _step_parts(out: pathlib.Path, platform: str, quick: bool) -> list[Part]:
  batches, dtypes = ((8,), ("float32",)) if quick else ((64, 256), ("float32", "bfloat16"))
  networks = ("paper_cnn", "resnet18") if quick else NETWORKS
  steps = ["--steps=2", "--warmup=1"] if quick else ["--steps=20", "--warmup=3"]
  # The PyTorch twin of a backbone is torchvision's own network: full depth, at 32 px in quick mode.
  size = ["--config.data.image_size=32"] if quick else ["--config.data.image_size=224"]
  parts = []
  for network in networks:
    config = str(ROOT / "configs" / f"{FULL_CONFIGS[network]}.py")
    for batch in batches:
      for dtype in dtypes:
        path = out / "step" / f"{network}-{batch}-{dtype}.json"
        parts.append(Part(f"step {network} batch {batch} {dtype}", [
            sys.executable, "-m", "jaxcxr.perf.bench", f"--platform={platform}", f"--config={config}",
            *size, f"--config.train.batch_size={batch}", f"--config.model.dtype={dtype}", "--torch", *steps,
            f"--out={path}"], QUICK_LIMIT_S if quick else 60, functools.partial(_read_json, path)))
  return parts


def _run_summary(folder: pathlib.Path) -> dict:
  summary = _read_json(folder / "summary.json")
  timing, batch = summary["timing"], summary["config"]["train"]["batch_size"]
  return {"images_per_s": 1000.0 * batch / timing["median_ms_per_step"], "median_ms_per_step":
          timing["median_ms_per_step"], "data_wait_fraction": timing["data_wait_fraction"],
          "peak_device_memory_mb": timing.get("peak_device_memory_mb"), "compile_s": timing["compile_s"],
          "batch_size": batch, "image_size": summary["config"]["data"]["image_size"],
          "device": summary["device"]["device_kind"], "report": str(folder / "report.html")}


def _predictions(folder: pathlib.Path) -> dict:
  csv = folder / "predictions" / "films.csv"
  lines = csv.read_text().splitlines()
  explained = list((folder / "predictions" / "films").glob("*.png"))
  return {"films": len(lines) - 1, "explanations": len(explained), "csv": str(csv)}


def parts(out: pathlib.Path, platform: str, quick: bool) -> list[Part]:
  """Every part of the check, in the order run."""
  tests = out / "tests.xml"
  found = [Part("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--runslow",
                          str(ROOT / "tests" / "test_gpu.py"), f"--junitxml={tests}"], 300,
                lambda: {"junit": str(tests)}, {"JAX_PLATFORMS": ""})]
  found += _step_parts(out, platform, quick)
  e2e = out / "end_to_end.json"
  e2e_args = ["--config.train.batch_size=8", "--films=32", "--steps=2", "--warmup=1"] if quick else \
      ["--config.data.image_size=224", "--config.train.batch_size=256", "--config.model.dtype=bfloat16",
       "--films=2048", "--steps=20", "--warmup=3"]
  found.append(Part("end_to_end", [sys.executable, "-m", "jaxcxr.perf.bench", f"--platform={platform}",
                                   f"--config={_config('paper_cnn', quick)}", "--end_to_end", *e2e_args,
                                   f"--out={e2e}"], QUICK_LIMIT_S if quick else 240, lambda: _read_json(e2e)))
  speedup = out / "speedup"
  reference = "cpu1" if platform == devices.CPU else devices.CPU
  found.append(Part("speedup", [sys.executable, "-m", "jaxcxr.perf.speedup", f"--config={_config('paper_cnn', quick)}",
                                f"--platforms={reference},{platform}", f"--out={speedup}",
                                f"--config.train.epochs={1 if quick else 3}"], 120 if quick else 300,
                    lambda: _read_json(speedup / "speedup.json")["comparison"]))
  chexnet = out / "chexnet"
  chexnet_args = [f"--config={_config('densenet121', quick)}", "--config.data.target=all"] if quick else \
      [f"--config={ROOT / 'configs' / 'chexnet.py'}"]
  found.append(Part("chexnet", [sys.executable, str(ROOT / "run.py"), f"--platform={platform}", *chexnet_args,
                                "--config.train.epochs=1", f"--workdir={chexnet}"], 120 if quick else 420,
                    functools.partial(_run_summary, chexnet)))
  films = chexnet / "films"
  found.append(Part("predict", [sys.executable, str(ROOT / "run.py"), "--mode=predict", f"--platform={platform}",
                                f"--workdir={chexnet}", f"--inputs={films}", "--explain", "--output_name=films"],
                    60 if quick else 120, functools.partial(_predictions, chexnet)))
  return found


def _copy_films(chexnet: pathlib.Path, count: int = 16) -> None:
  """A few of the run's own synthetic films, for predict to read as a user's files."""
  source = sorted(chexnet.glob("cache/synthetic-nih-*/images/*.png"))[:count]
  (chexnet / "films").mkdir(exist_ok=True)
  for path in source:
    (chexnet / "films" / path.name).write_bytes(path.read_bytes())


def run_part(part: Part) -> dict:
  """Runs one part in its own process within its time limit: its figures, or the one-line reason it failed."""
  start = time.perf_counter()
  env = {**os.environ, **part.env}
  env = {k: v for k, v in env.items() if v != ""}  # an empty value: unset (the GPU tests find the GPU themselves)
  print(f"[gpu_check] {part.name}: {' '.join(part.command[1:])}", file=sys.stderr, flush=True)
  try:
    result = runs.run_child(part.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            timeout=part.limit_s, cwd=ROOT)
  except subprocess.TimeoutExpired:
    return {"ok": False, "seconds": time.perf_counter() - start, "reason": f"over its {part.limit_s} s limit"}
  seconds = time.perf_counter() - start
  if result.returncode != 0:
    lines = [l for l in (result.stderr.strip() or result.stdout.strip()).splitlines() if l.strip()]
    return {"ok": False, "seconds": seconds, "reason": (lines[-1] if lines else f"exit {result.returncode}")[:300]}
  try:
    return {"ok": True, "seconds": seconds, "figures": part.collect()}
  except (OSError, KeyError, ValueError) as e:
    return {"ok": False, "seconds": seconds, "reason": f"ran, but its output could not be read ({e})"}


def _versions() -> dict:
  def version(package):
    try:
      return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      return None
  try:
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=30).stdout.strip() or None
  except (OSError, subprocess.TimeoutExpired):
    driver = None
  return {"jax": jax.__version__, "jaxlib": version("jaxlib"), "torch": version("torch"), "nvidia_driver": driver,
          "python": sys.version.split()[0], "host_cores": devices.host_cores()}


def markdown(report: dict) -> str:
  """The check's tables: the parts, the step against PyTorch, and the pipeline, training and predict figures."""
  ran = report["parts"]
  lines = [f"# GPU check on {report['device']}", "", f"Platform `{report['platform']}`"
           + (", `--quick` (tiny sizes: nothing here is a measurement)" if report["quick"] else "")
           + "; versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v is not None), "",
           "## Parts", "", Table(["part", "status", "seconds"],
                                 [[name, "ran" if r["ok"] else f"failed: {r['reason']}", f"{r['seconds']:.1f}"]
                                  for name, r in ran.items()]).markdown()]
  steps = [(name.removeprefix("step "), r["figures"]) for name, r in ran.items()
           if name.startswith("step ") and r["ok"]]
  if steps:
    lines += ["", "## Train step against PyTorch (images/s)", "", Table(
        ["network, batch, dtype", "JAX", "PyTorch", "JAX / PyTorch", "fraction of matmul peak"],
        [[name, f"{f['jax']['images_per_s']:.1f}", fmt(f.get("torch", {}).get("images_per_s"), ".1f"),
          fmt(f.get("jax_over_torch_images_per_s"), ".2f"), fmt(f["jax"].get("fraction_of_peak"), ".1%")]
         for name, f in steps]).markdown()]
  e2e = ran.get("end_to_end", {})
  if e2e.get("ok"):
    f = e2e["figures"]
    lines += ["", "## End to end against the step alone", "", Table(
        ["batch", "dtype", "step alone images/s", "end to end images/s", "ratio", "data wait"],
        [[f["batch_size"], f["model"]["dtype"], f"{f['jax']['images_per_s']:.1f}",
          f"{f['end_to_end']['images_per_s']:.1f}", f"{f['end_to_end_over_step']:.2f}",
          f"{f['end_to_end']['data_wait_fraction']:.1%}"]]).markdown()]
  speedup = ran.get("speedup", {})
  if speedup.get("ok"):
    platforms = speedup["figures"]["platforms"]
    lines += ["", f"## Speedup over {speedup['figures']['reference']}", "", Table(
        ["platform", "median ms/step", "speedup per step", "speedup per epoch"],
        [[name, f"{c['median_ms_per_step']:.2f}", f"{c['speedup_mean']:.2f}x", f"{c['speedup_epoch_time']:.2f}x"]
         for name, c in platforms.items()]).markdown()]
  chexnet = ran.get("chexnet", {})
  if chexnet.get("ok"):
    f = chexnet["figures"]
    lines += ["", "## One CheXNet epoch", "", Table(
        ["image size", "batch", "images/s", "data wait", "peak device memory"],
        [[f["image_size"], f["batch_size"], f"{f['images_per_s']:.1f}", fmt(f["data_wait_fraction"], ".1%"),
          fmt(f["peak_device_memory_mb"], ".0f") + (" MB" if f["peak_device_memory_mb"] is not None else "")]]
    ).markdown()]
  return "\n".join(lines) + "\n"


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  platform, quick = _PLATFORM.value, _QUICK.value
  device = devices.select_devices(platform, 1)[0]  # a missing GPU is one line before any part runs or --out is made
  out = ensure_writable_dir(pathlib.Path(_OUT.value), "--out")
  report = {"platform": platform, "quick": quick, "device": device.device_kind,
            "device_count": len(jax.devices(device.platform)), "versions": _versions(), "parts": {}}
  for part in parts(out, platform, quick):
    if part.name == "predict" and (out / "chexnet").is_dir():
      _copy_films(out / "chexnet")
    report["parts"][part.name] = run_part(part)
    atomic_write_json(out / "gpu_check.json", report)  # after every part: a killed check keeps what it measured
  text = markdown(report)
  atomic_write_text(out / "gpu_check.md", text)
  print(text)
  failed = [name for name, r in report["parts"].items() if not r["ok"]]
  print(f"{len(report['parts']) - len(failed)} of {len(report['parts'])} parts ran", file=sys.stderr)
  if failed:
    sys.exit(f"error: {len(failed)} of {len(report['parts'])} parts failed ({', '.join(failed)}); each one's reason "
             f"is in {out / 'gpu_check.md'}, and what the others measured is kept")


if __name__ == "__main__":
  cli.run(main)
