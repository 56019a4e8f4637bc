"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state): one function per
figure, each returning PNG bytes ready to inline into the HTML page or to write as a file."""

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# A y axis spanning more than this ratio is drawn in decades: a GPU's step times beside one CPU core's would
# otherwise lie flat on the x axis.
LOG_SCALE_RATIO = 20.0
DPI = 100
Series = Mapping[str, tuple[Sequence[float], Sequence[float | None]]]


def _figure(width: float = 6.4, height: float = 4.0) -> Figure:
  figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def png(figure: Figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  return buffer.getvalue()


def needs_log_axis(series: Series) -> bool:
  """Whether the largest y of these (positive) series is over `LOG_SCALE_RATIO` times the smallest."""
  ys = [y for _, values in series.values() for y in values if y is not None]
  return bool(ys) and min(ys) > 0 and max(ys) > LOG_SCALE_RATIO * min(ys)


def line_chart(title: str, xlabel: str, ylabel: str, series: Series, log_y: bool | None = None,
               size: tuple[float, float] = (9.0, 5.4)) -> bytes:
  """One line per named (xs, ys) series (a None y is a gap); `log_y=None` picks decades when the series are
  more than `LOG_SCALE_RATIO` apart. `size` in inches at 100 dpi; 900 x 540 px by default: room for a legend
  of six series beside a line of a hundred steps, and the size the speedup command's figures have always had."""
  figure = _figure(*size)
  ax = figure.add_subplot()
  log_y = needs_log_axis(series) if log_y is None else log_y
  for name, (xs, ys) in series.items():
    values = np.array([math.nan if y is None else y for y in ys], float)
    ax.plot(xs, values, marker="o" if len(xs) <= 40 else None, markersize=3, label=name)
  if log_y:
    ax.set_yscale("log")
  ax.set(title=title, xlabel=xlabel, ylabel=f"{ylabel} (log scale)" if log_y else ylabel)
  ax.grid(alpha=0.3)
  if all(float(x).is_integer() for xs, _ in series.values() for x in xs):
    ax.xaxis.get_major_locator().set_params(integer=True)
  if series:
    ax.legend(fontsize="small")
  return png(figure)


def overlay(film: np.ndarray, heatmap: np.ndarray | None, caption: str, size: float = 3.2) -> bytes:
  """A film in grey with its class activation map over it (omitted when None) and a caption above."""
  figure = _figure(size, size + 0.35)
  ax = figure.add_subplot()
  ax.imshow(film, cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
  if heatmap is not None:
    ax.imshow(heatmap, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.35, interpolation="bilinear")
  ax.set_title(caption, fontsize="small")
  ax.set_axis_off()
  return png(figure)


Curve = tuple[np.ndarray, np.ndarray]


def roc(curves: Mapping[str, Curve], points: Mapping[str, tuple[float, float]] | None = None) -> bytes:
  """ROC curves by name (label them with their AUROC), each operating point in `points` marked."""
  points = points or {}
  figure = _figure(5.0, 4.6)
  ax = figure.add_subplot()
  ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="chance")
  for name, (fpr, tpr) in curves.items():
    line, = ax.plot(fpr, tpr, linewidth=1.5 if len(curves) > 3 else 2, label=name)
    if name in points:
      ax.plot(*points[name], "o", color=line.get_color(), markersize=7, markeredgecolor="black")
  ax.set(title="ROC, test split" + (" (dot: operating point)" if points else ""), xlabel="false positive rate",
         ylabel="true positive rate (recall)", xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="x-small" if len(curves) > 3 else "small", loc="lower right")
  return png(figure)


def precision_recall(curves: Mapping[str, Curve], prevalence: Mapping[str, float],
                     points: Mapping[str, tuple[float, float]] | None = None) -> bytes:
  """Precision against recall by name, with each curve's chance level (its prevalence) dotted."""
  points = points or {}
  figure = _figure(5.0, 4.6)
  ax = figure.add_subplot()
  for name, (recall, precision) in curves.items():
    line, = ax.plot(recall, precision, linewidth=1.5 if len(curves) > 3 else 2, label=name)
    ax.axhline(prevalence[name], color=line.get_color(), linestyle=":", linewidth=1)
    if name in points:
      ax.plot(*points[name], "o", color=line.get_color(), markersize=7, markeredgecolor="black")
  ax.set(title="Precision-recall, test split (dotted: prevalence)", xlabel="recall", ylabel="precision",
         xlim=(0, 1), ylim=(0, 1.01))
  ax.grid(alpha=0.3)
  ax.legend(fontsize="x-small" if len(curves) > 3 else "small", loc="lower left")
  return png(figure)


def confusion(tn: int, fp: int, fn: int, tp: int, positive: str, threshold: float) -> bytes:
  """The 2x2 confusion matrix with its counts and each row's share."""
  counts = np.array([[tn, fp], [fn, tp]])
  figure = _figure(5.0, 4.6)
  ax = figure.add_subplot()
  ax.imshow(counts, cmap="Blues")
  for (row, col), n in np.ndenumerate(counts):
    share = n / max(counts[row].sum(), 1)
    ax.text(col, row, f"{n}\n({share:.0%})", ha="center", va="center",
            color="white" if n > counts.max() / 2 else "black")
  ax.set_xticks([0, 1], ["healthy", positive])
  ax.set_yticks([0, 1], ["healthy", positive])
  ax.set(title=f"Confusion, test split\n(threshold {threshold:.3f})", xlabel="predicted", ylabel="true")
  return png(figure)


def reliability(curves: dict[str, dict], title: str) -> bytes:
  """Reliability diagrams, one per labelled `metrics.reliability` result: observed fraction of positives against
  mean predicted probability per bin (marker area by film count), over the diagonal of perfect calibration."""
  figure = _figure(5.0, 4.6)
  ax = figure.add_subplot()
  ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1, label="perfectly calibrated")
  for (label, curve), color in zip(curves.items(), ("tab:gray", "tab:blue")):
    ax.plot(curve["predicted"], curve["observed"], color=color, linewidth=1.5)
    ax.scatter(curve["predicted"], curve["observed"], s=20 + 180 * curve["counts"] / max(curve["counts"].max(), 1),
               color=color, zorder=3, label=f"{label}: ECE {curve['ece']:.3f}")
  ax.set(title=title, xlabel="mean predicted probability", ylabel="observed fraction positive", xlim=(0, 1),
         ylim=(0, 1.01), aspect="equal")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small", loc="upper left", title="bins (area: films)", title_fontsize="small")
  return png(figure)
