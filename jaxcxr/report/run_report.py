"""`RUN/report.html`: what a training run did and how well its network does, on one page.

The run's config and data, its per-epoch curves, the test split's ROC and precision-recall curves with the
operating point, confusion matrix, calibration, timing, and a gallery of the most confident right and wrong
test films with their class activation maps. Everything comes from the summary the run wrote and the test split's
labels and scores; nothing is recomputed here but the curves (`jaxcxr.metrics`). The gallery's maps and the
localisation check apply the final network (`inference.TrainedNetwork`) to the test films.
"""

import dataclasses
import functools
import json
import pathlib

import numpy as np

from jaxcxr import calibration, explain, metrics
from jaxcxr.data import rsna, synthetic
from jaxcxr.data.cache import CachedSplit
from jaxcxr.inference import TrainedNetwork
from jaxcxr.report import figures, html
from jaxcxr.report.tables import Table, calibration_table, evaluation_table, fmt

CHART_WIDTH = 470  # px on the page: two charts side by side
CHART_SIZE = (5.0, 3.6)  # inches of a per-epoch chart, drawn near the size it is shown at
# The gallery's four kinds of film, in the order shown, and how each is picked from the test split.
KINDS = ("true positive", "false positive", "false negative", "true negative")


@dataclasses.dataclass(frozen=True)
class TestScores:
  """The test split as the report draws it: one column per target."""
  targets: tuple[str, ...]
  labels: np.ndarray      # (N, targets) 0/1, findings.MISSING (-1) where a film is not labelled for a target
  scores: np.ndarray      # (N, targets) probabilities
  called: np.ndarray      # (N, targets) 0/1 at each target's operating point
  thresholds: tuple[float, ...]
  uncalibrated: np.ndarray  # (N, targets) the network's own probabilities, before the temperature


@dataclasses.dataclass(frozen=True)
class GalleryFilm:
  kind: str
  film: np.ndarray     # (S, S) uint8, as the network saw it
  heatmap: np.ndarray  # (S, S) class activation map in [0, 1]
  caption: str


def gallery_picks(labels: np.ndarray, scores: np.ndarray, called: np.ndarray,
                  per_kind: int = 2) -> list[tuple[int, str]]:
  """(index, kind) of the test films to show: of each kind, the `per_kind` the network was surest of (highest
  scores among those called positive, lowest among those called negative); unlabelled films are never shown."""
  known, labels, called = labels >= 0, labels > 0, called.astype(bool)
  picks = []
  for kind, mask, surest_first in zip(KINDS, (labels & called, ~labels & called & known, labels & ~called,
                                              ~labels & ~called & known),
                                      (-scores, -scores, scores, scores)):
    chosen = np.flatnonzero(mask)
    picks += [(int(i), kind) for i in chosen[np.argsort(surest_first[chosen], kind="stable")][:per_kind]]
  return picks


def gallery_target(test: TestScores) -> int:
  """Which target the gallery explains: the only one, or the finding with the most test positives."""
  return int(np.argmax((test.labels == 1).sum(axis=0)))


def test_scores(network: TrainedNetwork, split: CachedSplit, logits: np.ndarray) -> TestScores:
  """The test split's labels, and its (N, targets) `logits` as `network` reads them: calibrated probabilities
  and calls at its operating points, and the probabilities before calibration."""
  labels, read = split.labels.reshape(len(split), -1), network.readout
  return TestScores(read.targets, labels, read.probabilities(logits), read.labels(logits), read.thresholds,
                    calibration.sigmoid(logits))


def gallery(network: TrainedNetwork, split: CachedSplit, test: TestScores, logits: np.ndarray) -> list[GalleryFilm]:
  """The test films `gallery_picks` chooses, each explained by `network` for the gallery's target."""
  shown = gallery_target(test)
  picks = gallery_picks(test.labels[:, shown], test.scores[:, shown], test.called[:, shown])
  films = np.stack([split.images[i] for i, _ in picks]) if picks else np.zeros((0,) + split.images.shape[1:], np.uint8)
  heatmaps = network.heatmaps(films, np.full(len(picks), shown))
  return [GalleryFilm(kind, film, heatmap, network.readout.caption(logits[i], shown))
          for (i, kind), film, heatmap in zip(picks, films, heatmaps)]


def localisation(network: TrainedNetwork, split: CachedSplit,
                 opacities: dict[str, list[tuple[float, float, float]]] | None, film_size: int,
                 boxes: dict[str, list[tuple[float, float, float, float]]] | None = None) -> dict | None:
  """Whether the maps (each `explain` method's) point at the finding, on the test films where its place is known:
  on the synthetic films (`opacities` by film, drawn at `film_size` px), of the films with one opacity, how many
  have their map peak inside it; with the radiologists' `boxes` (RSNA; in the cached films' pixels), of the films
  with boxes, how many have it peak inside one (the pointing game). None where neither is known."""
  if boxes:
    ids = {name: i for i, name in enumerate(split.image_ids)}
    known = [(ids[name], regions) for name, regions in boxes.items() if name in ids]
    inside_of = functools.partial(explain.peak_in_boxes, film_size=split.images.shape[1])
    truth, finding = "boxes", rsna.TARGET
  elif opacities and synthetic.OPACITY_FINDING in network.readout.targets:
    known = [(i, opacities[name][0]) for i, name in enumerate(split.image_ids) if len(opacities.get(name, ())) == 1]
    inside_of = functools.partial(explain.peak_inside, film_size=film_size)
    truth, finding = "opacities", synthetic.OPACITY_FINDING
  else:
    return None
  if not known:
    return None
  films = np.stack([split.images[i] for i, _ in known])
  targets = np.full(len(known), network.readout.targets.index(finding))
  inside = {method: sum(inside_of(h, where) for h, (_, where) in zip(network.heatmaps(films, targets, method), known))
            for method in explain.METHODS}
  return {"films": len(known), "inside": {method: int(n) for method, n in inside.items()}, "truth": truth}


def _run_section(workdir: pathlib.Path, summary: dict) -> list[str]:
  config = summary["config"]
  return [html.paragraph(f"Trained to step {summary['step']} in {workdir}: model.name={config['model']['name']}, "
                         f"data.dataset={config['data']['dataset']}, data.target={config['data']['target']}, "
                         f"{config['data']['image_size']} px."),
          html.folded("the whole config", html.preformatted(json.dumps(config, indent=2, sort_keys=True)))]


def _data_section(summary: dict, targets: tuple[str, ...]) -> list[str]:
  parts = []
  if summary["synthetic"]:
    parts.append(html.paragraph("SYNTHETIC DATA: the embedded generated films, not radiographs; these figures say "
                                "nothing about medicine.", note=True))
  positives = summary["split_positives"]
  multi = len(targets) > 1
  rows = [[name, summary["split_sizes"][name], summary.get("split_patients", {}).get(name, "n/a"),
           "see below" if multi else positives[name]] for name in summary["split_sizes"]]
  parts.append(html.table(Table(["split", "films", "patients", "positive films"], rows)))
  if multi:
    parts.append(html.table(Table(["finding", *summary["split_sizes"]],
                            [[t, *(positives[s][t] for s in summary["split_sizes"])] for t in targets])))
  return parts


def _curves_section(history: list[dict]) -> list[str]:
  epochs = [r["epoch"] for r in history]
  pngs = [figures.line_chart("Loss per epoch", "epoch", "loss", {
              "train": (epochs, [r["train_loss"] for r in history]), "val": (epochs, [r["val_loss"] for r in history])},
                             log_y=False, size=CHART_SIZE),
          figures.line_chart("Accuracy per epoch", "epoch", "accuracy", {
              "train": (epochs, [r["train_accuracy"] for r in history]),
              "val": (epochs, [r["val_accuracy"] for r in history])}, log_y=False, size=CHART_SIZE),
          figures.line_chart("Validation AUROC per epoch", "epoch", "AUROC", {
              "val": (epochs, [r["val_auc"] for r in history])}, log_y=False, size=CHART_SIZE)]
  names = ("loss per epoch", "accuracy per epoch", "validation AUROC per epoch")
  return [html.image(p, n, n, width=CHART_WIDTH) for p, n in zip(pngs, names)]


def _test_section(summary: dict, test: TestScores) -> list[str]:
  t = summary["test"]
  confidence = t.get("interval_confidence")
  parts = [html.paragraph(f"{len(test.labels)} test films; operating point chosen on validation "
                          f"(eval.threshold={summary['config']['eval']['threshold']})"
                          + (f"; {confidence:.0%} intervals over patient resamples." if confidence else ".")),
           html.table(evaluation_table(t, summary["config"]["data"]["dataset"]))]
  calibrated = calibration_table(t)
  if calibrated is not None:
    parts += [html.paragraph(f"Calibration (eval.calibration={summary['config']['eval']['calibration']}): the "
                             "temperature fitted on validation, and the test split's expected calibration error "
                             "(ten bins) and Brier score before and after it."), html.table(calibrated)]
  parts += [html.paragraph(f"note: {n}", note=True) for n in t["notes"]]
  curves, pr_curves, points, pr_points, prevalence = {}, {}, {}, {}, {}
  for k, name in enumerate(test.targets):
    known = test.labels[:, k] >= 0  # the films labelled for this finding
    labels, scores = test.labels[known, k], test.scores[known, k]
    roc, pr = metrics.roc_curve(labels, scores), metrics.precision_recall_curve(labels, scores)
    auc = t["findings"][name]["auc"] if "findings" in t else t["auc"]  # the table's figure, not recomputed
    label = f"{name} (AUROC {fmt(auc, '.3f')})"
    tn, fp, fn, tp = metrics.confusion(labels, test.called[known, k])
    if roc is not None:
      curves[label] = roc
      points[label] = (fp / (fp + tn), tp / (tp + fn))
    if pr is not None:
      pr_curves[label], prevalence[label] = pr, float(labels.mean())
      if tp + fp:
        pr_points[label] = (tp / (tp + fn), tp / (tp + fp))
  if curves:
    parts.append(html.image(figures.roc(curves, points), "ROC curves", "ROC on the test split; the dot is the "
                            "operating point chosen on validation.", width=CHART_WIDTH))
  if pr_curves:
    parts.append(html.image(figures.precision_recall(pr_curves, prevalence, pr_points), "precision-recall curves",
                            "Precision against recall on the test split.", width=CHART_WIDTH))
  if len(test.targets) == 1:
    tn, fp, fn, tp = metrics.confusion(test.labels[:, 0], test.called[:, 0])
    parts.append(html.image(figures.confusion(tn, fp, fn, tp, test.targets[0], test.thresholds[0]),
                            "confusion matrix", "Counts at the operating point (row shares in brackets).",
                            width=CHART_WIDTH))
  pooled = " (every finding pooled)" if len(test.targets) > 1 else ""
  known = test.labels >= 0
  curves = {"before calibration": metrics.reliability(test.labels[known], test.uncalibrated[known]),
            "after calibration": metrics.reliability(test.labels[known], test.scores[known])}
  method = summary["config"]["eval"].get("calibration", calibration.NONE)
  parts.append(html.image(figures.reliability(curves, "Calibration, test split" + pooled), "reliability diagram",
                          f"Observed fraction of positives against the predicted probability, in ten bins{pooled}, "
                          f"before and after eval.calibration={method} (fitted on validation).", width=CHART_WIDTH))
  return parts


def _timing_section(summary: dict) -> list[str]:
  timing, device = summary["timing"], summary["device"]
  rows = [["device", f"{device['device_kind']} ({device['platform']}), {device.get('num_devices', 1)} used"],
          ["convolution lowering", summary["lowering"]], ["compile", f"{timing['compile_s']:.2f} s"],
          ["mean time per epoch", f"{fmt(timing['mean_sec_per_epoch'], '.2f')} s"],
          ["median time per step", f"{fmt(timing['median_ms_per_step'], '.2f')} ms"],
          ["time waiting for data", fmt(timing["data_wait_fraction"], ".1%")],
          ["epochs timed", timing["epochs_timed"]], ["peak resident memory", f"{timing['peak_rss_mb']:.0f} MB"]]
  return [html.table(Table(["measure", "value"], rows))]


def _gallery_section(gallery: list[GalleryFilm], target: str, localisation: dict | None) -> list[str]:
  parts = [html.paragraph(f"The test films the network was surest of, right and wrong, for {target}, with "
                          f"the {explain.METHODS[0]} map (red: strongest evidence for the finding) of the network's "
                          "last convolutional stage (jaxcxr/explain.py).")]
  if localisation:
    n = localisation["films"]
    found = "; ".join(f"{method} on {k} of {n} ({k / n:.0%})" for method, k in localisation["inside"].items())
    parts.append(html.paragraph(
        f"Localisation on the test films with the radiologists' boxes (the pointing game): the map peaks inside a "
        f"box with {found}." if localisation.get("truth") == "boxes" else
        f"Localisation on the synthetic test films with one opacity: the map peaks inside the opacity (within two "
        f"sigmas of its centre) with {found}."))
  for kind in KINDS:
    films = [g for g in gallery if g.kind == kind]
    if films:
      parts.append(f"<h3>{html.escape(kind)}</h3>" + "".join(
          html.image(figures.overlay(g.film, g.heatmap, g.caption), f"{kind}: {g.caption}", width=300)
          for g in films))
    else:
      parts.append(html.paragraph(f"No {kind} in the test split."))
  return parts


def write(workdir: pathlib.Path, summary: dict, test: TestScores, gallery: list[GalleryFilm]) -> pathlib.Path:
  """Writes `workdir/report.html` (atomically) and returns its path."""
  target = test.targets[gallery_target(test)]
  sections = [
      ("Run", _run_section(workdir, summary)),
      ("Data", _data_section(summary, test.targets)),
      ("Training curves", _curves_section(summary["epochs"])),
      ("Test split", _test_section(summary, test)),
      ("Timing", _timing_section(summary)),
      ("Gallery", _gallery_section(gallery, target, summary.get("localisation"))),
  ]
  path = workdir / "report.html"
  html.write(path, html.page(f"jaxcxr run report: {workdir.name}", sections))
  return path
