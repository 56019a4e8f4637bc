"""The one table builder: a `Table` of formatted cells, drawn as aligned text (the terminal), as markdown
(report.md) or as HTML (`html.table`: report.html), and the tables a run's test report is shown in."""

import dataclasses
from collections.abc import Sequence

from jaxcxr import metrics
from jaxcxr.data import datasets, nih


def fmt(value, spec: str = ".4f") -> str:
  """A figure as shown: `n/a` where it is undefined (an AUROC on one class)."""
  return "n/a" if value is None else format(value, spec)


def interval(bounds: Sequence[float] | None) -> str:
  return f"[{fmt(bounds[0])}, {fmt(bounds[1])}]" if bounds else ""


@dataclasses.dataclass(frozen=True)
class Table:
  header: Sequence[object]
  rows: Sequence[Sequence[object]]

  def text(self, indent: str = "  ") -> str:
    """Aligned columns: the first to the left, the others to the right."""
    cells = [[str(c) for c in row] for row in [self.header, *self.rows]]
    widths = [max(len(row[k]) for row in cells) for k in range(len(self.header))]
    return "\n".join(indent + "  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                                        for k, (c, w) in enumerate(zip(row, widths))).rstrip()
                     for row in cells)

  def markdown(self) -> str:
    return "\n".join("| " + " | ".join(str(c) for c in cells) + " |"
                     for cells in [self.header, ["---"] * len(self.header), *self.rows])


def metrics_table(test: dict) -> Table:
  """One target's test metrics at its operating point, each with its interval where there is one."""
  intervals = test.get("intervals") or {}
  return Table(["metric", "value", "interval"],
               [[k, fmt(test[k]), interval(intervals.get(k))] for k in metrics.METRICS])


def findings_table(test: dict, dataset: str) -> Table:
  """A multi-label test report as CheXNet's Table 2: AUROC per finding with its interval, then the mean; on NIH
  data, CheXNet's published figures beside them for reference (they were measured on NIH only)."""
  published = dataset == datasets.NIH
  rows = [[name, fmt(r["auc"]), interval((r.get("intervals") or {}).get("auc")), r["tp"] + r["fn"],
           *([fmt(nih.CHEXNET_AUROC.get(name))] if published else [])]
          for name in test["targets"] for r in [test["findings"][name]]]
  rows.append([f"mean ({test['mean_auc_over']} findings)", fmt(test["mean_auc"]),
               interval(test.get("mean_auc_interval")), "", *([fmt(nih.CHEXNET_MEAN_AUROC)] if published else [])])
  return Table(["finding", "AUROC", "interval", "positives", *(["CheXNet (2017)"] if published else [])], rows)


def evaluation_table(test: dict, dataset: str) -> Table:
  """The test report's table: per finding for several targets, else the metrics of the one."""
  return findings_table(test, dataset) if "findings" in test else metrics_table(test)


def calibration_table(test: dict) -> Table | None:
  """Per target: the temperature fitted on validation and the test split's ECE and Brier score before and
  after it; None for a summary written before calibration existed."""
  reports = {t: test["findings"][t] for t in test["targets"]} if "findings" in test else {"": test}
  if any("calibration" not in r for r in reports.values()):
    return None
  rows = [[name or "test split", fmt(c["temperature"], ".3f"), fmt(c["ece_before"]), fmt(c["ece_after"]),
           fmt(c["brier_before"]), fmt(c["brier_after"])]
          for name, c in ((name, r["calibration"]) for name, r in reports.items())]
  return Table(["finding" if "findings" in test else "", "temperature", "ECE before", "ECE after", "Brier before",
                "Brier after"], rows)
