"""The paper's CPU-vs-GPU comparison on your hardware, in one command.

  python -m jaxcxr.perf.speedup --config=configs/paper.py --platforms=cpu,gpu
  python -m jaxcxr.perf.speedup --platforms=cpu1,cpu        # no GPU: one thread vs all cores
  python -m jaxcxr.perf.speedup --platforms=cpu,gpu:1,gpu:4,gpu:8   # + scaling over GPUs
  python -m jaxcxr.perf.speedup --config=configs/kermany.py --platforms=cpu,gpu \
      --data_dir=/data/chest_xray --config.train.epochs=3 --out=runs/speedup-kermany

Each platform trains the identical config (with the same `--config.key=value`
overrides as run.py), data, seed and number of steps in its own
`python -m jaxcxr.main` process: `JAX_PLATFORMS` is set per process (CUDA never
touches the GPU during a CPU run), and `cpu1` is the CPU pinned to one core
with XLA's intra-op threading off (the paper's "sequential" baseline). Every
step is timed after a sync; compile time is reported apart. The first
platform listed is the reference: speedup = reference time / platform time.

Writes to --out: report.md (paper Tables 3-5), speedup.json (everything, with
devices, JAX version and FLOPs per step, counted here by `perf.flops`), four
PNG figures drawn with matplotlib (Figures 5-8), and report.html: report.md's
tables and the four figures inlined in one self-contained page.
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

from jaxcxr import cli
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text, ensure_writable_dir
from jaxcxr.perf import runs
from jaxcxr.perf.flops import config_step_flops
from jaxcxr.report import figures, html
from jaxcxr.report.tables import Table

_CONFIG = cli.config_flag("default", "Config file, identical for every platform; --config.key=value overrides "
                          "apply to every run.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cpu", "gpu"], "Platforms to compare: cpu, cpu1, gpu, each with "
                               "an optional :N devices to train data parallel on (gpu:4). "
                               "The first is the reference.")
_OUT = cli.path_flag("out", "runs/speedup", "Output folder (its per-platform runs are started afresh).")
_DATA_DIR = cli.path_flag("data_dir", None, "Dataset; absent = the embedded synthetic default.")

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


def parse_platform(spec: str) -> tuple[str, int | None] | None:
  """`gpu:4` -> ('gpu', 4): a platform and the devices to train on (None: as the config says); None if
  unknown."""
  name, sep, count = spec.partition(":")
  if name not in PLATFORMS or (sep and (not count.isdigit() or int(count) < 1)) or (sep and name == "cpu1"):
    return None
  return name, int(count) if sep else None


def run_platform(platform: str, out: pathlib.Path) -> dict:
  """Trains on one platform in a fresh process; returns its summary, or why it could not run."""
  parsed = parse_platform(platform)
  if parsed is None:
    return {"platform": platform, "ran": False, "reason": f"unknown platform; choose from {', '.join(PLATFORMS)}, "
            "each with an optional :N devices (not cpu1)"}
  name, count = parsed
  flag, jax_platforms = PLATFORMS[name]
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
  if name == "cpu1":
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                        "intra_op_parallelism_threads=1").strip()
    command.append("--config.data.num_threads=1")
  if count is not None:
    command.append(f"--config.train.num_devices={count}")
    if name == "cpu":  # N XLA devices that share the host's cores: the data-parallel path, not more hardware
      env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}").strip()
  print(f"[speedup] {platform}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
  result = runs.run_child(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          pin_to_one_core=name == "cpu1")
  if result.returncode != 0:
    lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
    reason = lines[-1].removeprefix("error: ") if lines else f"exit {result.returncode}"
    print(f"[speedup] {platform} did not run: {reason}", file=sys.stderr, flush=True)
    return {"platform": platform, "ran": False, "reason": reason}
  summary = json.loads((workdir / "summary.json").read_text())
  return {"platform": platform, "ran": True, "device": summary["device"], "lowering": summary["lowering"],
          "timing": summary["timing"], "epochs": summary["epochs"], "test": summary["test"],
          "batch_size": summary["config"]["train"]["batch_size"]}


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
  out["scaling"] = scaling(ran)
  return out


def scaling(ran: list[dict]) -> list[dict]:
  """Images/s per device count of each platform run on several counts, and the scaling efficiency: the gain
  over that platform's fewest devices, divided by how many times more devices gave it."""
  rows = []
  scaled = [r for r in ran if parse_platform(r["platform"])[0] != "cpu1"]  # one thread is not one device of many
  for name in dict.fromkeys(parse_platform(r["platform"])[0] for r in scaled):
    counted = sorted((r for r in scaled if parse_platform(r["platform"])[0] == name),
                     key=lambda r: r["device"]["num_devices"])
    if len({r["device"]["num_devices"] for r in counted}) < 2:
      continue
    base = counted[0]
    base_rate = 1000.0 * base["batch_size"] / base["timing"]["median_ms_per_step"]
    for r in counted:
      rate = 1000.0 * r["batch_size"] / r["timing"]["median_ms_per_step"]
      ratio = r["device"]["num_devices"] / base["device"]["num_devices"]
      rows.append({"platform": r["platform"], "devices": r["device"]["num_devices"], "images_per_s": rate,
                   "efficiency": rate / base_rate / ratio})
  return rows


# Each table is built once (`tables.Table`): report.md and report.html render the same rows.
# File name -> title: the files written beside report.md, listed in speedup.json's "figures".
FIGURES = {"step_times.png": "Time per training step (paper Fig. 7)",
           "epoch_times.png": "Time per epoch (paper Fig. 8)",
           "loss.png": "Loss (paper Fig. 5)", "accuracy.png": "Accuracy (paper Fig. 6)"}
TITLE = "CPU vs GPU training time"
PLATFORMS_HEADING = "Platforms"
EPOCHS_HEADING = "Time per epoch and per step (paper Table 5)"
SPEEDUP_TEXT = ("Speedup over the reference (mean of per-step ratios, with their standard deviation; and the ratio "
                "of mean epoch times):")
CURVES_HEADING = "Loss and accuracy per epoch (paper Tables 3 and 4)"
DIFFERENCE_TEXT = "Largest difference from the reference over epochs:"
SCALING_HEADING = "Scaling over devices"
SCALING_TEXT = ("Images/s from the median step time; efficiency: the gain over the platform's fewest devices "
                "divided by how many times more devices gave it (100% is linear). cpu:N devices share the host's "
                "cores: they exercise the data-parallel path, not more hardware.")


def platforms_table(results: list[dict], comparison: dict) -> Table:
  header = ["platform", "device", "cores", "conv lowering", "compile s", "median ms/step", "mean s/epoch",
            "FLOPs/step", "status"]
  rows = []
  for r in results:
    if r["ran"]:
      c = comparison["platforms"][r["platform"]]
      flops = r["timing"].get("flops_per_step")
      rows.append([r["platform"], r["device"]["device_kind"], r["device"]["host_cores"], r["lowering"],
                   f"{r['timing']['compile_s']:.2f}", f"{c['median_ms_per_step']:.2f}",
                   f"{c['mean_sec_per_epoch']:.2f}", f"{flops:.3g}" if flops else "n/a", "ran"])
    else:
      rows.append([r["platform"], *["-"] * 7, f"not run: {r['reason']}"])
  return Table(header, rows)


def epochs_table(ran: list[dict]) -> Table:
  """Paper Table 5: seconds per epoch and per step, one row per epoch."""
  header = ["epoch"] + [f"{r['platform']} {k}" for r in ran for k in ("s/epoch", "s/step")]
  rows = [[i + 1] + [cell for r in ran for e in [r["epochs"][i]]
                     for cell in (f"{e['sec_per_epoch']:.3f}", f"{e['sec_per_epoch'] / e['steps_timed']:.4f}")]
          for i in range(len(ran[0]["epochs"]))]
  return Table(header, rows)


def speedups_table(comparison: dict) -> Table:
  header = ["platform", "speedup per step", "std over steps", "speedup per epoch"]
  rows = [[name, f"{c['speedup_mean']:.2f}x", f"{c['speedup_std_over_steps']:.2f}", f"{c['speedup_epoch_time']:.2f}x"]
          for name, c in comparison["platforms"].items()]
  return Table(header, rows)


def curves_table(ran: list[dict]) -> Table:
  """Paper Tables 3 and 4: every platform's loss and accuracy side by side, one row per epoch."""
  header = ["epoch"] + [f"{r['platform']} {c}" for c in CURVES for r in ran]
  rows = [[i + 1] + [f"{r['epochs'][i][c]:.4f}" for c in CURVES for r in ran] for i in range(len(ran[0]["epochs"]))]
  return Table(header, rows)


def differences_table(comparison: dict) -> Table:
  header = ["platform", *CURVES]
  rows = [[name, *(f"{c['max_abs_difference'][k]:.2e}" for k in CURVES)]
          for name, c in comparison["platforms"].items() if name != comparison["reference"]]
  return Table(header, rows)


def scaling_table(comparison: dict) -> Table:
  """Images/s per device count and the scaling efficiency (`scaling`)."""
  header = ["platform", "devices", "images/s", "scaling efficiency"]
  rows = [[r["platform"], r["devices"], f"{r['images_per_s']:.1f}", f"{r['efficiency']:.0%}"]
          for r in comparison.get("scaling", [])]
  return Table(header, rows)


def markdown(results: list[dict], comparison: dict) -> str:
  lines = [f"# {TITLE}", "", f"## {PLATFORMS_HEADING}", "", platforms_table(results, comparison).markdown()]
  ran = [r for r in results if r["ran"]]
  if ran:
    lines += ["", f"## {EPOCHS_HEADING}; reference: {comparison['reference']}", "",
              epochs_table(ran).markdown(), "", SPEEDUP_TEXT, ""]
    lines += [f"- **{name}**: {step} +/- {std} per step, {epoch} per epoch"
              for name, step, std, epoch in speedups_table(comparison).rows]
    lines += ["", f"## {CURVES_HEADING}", "", curves_table(ran).markdown(), "", DIFFERENCE_TEXT, ""]
    differences = differences_table(comparison)
    lines += [f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in zip(differences.header[1:], cells))
              for name, *cells in differences.rows]
    if comparison.get("scaling"):
      lines += ["", f"## {SCALING_HEADING}", "", SCALING_TEXT, "", scaling_table(comparison).markdown()]
  return "\n".join(lines) + "\n"


def html_report(results: list[dict], comparison: dict, pngs: dict[str, bytes]) -> str:
  """report.md's tables and the figures in one page that opens offline; a platform that did not run says why."""
  notes = [html.paragraph(f"{r['platform']} did not run: {r['reason']}", note=True) for r in results if not r["ran"]]
  sections = [(PLATFORMS_HEADING, [html.table(platforms_table(results, comparison)), *notes])]
  ran = [r for r in results if r["ran"]]
  if ran:
    sections += [
        (f"{EPOCHS_HEADING}; reference: {comparison['reference']}",
         [html.table(epochs_table(ran)), html.paragraph(SPEEDUP_TEXT), html.table(speedups_table(comparison))]),
        (CURVES_HEADING, [html.table(curves_table(ran)), html.paragraph(DIFFERENCE_TEXT),
                          html.table(differences_table(comparison))])]
    if comparison.get("scaling"):
      sections.append((SCALING_HEADING, [html.paragraph(SCALING_TEXT), html.table(scaling_table(comparison))]))
  if pngs:
    sections.append(("Figures", [html.image(data, alt=FIGURES[name], caption=FIGURES[name])
                                 for name, data in pngs.items()]))
  return html.page(TITLE, sections)


def draw_figures(results: list[dict]) -> dict[str, bytes]:
  """Paper Figures 5-8 as PNG bytes by file name: written beside report.md and inlined into report.html. The time
  figures switch to decades when platforms are far apart (a GPU beside one CPU core)."""
  ran = [r for r in results if r["ran"]]
  steps = {r["platform"]: ([i + 1 for i in range(len(s))], s)
           for r in ran for s in [[t for e in r["epochs"] for t in e["step_ms"]]]}
  epochs = {r["platform"]: ([e["epoch"] for e in r["epochs"]], [e["sec_per_epoch"] for e in r["epochs"]])
            for r in ran}
  pngs = {"step_times.png": figures.line_chart(FIGURES["step_times.png"], "step", "ms", steps),
          "epoch_times.png": figures.line_chart(FIGURES["epoch_times.png"], "epoch", "s", epochs)}
  for metric in ("loss", "accuracy"):  # linear: platforms are compared by the curves' differences, not ratios
    series = {f"{r['platform']} {split}": ([e["epoch"] for e in r["epochs"]],
                                           [e[f"{split}_{metric}"] for e in r["epochs"]])
              for r in ran for split in ("train", "val")}
    pngs[f"{metric}.png"] = figures.line_chart(FIGURES[f"{metric}.png"], "epoch", metric, series, log_y=False)
  return pngs


def write_report(out: pathlib.Path, report: dict) -> str:
  """Writes the figures, speedup.json (`report` with the figures' names), report.md and report.html from
  `report`'s results and comparison; returns report.md's text."""
  results, comparison = report["results"], report["comparison"]
  pngs = draw_figures(results) if comparison else {}
  for name, data in pngs.items():
    atomic_write_bytes(out / name, data)
  report["figures"] = list(pngs)
  atomic_write_json(out / "speedup.json", report)
  text = markdown(results, comparison)
  atomic_write_text(out / "report.md", text)
  html.write(out / "report.html", html_report(results, comparison, pngs))
  return text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  repeated = sorted({p for p in _PLATFORMS.value if _PLATFORMS.value.count(p) > 1})
  if repeated:
    raise UserError(f"--platforms names {', '.join(repeated)} more than once; each platform runs once, so name it "
                    "once")
  cli.load_config(_CONFIG)
  out = ensure_writable_dir(_OUT.value, "--out")
  claim_workdirs(out, [p for p in _PLATFORMS.value if parse_platform(p)])
  results = [run_platform(p, out) for p in _PLATFORMS.value]
  # This process only counts FLOPs: on the CPU, leaving any GPU to the runs.
  jax.config.update("jax_platforms", "cpu")
  flops = config_step_flops(_CONFIG.value)
  for r in results:
    if r["ran"]:
      r["timing"]["flops_per_step"] = flops
  comparison = compare(results)
  report = {"config": cli.config_file(_CONFIG),
            "overrides": config_flags.get_override_values(flags.FLAGS[_CONFIG.name]), "data_dir": _DATA_DIR.value,
            "results": results, "comparison": comparison}
  print(write_report(out, report))
  ran = sum(r["ran"] for r in results)
  if ran < 2:
    sys.exit(f"error: only {ran} platform(s) ran (see {out / 'report.md'}); the comparison needs two")


if __name__ == "__main__":
  cli.run(main)
