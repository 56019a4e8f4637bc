"""A dependency-free progress bar for long host-side work (cache builds, epochs).

On a terminal it redraws one line; in a log file or CI it writes a line at
most every `min_interval_s`, so long jobs stay visible without flooding logs.
"""

import sys
import time


def _format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
  """`with Progress(total, 'decoding', unit='img') as bar: bar.update(k)`; shows rate and ETA."""

  def __init__(self, total: int, desc: str, unit: str = "it", stream=None, min_interval_s: float | None = None,
               shown: bool = True):
    """`shown=False` counts without drawing (the processes of a run other than the one that reports)."""
    self.total, self.desc, self.unit, self.shown = total, desc, unit, shown
    self.stream = stream or sys.stderr
    self.tty = self.stream.isatty()
    self.min_interval_s = min_interval_s if min_interval_s is not None else (0.2 if self.tty else 10.0)
    self.done = 0
    self.start = self.last_draw = time.perf_counter()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def line(self) -> str:
    elapsed = time.perf_counter() - self.start
    rate = self.done / elapsed if elapsed > 0 else 0.0
    frac = self.done / self.total if self.total else 1.0
    eta = (self.total - self.done) / rate if rate > 0 else 0.0
    bar = "#" * int(frac * 20)
    return (f"{self.desc} [{bar:<20}] {self.done}/{self.total} {frac:4.0%} "
            f"{rate:,.1f} {self.unit}/s elapsed {_format_seconds(elapsed)} ETA {_format_seconds(eta)}")

  def due(self) -> bool:
    """True when the next `update` will draw: the moment to sync asynchronous work, and only then."""
    return time.perf_counter() - self.last_draw >= self.min_interval_s

  def update(self, n: int = 1) -> None:
    self.done += n
    if self.due():
      self.last_draw = time.perf_counter()
      self._draw()

  def _draw(self, end: str = "") -> None:
    if not self.shown:
      return
    if self.tty:
      self.stream.write("\r" + self.line() + end)
    else:
      self.stream.write(self.line() + "\n")
    self.stream.flush()

  def close(self) -> None:
    self._draw(end="\n")
