"""What every CSV reader checks of its file before trusting its rows."""

import os
import pathlib

from jaxcxr.errors import UserError


def check_whole(csv_path: pathlib.Path, columns: int) -> None:
  """A copy cut short (a full disk, an interrupted download) ends mid-row: its last row then has fewer fields
  than the header, and would be read with made-up blanks or a truncated label."""
  with open(csv_path, "rb") as f:
    f.seek(0, os.SEEK_END)
    f.seek(max(f.tell() - 4096, 0))
    tail = f.read().decode("utf-8", errors="replace")
  last = tail.rstrip("\r\n").rsplit("\n", 1)[-1]
  if not tail.endswith("\n") and last.count(",") + 1 < columns:
    raise UserError(f"{csv_path} is cut short: its last line ({last[:60]!r}) ends mid-row with "
                    f"{last.count(',') + 1} of {columns} fields; copy or download the file again")
