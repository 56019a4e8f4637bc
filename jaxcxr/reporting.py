"""What a run writes and prints: per-epoch records (paper Tables 1, 2, 5) and the test summary (Table 6)."""

import json
import pathlib

from jaxcxr import metrics
from jaxcxr.data import nih
from jaxcxr.fsutil import atomic_write_json, atomic_write_text


def _fmt(value, spec: str = ".4f") -> str:
  return "n/a" if value is None else format(value, spec)


def epoch_line(r: dict) -> str:
  return (f"epoch {r['epoch']:3d} | {r['sec_per_epoch']:7.2f} s/epoch | {r['ms_per_step']:8.2f} ms/step | "
          f"data wait {100 * r['data_wait_fraction']:4.1f}% | train loss {r['train_loss']:.4f} "
          f"acc {r['train_accuracy']:.4f} | val loss {r['val_loss']:.4f} acc {r['val_accuracy']:.4f} "
          f"auc {_fmt(r['val_auc'])}")


def write_history(workdir: pathlib.Path, history: list[dict]) -> None:
  """Rewrites metrics.jsonl from the history, so it always matches the checkpoint it resumed from."""
  atomic_write_text(workdir / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))


def write_summary(workdir: pathlib.Path, summary: dict) -> None:
  atomic_write_json(workdir / "summary.json", summary)


def emit_json(obj: dict, path: str | None) -> None:
  """Prints `obj` as JSON (what the benchmarks report) and, given a path, writes it there atomically."""
  text = json.dumps(obj, indent=2)
  print(text)
  if path:
    atomic_write_text(path, text + "\n")


def write_config(workdir: pathlib.Path, config: dict) -> None:
  """The config the run's checkpoints were written with, for whoever applies the run later (`predict`)."""
  atomic_write_json(workdir / "config.json", config)


def read_config(workdir: pathlib.Path) -> dict | None:
  """The run's config: config.json, else (a run from before it was written) the finished run's summary."""
  path = workdir / "config.json"
  if path.is_file():
    return json.loads(path.read_text())
  summary = read_summary(workdir)
  return summary["config"] if summary else None


def read_summary(workdir: pathlib.Path) -> dict | None:
  path = workdir / "summary.json"
  return json.loads(path.read_text()) if path.is_file() else None


def _interval(intervals: dict | None, key: str) -> str:
  bounds = (intervals or {}).get(key)
  return f" [{_fmt(bounds[0])}, {_fmt(bounds[1])}]" if bounds else ""


def findings_table(t: dict, synthetic: bool) -> list[str]:
  """A multi-label test report as CheXNet's Table 2: AUROC per finding with its interval, then the mean, with
  CheXNet's published figures beside them for reference."""
  n = t["findings"][t["targets"][0]]
  films = n["tn"] + n["fp"] + n["fn"] + n["tp"]
  confidence = t.get("interval_confidence")
  lines = [f"Test split ({films} images), AUROC per finding"
           + (f" [{confidence:.0%} interval over patient resamples]" if confidence else "")
           + f"{' [SYNTHETIC DATA]' if synthetic else ''}",
           f"  {'finding':<20s} {'AUROC':>6s} {'interval':<18s} {'positives':>9s}  CheXNet (2017)"]
  for name in t["targets"]:
    r = t["findings"][name]
    reference = nih.CHEXNET_AUROC.get(name)
    lines.append(f"  {name:<20s} {_fmt(r['auc']):>6s} {_interval(r.get('intervals'), 'auc'):<18s} "
                 f"{r['fn'] + r['tp']:9d}  {_fmt(reference)}")
  interval = t.get("mean_auc_interval")
  lines.append(f"  {'mean (' + str(t['mean_auc_over']) + ' findings)':<20s} {_fmt(t['mean_auc']):>6s} "
               f"{(f' [{_fmt(interval[0])}, {_fmt(interval[1])}]' if interval else ''):<18s} {'':9s}  "
               f"{_fmt(nih.CHEXNET_MEAN_AUROC)}")
  rule = n["threshold"]["rule"]
  lines.append(f"  accuracy, precision, recall, specificity and F1 per finding (at eval.threshold={rule}) are "
               "in summary.json")
  return lines + [f"  note: {note}" for note in t["notes"]]


def summary_table(summary: dict) -> str:
  """The test confusion matrix and metrics (or, for several targets, the per-finding AUROC table), plus the
  timing summary, as a small text table."""
  t = summary["test"]
  if "findings" in t:
    return "\n".join(findings_table(t, summary["synthetic"]) + _localisation_lines(summary) + [_timing_line(summary)])
  lines = [
      f"Test split ({t['tn'] + t['fp'] + t['fn'] + t['tp']} images)"
      f"{' [SYNTHETIC DATA]' if summary['synthetic'] else ''}",
      "                 predicted healthy  predicted positive",
      f"  healthy        {t['tn']:17d}  {t['fp']:18d}",
      f"  positive       {t['fn']:17d}  {t['tp']:18d}",
  ]
  if "threshold" in t:
    intervals = t.get("intervals") or {}
    threshold = t["threshold"]
    lines.append(f"  at threshold {threshold['value']:.4f} (eval.threshold={threshold['rule']}"
                 f"{', chosen on validation' if threshold['chosen'] else ''})"
                 + (f"; {t['interval_confidence']:.0%} intervals over patient resamples" if intervals else ""))
    lines += [f"  {k:<12s} {_fmt(t[k])}{_interval(intervals, k)}" for k in metrics.METRICS]
  else:  # a summary written before operating points existed
    lines.append("  " + "  ".join(f"{k} {_fmt(t[k])}" for k in metrics.METRICS))
  lines += [f"  note: {n}" for n in t["notes"]]
  lines += _localisation_lines(summary)
  lines.append(_timing_line(summary))
  return "\n".join(lines)


def _localisation_lines(summary: dict) -> list[str]:
  found = summary.get("localisation")
  if not found:
    return []
  n = found["films"]
  return [f"Explanations: of {n} test films with one opacity, the map peaks inside it for "
          + ", ".join(f"{k} ({k / n:.0%}) with {method}" for method, k in found["inside"].items())]


def _timing_line(summary: dict) -> str:
  timing = summary["timing"]
  return (f"Timing on {summary['device']['device_kind']} ({summary['device']['platform']}): "
          f"compile {timing['compile_s']:.2f} s, {_fmt(timing['mean_sec_per_epoch'], '.2f')} s/epoch, "
          f"{_fmt(timing['median_ms_per_step'], '.2f')} ms/step (median over epochs), "
          f"data wait {_fmt(timing['data_wait_fraction'], '.1%')}")
