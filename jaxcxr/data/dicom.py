"""Reading one DICOM chest film (what X-ray machines and PACS write) into the grey uint8 array every film becomes.

Only single-frame greyscale images are films: a structured report (no pixels), a multi-frame series, a colour
image or an exotic bit depth is refused in one line naming the file, never decoded into something else. The
pixels go through the file's own modality LUT (RescaleSlope/Intercept) and VOI LUT or window, as a viewer shows
them, are scaled from the window's (or VOI LUT's) range to 0..255, or without either stretched over their own
range exactly as a 16-bit PNG is, and MONOCHROME1 is inverted so that bone is bright in every film. A
compressed transfer syntax whose plugin is not installed names the `pip install` that pydicom itself lists
for it.
"""

import math
import os
import pathlib
import shlex
import struct
from collections.abc import Callable

import numpy as np
import pydicom
import pydicom.errors
import pydicom.pixels

DICOM_SUFFIXES = (".dcm", ".dicom")
GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
MIN_BITS, MAX_BITS = 8, 16
_MAGIC_OFFSET, _MAGIC = 128, b"DICM"
_REQUIRED = ("Rows", "Columns", "BitsStored", "PhotometricInterpretation")
# What pydicom raises on pixels it cannot decode (its decoders raise these on malformed data, as observed on
# truncated and inconsistent files); anything else is a bug, not a bad file.
_PYDICOM_ERRORS = (pydicom.errors.InvalidDicomError, EOFError, struct.error, ValueError, KeyError, TypeError,
                   AttributeError, NotImplementedError, RuntimeError)


class DicomError(Exception):
  """One DICOM file that cannot be a film; the message starts with the path and says why in one line."""


# What a film's file says of itself: pixel spacing (mm, row x column), and the tags predict's scope check reads.
METADATA_KEYS = ("pixel_spacing_mm", "photometric", "bits_stored", "modality", "body_part", "view_position")


def is_dicom(path: str | os.PathLike) -> bool:
  """By suffix or by the `DICM` magic at byte 128, since PACS exports often have no suffix at all."""
  if pathlib.Path(path).suffix.lower() in DICOM_SUFFIXES:
    return True
  try:
    with open(path, "rb") as f:
      head = f.read(_MAGIC_OFFSET + len(_MAGIC))
  except OSError:
    return False
  return head[_MAGIC_OFFSET:] == _MAGIC


def stretch_to_uint8(values: np.ndarray) -> np.ndarray:
  """`round((v - lo) * 255 / (hi - lo))` over the array's own range, zeros when flat.

  The one rule for every film deeper than 8 bits (16-bit PNG and DICOM alike), so the same pixels give the same
  film whichever format carried them.
  """
  arr = np.asarray(values, dtype=np.float64)
  lo, hi = float(arr.min()), float(arr.max())
  if hi <= lo:
    return np.zeros(arr.shape, np.uint8)
  return np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_film(path: str | os.PathLike,
              check_size: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, dict]:
  """A 2-D uint8 film and its metadata (`METADATA_KEYS`); DicomError if unusable.

  `check_size(width, height)` runs on the header's Rows and Columns before any pixel is decoded, so that a
  caller's size limits refuse a decompression bomb without decompressing it.
  """
  try:
    ds = pydicom.dcmread(path)
  except pydicom.errors.InvalidDicomError as e:
    raise DicomError(f"{path}: not a DICOM file (no 'DICM' header at byte 128)") from e
  except (EOFError, struct.error, ValueError, KeyError, TypeError) as e:
    raise DicomError(f"{path}: cannot parse the DICOM header ({e})") from e
  _check_header(path, ds)
  if check_size is not None:
    check_size(int(ds.Columns), int(ds.Rows))
  _check_decoder(path, ds)
  try:
    values = pydicom.pixels.apply_modality_lut(ds.pixel_array, ds)
    values = pydicom.pixels.apply_voi_lut(values, ds)
  except _PYDICOM_ERRORS as e:
    raise DicomError(f"{path}: cannot decode its pixel data ({e})") from e
  display = _display_range(ds)
  film = stretch_to_uint8(values) if display is None else _to_uint8(values, *display)
  photometric = str(ds.PhotometricInterpretation)
  if photometric == "MONOCHROME1":  # low values are white: invert so that bone is bright as in MONOCHROME2
    film = 255 - film
  return film, {"pixel_spacing_mm": _pixel_spacing(ds), "photometric": photometric,
                "bits_stored": int(ds.BitsStored), "modality": _tag(ds, "Modality"),
                "body_part": _tag(ds, "BodyPartExamined"), "view_position": _tag(ds, "ViewPosition")}


def _display_range(ds: pydicom.Dataset) -> tuple[float, float] | None:
  """The range a VOI LUT or window maps the film into, as pydicom's `apply_voi_lut` sets it (a VOI LUT's
  output bits; a window's stored range, rescaled: PS3.3 C.11.2.1.2), or None when the file has neither. A
  window is a choice of contrast: scaling its whole range to 0..255 keeps a window wider than the data grey,
  where stretching the windowed values over their own range would undo it."""
  if "VOILUTSequence" in ds:
    return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
  if "WindowCenter" not in ds or "WindowWidth" not in ds:
    return None
  bits = int(ds.BitsStored)
  if ds.get("ModalityLUTSequence"):
    low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
  elif int(ds.get("PixelRepresentation", 0)) == 0:
    low, high = 0.0, float(2 ** bits - 1)
  else:
    low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
  if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    low, high = sorted((low * slope + intercept, high * slope + intercept))
  return low, high


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
  """`values` in [low, high] to 0..255, by the same rounding as the stretch."""
  span = high - low
  scaled = (np.asarray(values, np.float64) - low) * (255.0 / span) if span > 0 else np.zeros(np.shape(values))
  return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _check_header(path, ds: pydicom.Dataset) -> None:
  """Refuses, from the header alone, every file whose pixels would not be one grey film."""
  if "PixelData" not in ds:
    if "Rows" in ds:
      raise DicomError(f"{path}: ends before its pixel data (a truncated file?)")
    raise DicomError(f"{path}: has no pixel data (a DICOM without an image, e.g. a structured report)")
  missing = [k for k in _REQUIRED if ds.get(k) in (None, "")]
  if missing:
    raise DicomError(f"{path}: lacks {', '.join(missing)}, which its pixels cannot be read without")
  frames = int(ds.get("NumberOfFrames") or 1)
  if frames > 1:
    raise DicomError(f"{path}: is a multi-frame DICOM ({frames} frames); export the frame you want as its own file")
  photometric = str(ds.PhotometricInterpretation)
  samples = int(ds.get("SamplesPerPixel") or 1)
  if samples != 1 or photometric not in GREY_PHOTOMETRICS:
    raise DicomError(f"{path}: photometric interpretation {photometric} with {samples} sample(s) per pixel is not "
                     f"a grey film (expected {' or '.join(GREY_PHOTOMETRICS)}, 1 sample)")
  bits = int(ds.BitsStored)
  if not MIN_BITS <= bits <= MAX_BITS:
    raise DicomError(f"{path}: {bits} bits stored per pixel, where a film has {MIN_BITS} to {MAX_BITS}")


def _check_decoder(path, ds: pydicom.Dataset) -> None:
  """A transfer syntax that needs an absent plugin, named with the installs pydicom lists for it."""
  syntax = ds.file_meta.get("TransferSyntaxUID")
  if syntax is None:
    raise DicomError(f"{path}: its file meta information has no TransferSyntaxUID")
  try:
    decoder = pydicom.pixels.get_decoder(syntax)
  except NotImplementedError as e:
    raise DicomError(f"{path}: pydicom has no pixel data decoder for {syntax.name} ({syntax})") from e
  if decoder.is_available:
    return
  installs = _pip_installs(decoder.missing_dependencies)
  fix = "; or ".join(installs) if installs else "; ".join(decoder.missing_dependencies) or "no plugin known"
  raise DicomError(f"{path}: its pixels are compressed as {syntax.name} ({syntax}), which no installed plugin "
                   f"decodes: {fix}")


def _pip_installs(missing: list[str]) -> list[str]:
  """`pip install ...` per plugin, from pydicom's own 'label - requires a, b and c' strings (not a copy of them)."""
  installs = []
  for line in missing:
    _, sep, requires = line.partition(" - requires ")
    if sep:
      packages = requires.replace(" and ", ", ").split(", ")
      installs.append("pip install " + " ".join(shlex.quote(p) for p in packages))
  return installs


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
  """(row, column) spacing in mm: PixelSpacing, else the detector's ImagerPixelSpacing; None when neither holds
  two positive numbers (scanners write `0\\0` for "not calibrated")."""
  for key in ("PixelSpacing", "ImagerPixelSpacing"):
    value = ds.get(key)
    try:
      spacing = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
      continue
    if len(spacing) == 2 and all(math.isfinite(v) and v > 0 for v in spacing):
      return spacing
  return None


def _tag(ds: pydicom.Dataset, keyword: str) -> str | None:
  """A code string tag as written (upper case, stripped), or None where it is absent or empty."""
  value = str(ds.get(keyword) or "").strip().upper()
  return value or None
