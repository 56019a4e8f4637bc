"""The paper's CPU-vs-GPU comparison on your hardware, in one command.

  python -m jaxcxr.perf.speedup --config=jaxcxr/configs/paper.py --platforms=cpu,gpu
  python -m jaxcxr.perf.speedup --platforms=cpu1,cpu        # no GPU: one thread vs all cores
  python -m jaxcxr.perf.speedup --config=jaxcxr/configs/kermany.py --platforms=cpu,gpu \
      --data_dir=/data/chest_xray --config.train.epochs=3 --out=runs/speedup-kermany

Each platform trains the identical config (with the same `--config.key=value`
overrides as run.py), data, seed and number of steps in its own
`python -m jaxcxr.main` process: `JAX_PLATFORMS` is set per process (CUDA never
touches the GPU during a CPU run), and `cpu1` is the CPU pinned to one core
with XLA's intra-op threading off (the paper's "sequential" baseline). Every
step is timed after a sync; compile time is reported apart. The first
platform listed is the reference: speedup = reference time / platform time.

Writes to --out: report.md (paper Tables 3-5), speedup.json (everything, with
devices, JAX version and FLOPs per step, counted here by `perf.flops`) and four
PNG figures (Figures 5-8).
A platform that cannot run gets a row saying why; the command exits 0 when at
least two platforms ran.
"""

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys

import jax
from absl import app, flags
from ml_collections import config_flags

from jaxcxr import config as config_lib
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_json, atomic_write_text
from jaxcxr.perf import plots, runs
from jaxcxr.perf.flops import config_step_flops

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(pathlib.Path(__file__).parents[1] / "configs" / "default.py"),
    "Config file, identical for every platform; --config.key=value overrides apply to every run.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu", "gpu"], "Platforms to compare: cpu, cpu1, gpu. "
                               "The first is the reference.")
_OUT = flags.DEFINE_string("out", "runs/speedup", "Output folder (its per-platform runs are started afresh).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset; absent = the embedded synthetic default.")

# run.py's --platform, and JAX_PLATFORMS for the process (None: unset, JAX finds the GPU itself).
PLATFORMS = {"cpu": ("cpu", "cpu"), "cpu1": ("cpu", "cpu"), "gpu": ("gpu", None)}
CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
# Marks a platform's run folder as this command's own: a rerun replaces such a folder, and no other.
RUN_MARKER = ".speedup-run"


def claim_workdirs(out: pathlib.Path, platforms: list[str]) -> None:
  """Before any work: every platform's folder under `out` must be absent or one this command wrote."""
  for platform in platforms:
    workdir = out / platform
    if workdir.exists() and not (workdir / RUN_MARKER).is_file():
      raise UserError(f"{workdir} exists and was not written by the speedup command; move it away or choose "
                      "another --out")


def run_platform(platform: str, out: pathlib.Path) -> dict:
  """Trains on one platform in a fresh process; returns its summary, or why it could not run."""
  if platform not in PLATFORMS:
    return {"platform": platform, "ran": False, "reason": f"unknown platform; choose from {', '.join(PLATFORMS)}"}
  flag, jax_platforms = PLATFORMS[platform]
  workdir = out / platform
  if (workdir / RUN_MARKER).is_file():
    shutil.rmtree(workdir)  # this command's own earlier run (claim_workdirs refused any other folder)
  workdir.mkdir(parents=True)
  (workdir / RUN_MARKER).touch()
  command = runs.training_command(flag, workdir, runs.config_args(), f"--config.data.cache_dir={out / 'cache'}",
                                  "--config.train.log_step_times=True")
  command += [f"--data_dir={_DATA_DIR.value}"] if _DATA_DIR.value else []
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  if jax_platforms:
    env["JAX_PLATFORMS"] = jax_platforms
  if platform == "cpu1":
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1").strip()
    command.append("--config.data.num_threads=1")
  print(f"[speedup] {platform}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
  result = runs.run_child(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          pin_to_one_core=platform == "cpu1")
  if result.returncode != 0:
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    reason = lines[-1].removeprefix("error: ") if lines else f"exit {result.returncode}"
    return {"platform": platform, "ran": False, "reason": reason}
  summary = json.loads((workdir / "summary.json").read_text())
  return {"platform": platform, "ran": True, "device": summary["device"], "lowering": summary["lowering"],
          "timing": summary["timing"], "epochs": summary["epochs"], "test": summary["test"]}


def _mean_std(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def compare(results: list[dict]) -> dict:
  """Speedups of every platform that ran against the first one that ran, over matching steps."""
  ran = [r for r in results if r["ran"]]
  if not ran:
    return {}
  ref = ran[0]
  ref_steps = [t for e in ref["epochs"] for t in e["step_ms"]]
  out = {"reference": ref["platform"], "platforms": {}}
  for r in ran:
    steps = [t for e in r["epochs"] for t in e["step_ms"]]
    ratios = [a / b for a, b in zip(ref_steps, steps)]
    mean, std = _mean_std(ratios)
    out["platforms"][r["platform"]] = {
        "median_ms_per_step": statistics.median(steps),
        "mean_sec_per_epoch": statistics.fmean(e["sec_per_epoch"] for e in r["epochs"]),
        "speedup_mean": mean, "speedup_std_over_steps": std,
        "speedup_epoch_time": statistics.fmean(e["sec_per_epoch"] for e in ref["epochs"]) /
        statistics.fmean(e["sec_per_epoch"] for e in r["epochs"]),
        "max_abs_difference": {c: max(abs(a[c] - b[c]) for a, b in zip(ref["epochs"], r["epochs"]))
                               for c in CURVES}}
  return out


def _row(cells) -> str:
  return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(results: list[dict], comparison: dict) -> str:
  ran = [r for r in results if r["ran"]]
  lines = ["# CPU vs GPU training time", "", "## Platforms", "",
           _row(["platform", "device", "cores", "conv lowering", "compile s", "median ms/step", "mean s/epoch",
                 "FLOPs/step", "status"]),
           _row(["---"] * 9)]
  for r in results:
    if r["ran"]:
      c = comparison["platforms"][r["platform"]]
      flops = r["timing"].get("flops_per_step")
      lines.append(_row([r["platform"], r["device"]["device_kind"], r["device"]["host_cores"], r["lowering"],
                         f"{r['timing']['compile_s']:.2f}",
                         f"{c['median_ms_per_step']:.2f}", f"{c['mean_sec_per_epoch']:.2f}",
                         f"{flops:.3g}" if flops else "n/a", "ran"]))
    else:
      lines.append(_row([r["platform"], *["-"] * 7, f"not run: {r['reason']}"]))
  if not ran:
    return "\n".join(lines) + "\n"
  ref = comparison["reference"]
  lines += ["", f"## Time per epoch and per step (paper Table 5); reference: {ref}", ""]
  header = ["epoch"] + [f"{r['platform']} {k}" for r in ran for k in ("s/epoch", "s/step")]
  lines += [_row(header), _row(["---"] * len(header))]
  for i in range(len(ran[0]["epochs"])):
    cells = [i + 1]
    for r in ran:
      e = r["epochs"][i]
      cells += [f"{e['sec_per_epoch']:.3f}", f"{e['sec_per_epoch'] / e['steps_timed']:.4f}"]
    lines.append(_row(cells))
  lines += ["", "Speedup over the reference (mean of per-step ratios, with their standard deviation; and "
            "the ratio of mean epoch times):", ""]
  for name, c in comparison["platforms"].items():
    lines.append(f"- **{name}**: {c['speedup_mean']:.2f}x +/- {c['speedup_std_over_steps']:.2f} per step, "
                 f"{c['speedup_epoch_time']:.2f}x per epoch")
  lines += ["", "## Loss and accuracy per epoch (paper Tables 3 and 4)", ""]
  header = ["epoch"] + [f"{r['platform']} {c}" for c in CURVES for r in ran]
  lines += [_row(header), _row(["---"] * len(header))]
  for i in range(len(ran[0]["epochs"])):
    lines.append(_row([i + 1] + [f"{r['epochs'][i][c]:.4f}" for c in CURVES for r in ran]))
  lines += ["", "Largest difference from the reference over epochs:", ""]
  for name, c in comparison["platforms"].items():
    if name != ref:
      lines.append(f"- **{name}**: " + ", ".join(f"{k} {v:.2e}" for k, v in c["max_abs_difference"].items()))
  return "\n".join(lines) + "\n"


def figures(results: list[dict], out: pathlib.Path) -> list[str]:
  ran = [r for r in results if r["ran"]]
  steps = {r["platform"]: ([i + 1 for i in range(len(s))], s)
           for r in ran for s in [[t for e in r["epochs"] for t in e["step_ms"]]]}
  epochs = {r["platform"]: ([e["epoch"] for e in r["epochs"]], [e["sec_per_epoch"] for e in r["epochs"]])
            for r in ran}
  for name, title, xlabel, unit, series in (
      ("step_times.png", "Time per training step (paper Fig. 7)", "step", "ms", steps),
      ("epoch_times.png", "Time per epoch (paper Fig. 8)", "epoch", "s", epochs)):
    log_y = plots.needs_log_axis(series)
    plots.line_chart(out / name, title, xlabel, f"{unit} (log scale)" if log_y else unit, series, log_y=log_y)
  for metric, title in (("loss", "Loss (paper Fig. 5)"), ("accuracy", "Accuracy (paper Fig. 6)")):
    series = {f"{r['platform']} {split}": ([e["epoch"] for e in r["epochs"]],
                                           [e[f"{split}_{metric}"] for e in r["epochs"]])
              for r in ran for split in ("train", "val")}
    plots.line_chart(out / f"{metric}.png", title, "epoch", metric, series)
  return ["step_times.png", "epoch_times.png", "loss.png", "accuracy.png"]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  out = pathlib.Path(_OUT.value)
  try:
    config_lib.validate(config_lib.from_flag(_CONFIG))
    claim_workdirs(out, [p for p in _PLATFORMS.value if p in PLATFORMS])
  except UserError as e:
    sys.exit(f"error: {e}")
  out.mkdir(parents=True, exist_ok=True)
  results = [run_platform(p, out) for p in _PLATFORMS.value]
  # This process only counts FLOPs: on the CPU, leaving any GPU to the runs.
  jax.config.update("jax_platforms", "cpu")
  flops = config_step_flops(_CONFIG.value)
  for r in results:
    if r["ran"]:
      r["timing"]["flops_per_step"] = flops
  comparison = compare(results)
  config_flag = flags.FLAGS["config"]
  report = {"config": config_flags.get_config_filename(config_flag),
            "overrides": config_flags.get_override_values(config_flag), "data_dir": _DATA_DIR.value,
            "results": results, "comparison": comparison}
  report["figures"] = figures(results, out) if comparison else []
  atomic_write_json(out / "speedup.json", report)
  atomic_write_text(out / "report.md", markdown(results, comparison))
  print(markdown(results, comparison))
  ran = sum(r["ran"] for r in results)
  if ran < 2:
    sys.exit(f"error: only {ran} platform(s) ran (see {out / 'report.md'}); the comparison needs two")


if __name__ == "__main__":
  app.run(main)
