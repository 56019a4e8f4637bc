import numpy as np
from PIL import Image

from jaxcxr import plots


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
