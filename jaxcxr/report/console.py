"""What a run prints at its end: the test summary (paper Table 6), the localisation check and the timing."""

from jaxcxr.report.tables import Table, calibration_table, evaluation_table, fmt


def _confusion(t: dict) -> list[str]:
  return Table(["", "predicted healthy", "predicted positive"],
               [["healthy", t["tn"], t["fp"]], ["positive", t["fn"], t["tp"]]]).text().splitlines()


def _heading(summary: dict) -> list[str]:
  t = summary["test"]
  synthetic = " [SYNTHETIC DATA]" if summary["synthetic"] else ""
  confidence = t.get("interval_confidence")
  intervals = f"; {confidence:.0%} intervals over patient resamples" if confidence else ""
  if "findings" in t:
    first = t["findings"][t["targets"][0]]
    films = first["tn"] + first["fp"] + first["fn"] + first["tp"]
    return [f"Test split ({films} images), AUROC per finding{synthetic}" + intervals]
  threshold = t["threshold"]
  return [f"Test split ({t['tn'] + t['fp'] + t['fn'] + t['tp']} images){synthetic}", *_confusion(t),
          f"  at threshold {threshold['value']:.4f} (eval.threshold={threshold['rule']}"
          f"{', chosen on validation' if threshold['chosen'] else ''}){intervals}"]


def summary_text(summary: dict) -> str:
  """The test split's figures (one target: its confusion matrix and metrics; several: the AUROC per finding),
  the localisation check and the timing, as printed at the end of a run."""
  t = summary["test"]
  lines = [*_heading(summary), evaluation_table(t, summary["config"]["data"]["dataset"]).text()]
  if "findings" in t:
    rule = t["findings"][t["targets"][0]]["threshold"]["rule"]
    lines.append(f"  accuracy, precision, recall, specificity and F1 per finding (at eval.threshold={rule}) are "
                 "in summary.json")
  calibrated = calibration_table(t)
  if calibrated is not None:
    lines += [f"Calibration (eval.calibration={summary['config']['eval']['calibration']}, fitted on validation)",
              calibrated.text()]
  lines += [f"  note: {note}" for note in t["notes"]]
  found = summary.get("localisation")
  if found:
    n = found["films"]
    where = "a radiologists' box" if found.get("truth") == "boxes" else "one opacity"
    lines.append(f"Explanations: of {n} test films with {where}, the map peaks inside it for "
                 + ", ".join(f"{k} ({k / n:.0%}) with {method}" for method, k in found["inside"].items()))
  timing = summary["timing"]
  lines.append(f"Timing on {summary['device']['device_kind']} ({summary['device']['platform']}): "
               f"compile {timing['compile_s']:.2f} s, {fmt(timing['mean_sec_per_epoch'], '.2f')} s/epoch, "
               f"{fmt(timing['median_ms_per_step'], '.2f')} ms/step (median over epochs), "
               f"data wait {fmt(timing['data_wait_fraction'], '.1%')}")
  return "\n".join(lines)
