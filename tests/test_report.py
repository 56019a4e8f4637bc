"""report.html: every figure present and decodable, nothing referenced outside the page, the run's content."""

import base64
import io
import re

import numpy as np
from PIL import Image

from jaxcxr import metrics
from jaxcxr.report import run_report
from tests.support import references

_INLINE = 'src="data:image/png;base64,'


def _inline_images(page: str) -> list[Image.Image]:
  inlined = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
  return [Image.open(io.BytesIO(base64.b64decode(data))) for data in inlined]


def test_a_run_writes_a_self_contained_report_with_every_figure(default_run):
  page = (default_run / "report.html").read_text()
  for heading in ("Run", "Data", "Training curves", "Test split", "Timing", "Gallery"):
    assert f"<h2>{heading}</h2>" in page
  for alt in ("loss per epoch", "accuracy per epoch", "validation AUROC per epoch", "ROC curves",
              "precision-recall curves", "confusion matrix", "reliability diagram"):
    assert f'alt="{alt}"' in page, alt
  images = _inline_images(page)
  assert len(images) == page.count(_INLINE) and len(images) >= 7 + 4
  for img in images:
    img.verify()  # a complete, valid PNG
  assert references(page) == []
  assert page.count('alt="true positive: Pneumonia p=') >= 1 and "false negative" in page
  assert "Localisation on the synthetic test films with one opacity" in page
  assert "SYNTHETIC DATA" in page


def test_the_gallery_shows_the_films_the_network_was_surest_of():
  labels = np.array([1, 1, 1, 0, 0, 0, 1, 0])
  scores = np.array([0.9, 0.8, 0.2, 0.7, 0.1, 0.3, 0.6, 0.05])
  called = (scores > 0.5).astype(int)
  picks = run_report.gallery_picks(labels, scores, called, per_kind=2)
  assert picks == [(0, "true positive"), (1, "true positive"), (3, "false positive"), (2, "false negative"),
                   (7, "true negative"), (4, "true negative")]


def test_the_roc_curve_encloses_the_auc_and_the_reliability_bins_add_up():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 500)
  scores = np.round(np.clip(rng.random(500) * 0.6 + 0.3 * labels, 0, 1), 2)  # ties included
  fpr, tpr = metrics.roc_curve(labels, scores)
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
  np.testing.assert_allclose(np.trapezoid(tpr, fpr), metrics.roc_auc(labels, scores), atol=1e-12)
  recall, precision = metrics.precision_recall_curve(labels, scores)
  assert recall[-1] == 1.0 and np.isclose(precision[-1], labels.mean())
  bins = metrics.reliability(labels, scores)
  assert bins["counts"].sum() == 500 and 0.0 <= bins["ece"] <= 1.0
  calibrated = metrics.reliability(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5]))
  assert calibrated["ece"] == 0.0 and calibrated["observed"].tolist() == [0.5]
  assert metrics.roc_curve(np.ones(4), scores[:4]) is None
