"""`python run.py --mode=evaluate`: external validation, a trained run applied unchanged to another dataset.

  python run.py --mode=evaluate --workdir=runs/nih --data_dir=/data/CheXpert-v1.0-small --config.data.dataset=chexpert

The run's network, temperatures and operating points are used as they are; the other dataset's test split (or
every film, with --external_split=all) is cached at the run's image size and scored. Each finding the two share
(by its common name, jaxcxr/data/findings.py; case aside, so Kermany's PNEUMONIA is NIH's Pneumonia) is reported with:
its AUROC and patient-bootstrap interval; the metrics at the run's own operating point, with intervals; and the
difference to the run's internal test AUROC, with an interval from the same draws (each draw resamples the
patients of both test sets, the external draws being the ones its AUROC interval comes from). Findings that
only one side has are listed, not scored. Writes RUN/external/<dataset>[-all]/summary.json and report.html;
the run's own files are only read.
"""

import logging
import pathlib
import shutil

import ml_collections
import numpy as np

from jaxcxr import devices, inference, metrics, workdir
from jaxcxr.data import datasets, nih
from jaxcxr.errors import UserError
from jaxcxr.fsutil import atomic_write_json, ensure_writable_dir, exclusive
from jaxcxr.progress import Progress
from jaxcxr.report import figures, html
from jaxcxr.report.tables import Table, fmt, interval

log = logging.getLogger(__name__)

FOLDER = "external"
CHUNK = 512  # films scored per call: bounds memory on a large split


def shared_findings(run_targets: tuple[str, ...], data_targets: tuple[str, ...]) -> list[tuple[str, int, int]]:
  """(name, index among the run's targets, index among the dataset's) of each finding both have."""
  by_name = {t.lower(): k for k, t in enumerate(data_targets)}
  return [(t, j, by_name[t.lower()]) for j, t in enumerate(run_targets) if t.lower() in by_name]


def data_config(run_config: ml_collections.ConfigDict, other: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The other dataset's data config: as given, but cached at the run's film size and shape, and labelled for every
  finding it has (data.target=all where the dataset has several)."""
  data = ml_collections.ConfigDict(other.to_dict())
  data.image_size, data.aspect = run_config.data.image_size, run_config.data.aspect
  if nih.ALL_FINDINGS in (datasets.target_choices(data) or ()):
    data.target = nih.ALL_FINDINGS
  return data


def _score(network: inference.TrainedNetwork, split) -> np.ndarray:
  out = []
  with Progress(len(split), f"scoring {split.name}", unit="img") as bar:
    for start in range(0, len(split), CHUNK):
      films = np.asarray(split.images[start:start + CHUNK])
      out.append(network.logits(films))
      bar.update(len(films))
  return np.concatenate(out)


def _finding(labels: np.ndarray, logits: np.ndarray, patients: list[str], readout, j: int,
             internal: dict | None, eval_cfg: ml_collections.ConfigDict) -> dict:
  """One shared finding's external report, over the films labelled for it."""
  known = labels >= 0
  labels, logits = labels[known], logits[known]
  patients = [p for p, k in zip(patients, known) if k]
  scores = readout.probabilities(logits)[:, j]
  called = readout.labels(logits)[:, j]
  report = metrics.classification_report(*metrics.confusion(labels, called), labels, scores)
  report["threshold"] = readout.thresholds[j]
  report["films"], report["patients"] = int(len(labels)), len(set(patients))
  b, confidence, seed = eval_cfg.bootstrap, eval_cfg.confidence, eval_cfg.seed
  if b > 0:
    report["intervals"] = metrics.bootstrap_intervals(labels, scores, called, patients, b, confidence, seed)
  report["internal_auc"] = report["auc_difference"] = report["auc_difference_interval"] = None
  if internal is not None:
    own = internal["labels"][:, j] >= 0
    own_labels = internal["labels"][own, j]
    own_scores = readout.probabilities(internal["logits"][own])[:, j]
    own_patients = [p for p, k in zip(internal["patients"], own) if k]
    report["internal_auc"] = metrics.roc_auc(own_labels, own_scores)
    if report["auc"] is not None and report["internal_auc"] is not None:
      report["auc_difference"] = report["auc"] - report["internal_auc"]
      if b > 0:
        report["auc_difference_interval"] = metrics.auc_difference_interval(
            labels, scores, patients, own_labels, own_scores, own_patients, b, confidence, seed)
  return report


def evaluate(folder: str | pathlib.Path, other: ml_collections.ConfigDict, data_dir: str | None,
             platform: str = devices.CPU, which: str = "test") -> dict:
  """Scores the run in `folder` on the dataset `other` (a data config) at `data_dir`; returns the summary."""
  folder = pathlib.Path(folder).expanduser()
  if not data_dir:
    raise UserError("--mode=evaluate needs --data_dir: the other dataset the run is applied to (with "
                    "--config.data.dataset naming its format)")
  network = inference.from_checkpoint(folder, platform)
  run_config = network.config
  data = data_config(run_config, other)
  shared = shared_findings(network.readout.targets, datasets.target_names(data))
  if not shared:
    raise UserError(f"the run predicts {', '.join(network.readout.targets)} and data.dataset={data.dataset} labels "
                    f"{', '.join(datasets.target_names(data))}: no finding in common, so nothing can be scored")
  name = data.dataset + ("" if which == "test" else f"-{which}")
  new = [p for p in (folder / FOLDER, folder / FOLDER / name) if not p.exists()]
  try:
    summary = _evaluate_into(ensure_writable_dir(folder / FOLDER / name, "--workdir's external folder"), folder,
                             network, data, data_dir, which, shared)
  except UserError:
    for created in reversed(new):  # a refused evaluation leaves the run as it found it
      shutil.rmtree(created, ignore_errors=True)
    raise
  print(text(summary))
  log.info("External report: %s", folder / FOLDER / name / "report.html")
  return summary


def _evaluate_into(out: pathlib.Path, folder: pathlib.Path, network: inference.TrainedNetwork,
                   data: ml_collections.ConfigDict, data_dir: str, which: str,
                   shared: list[tuple[str, int, int]]) -> dict:
  run_config = network.config
  with exclusive(out, "--workdir's external folder"):
    cache_dir = pathlib.Path(data.cache_dir).expanduser() if data.cache_dir else out / "cache"
    split = datasets.cache_splits(data, data_dir, cache_dir, (which,))[which]
    logits = _score(network, split)
    labels = split.labels.reshape(len(split), -1)
    internal, notes = workdir.read_test_scores(folder), []
    if internal is None:
      notes.append(f"{folder / workdir.TEST_SCORES} is missing (a run from before it was written): the internal test "
                   "AUROC and its difference are not computed; rerun training with the same command and "
                   f"--workdir={folder} to write it")
    elif internal["step"] != network.step:  # the newest checkpoint was damaged: an older one was applied
      notes.append(f"the network applied is step {network.step}'s, the run's internal test scores step "
                   f"{internal['step']}'s: the internal AUROC and its difference are not computed")
      internal = None
    eval_cfg = run_config.eval
    findings = {t: _finding(labels[:, k], logits, split.patient_ids, network.readout, j, internal, eval_cfg)
                for t, j, k in shared}
    data_targets = datasets.target_names(data)
    summary = {"run": str(folder), "step": network.step, "dataset": data.dataset, "data_dir": str(data_dir),
               "split": which, "films": len(split), "patients": len(set(split.patient_ids)),
               "findings": findings, "interval_confidence": eval_cfg.confidence if eval_cfg.bootstrap > 0 else None,
               "not_shared": {"run_only": [t for j, t in enumerate(network.readout.targets)
                                           if j not in {j for _, j, _ in shared}],
                              "dataset_only": [t for k, t in enumerate(data_targets)
                                               if k not in {k for _, _, k in shared}]},
               "notes": notes, "config": data.to_dict()}
    _write_page(out / "report.html", summary, {t: (labels[:, k], network.readout.probabilities(logits)[:, j])
                                               for t, j, k in shared})
    atomic_write_json(out / workdir.SUMMARY, summary)
  return summary


def table(summary: dict) -> Table:
  rows = []
  for name, r in summary["findings"].items():
    intervals = r.get("intervals") or {}
    rows.append([name, r["films"], r["tp"] + r["fn"], fmt(r["auc"]), interval(intervals.get("auc")),
                 fmt(r["internal_auc"]), fmt(r["auc_difference"], "+.4f"), interval(r["auc_difference_interval"]),
                 fmt(r["recall"]), fmt(r["specificity"])])
  return Table(["finding", "films", "positives", "AUROC", "interval", "internal AUROC", "difference", "interval",
                "sensitivity", "specificity"], rows)


def text(summary: dict) -> str:
  confidence = summary["interval_confidence"]
  lines = [f"External validation of {summary['run']} (step {summary['step']}) on data.dataset={summary['dataset']} "
           f"at {summary['data_dir']}, {summary['split']} split: {summary['films']} films, {summary['patients']} "
           "patients" + (f"; {confidence:.0%} intervals over patient resamples" if confidence else ""),
           table(summary).text(),
           "  sensitivity and specificity at the run's own operating point (chosen on its validation split)"]
  missing = summary["not_shared"]
  for side, what in (("run_only", "the run predicts, the dataset does not label"),
                     ("dataset_only", "the dataset labels, the run does not predict")):
    if missing[side]:
      lines.append(f"  not scored ({what}): {', '.join(missing[side])}")
  lines += [f"  note: {n}" for n in summary["notes"]]
  return "\n".join(lines)


def _write_page(path: pathlib.Path, summary: dict, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
  roc = {}
  for name, (labels, scores) in curves.items():
    known = labels >= 0
    curve = metrics.roc_curve(labels[known], scores[known])
    if curve is not None:
      roc[f"{name} (AUROC {fmt(summary['findings'][name]['auc'], '.3f')})"] = curve
  parts = [html.paragraph(text(summary).splitlines()[0]), html.table(table(summary))]
  parts += [html.paragraph(f"note: {n}", note=True) for n in summary["notes"]]
  if roc:
    parts.append(html.image(figures.roc(roc), "ROC curves", "ROC of each shared finding on the external split.",
                            width=470))
  html.write(path, html.page(f"jaxcxr external validation: {summary['dataset']}", [("External validation", parts)]))

