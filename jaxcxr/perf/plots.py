"""Line charts as PNG with Pillow alone, for the speedup report's figures.

Four figures do not justify a plotting dependency; this draws axes, ticks,
a legend and one polyline per series, which is all the paper's figures use.
"""

import io
import math
import pathlib

from PIL import Image, ImageDraw

from jaxcxr.fsutil import atomic_write_bytes

COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))
WIDTH, HEIGHT, MARGIN = 900, 540, (80, 40, 30, 60)  # left, top, right, bottom
# A y axis spanning more than this ratio is better drawn in decades: a GPU's step times beside one
# CPU core's would otherwise lie flat on the x axis.
LOG_SCALE_RATIO = 20.0


def _ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
  """Round-numbered ticks covering [lo, hi]; whole numbers only for an integer axis (epochs, steps)."""
  if hi <= lo:
    hi = lo + 1.0
  raw = (hi - lo) / count
  step = 10 ** math.floor(math.log10(raw))
  step *= next(m for m in (1, 2, 5, 10) if raw <= m * step)
  step = max(step, 1) if integer else step
  return [i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)]


def needs_log_axis(series: dict[str, tuple[list[float], list[float]]]) -> bool:
  """Whether the largest y of these (positive) series is over `LOG_SCALE_RATIO` times the smallest."""
  ys = [y for _, values in series.values() for y in values if y is not None]
  return max(ys) > LOG_SCALE_RATIO * min(ys)


def line_chart(path: str | pathlib.Path, title: str, xlabel: str, ylabel: str,
               series: dict[str, tuple[list[float], list[float]]], log_y: bool = False) -> None:
  """Writes a PNG with one line per named (xs, ys) series.

  `log_y` draws the y axis in decades, so that series hundreds of times apart
  (a GPU's step beside one CPU core's) are all readable; its values must be > 0.
  """
  if log_y:
    series = {name: (xs, [None if y is None else math.log10(y) for y in ys]) for name, (xs, ys) in series.items()}
  points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if y is not None]
  xs_all, ys_all = [p[0] for p in points] or [0, 1], [p[1] for p in points] or [0, 1]
  x0, x1 = min(xs_all), max(xs_all) if max(xs_all) > min(xs_all) else min(xs_all) + 1
  pad = 0.05 * ((max(ys_all) - min(ys_all)) or 1.0)
  y0, y1 = min(ys_all) - pad, max(ys_all) + pad
  left, top, right, bottom = MARGIN
  img = Image.new("RGB", (WIDTH, HEIGHT), "white")
  draw = ImageDraw.Draw(img)

  def px(x, y):
    return (left + (x - x0) / (x1 - x0) * (WIDTH - left - right),
            HEIGHT - bottom - (y - y0) / (y1 - y0) * (HEIGHT - top - bottom))

  draw.rectangle([left, top, WIDTH - right, HEIGHT - bottom], outline="black")
  for t in _ticks(y0, y1, integer=log_y):
    _, y = px(x0, t)
    draw.line([left - 4, y, left, y], fill="black")
    draw.line([left, y, WIDTH - right, y], fill=(230, 230, 230))
    draw.text((4, y - 6), f"{10 ** t if log_y else t:.4g}", fill="black")
  for t in _ticks(x0, x1, integer=all(float(x).is_integer() for x in xs_all)):
    x, _ = px(t, y0)
    draw.line([x, HEIGHT - bottom, x, HEIGHT - bottom + 4], fill="black")
    draw.text((x - 10, HEIGHT - bottom + 8), f"{t:.4g}", fill="black")
  draw.text((WIDTH / 2 - 4 * len(title), 12), title, fill="black")
  draw.text((WIDTH / 2 - 3 * len(xlabel), HEIGHT - 22), xlabel, fill="black")
  draw.text((4, top - 28), ylabel, fill="black")
  for i, (name, (xs, ys)) in enumerate(series.items()):
    color = COLORS[i % len(COLORS)]
    line = [px(x, y) for x, y in zip(xs, ys) if y is not None]
    if len(line) > 1:
      draw.line(line, fill=color, width=2)
    for x, y in line if len(line) <= 40 else []:
      draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    draw.rectangle([WIDTH - right - 190, top + 10 + 18 * i, WIDTH - right - 176, top + 22 + 18 * i], fill=color)
    draw.text((WIDTH - right - 170, top + 10 + 18 * i), name, fill="black")
  buffer = io.BytesIO()
  img.save(buffer, format="PNG")
  atomic_write_bytes(path, buffer.getvalue())
