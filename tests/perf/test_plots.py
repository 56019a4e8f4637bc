import numpy as np
from PIL import Image

from jaxcxr.perf import plots


def test_line_chart_draws_each_series_in_its_colour(tmp_path):
  plots.line_chart(tmp_path / "c.png", "title", "x", "y", {"a": ([1, 2, 3], [1.0, 2.0, 1.5]),
                                                           "b": ([1, 2, 3], [0.5, None, 0.7])})
  pixels = np.asarray(Image.open(tmp_path / "c.png").convert("RGB")).reshape(-1, 3)
  for color in plots.COLORS[:2]:
    assert (pixels == color).all(axis=1).sum() > 50


def test_ticks_are_round_numbers():
  np.testing.assert_allclose(plots._ticks(0.0, 1.0), [0, 0.2, 0.4, 0.6, 0.8, 1.0])
  np.testing.assert_allclose(plots._ticks(3.0, 47.0), [10, 20, 30, 40])


def test_integer_axes_get_whole_ticks():
  assert plots._ticks(1, 3, integer=True) == [1, 2, 3]


def test_log_axis_spreads_series_orders_of_magnitude_apart(tmp_path):
  # 1, 30 and 1000 ms: on a log axis the middle series sits near mid-height, on a linear one near the bottom.
  series = {name: ([1, 2, 3], [v] * 3) for name, v in (("gpu", 1.0), ("cpu", 30.0), ("cpu1", 1000.0))}
  rows = {}
  for log_y in (False, True):
    plots.line_chart(tmp_path / "c.png", "t", "step", "ms", series, log_y=log_y)
    pixels = np.asarray(Image.open(tmp_path / "c.png").convert("RGB"))
    rows[log_y] = np.nonzero((pixels == plots.COLORS[1]).all(axis=2))[0]
  top, bottom = plots.MARGIN[1], plots.HEIGHT - plots.MARGIN[3]
  # 0 at the top, 1 at the bottom; the median row is the line's, not its legend swatch's.
  middle = lambda r: (np.median(r) - top) / (bottom - top)  # noqa: E731
  assert 0.4 < middle(rows[True]) < 0.6
  assert middle(rows[False]) > 0.85


def test_log_axis_only_for_values_orders_of_magnitude_apart():
  cpus = {"cpu1": ([1, 2], [809.0, 790.0]), "cpu": ([1, 2], [515.0, None])}
  assert not plots.needs_log_axis(cpus)
  assert plots.needs_log_axis({**cpus, "gpu": ([1, 2], [3.1, 3.0])})
