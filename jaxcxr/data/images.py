"""Decoding one chest film into a square uint8 grayscale array of the training resolution.

Handles what the real releases contain: 8-bit grayscale PNG (most of NIH),
RGB/RGBA PNG (~500 NIH films; luminance is kept, alpha dropped), 16-bit PNG
(rescaled to 8 bits by its own range) and JPEG of any size (Kermany; decoded
with draft mode so the JPEG decoder itself downscales by a power of two), and
DICOM as X-ray machines write it (`dicom.read_film`: modality and VOI LUT,
the same stretch as a 16-bit PNG, MONOCHROME1 inverted). Every format then
passes the same size checks and the same resize.
"""

import functools
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from jaxcxr.data import dicom

ASPECT_MODES = ("pad", "crop")
# What a reader does with a film it cannot decode (data.on_bad_image, predict --on_bad_image): stop, or skip it.
STOP_AT_BAD_IMAGE, SKIP_BAD_IMAGE = "error", "skip"
ON_BAD_IMAGE = (STOP_AT_BAD_IMAGE, SKIP_BAD_IMAGE)
# A 1024x1024 film has 1M pixels and the largest Kermany JPEG ~8M; anything
# past this is treated as a decompression bomb, not silently decoded.
MAX_PIXELS = 64_000_000
# A chest film is roughly square and hundreds of pixels a side; a file far from that is not one (a thumbnail,
# an icon, a strip cut from a film) and would train on noise. MedMNIST's 28 px films arrive decoded, not here.
MIN_SIDE = 16
MAX_ASPECT = 4.0


class BadImageError(Exception):
  """One file that cannot be used as a film; the message names the file and why."""


def _to_grayscale(path: str | os.PathLike, img: Image.Image) -> Image.Image:
  """An 8-bit 'L' image; 16-bit and float images are stretched over their own range."""
  if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
    values = np.asarray(img)
    if not np.isfinite(values).all():
      raise BadImageError(f"{path}: some pixels are NaN or infinite (a float image with missing values)")
    return Image.fromarray(dicom.stretch_to_uint8(values))
  # RGBA/LA: convert("L") computes ITU-R 601 luma from the colour channels and drops alpha.
  return img if img.mode == "L" else img.convert("L")


def _square(img: Image.Image, aspect: str) -> Image.Image:
  """Makes the image square by padding with black (keeps the whole chest) or center-cropping."""
  w, h = img.size
  if w == h:
    return img
  side = max(w, h) if aspect == "pad" else min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  if aspect == "crop":
    return img.crop((left, top, left + side, top + side))
  canvas = Image.new(img.mode, (side, side), 0)
  canvas.paste(img, (-left, -top))
  return canvas


def fitted_box(box: tuple[float, float, float, float], width: int, height: int, size: int,
               aspect: str = "pad") -> tuple[float, float, float, float]:
  """A box (x, y, width, height) in a width x height film's own pixels, in the pixels of the (size, size) film
  `fit` makes of it (`_square`'s padding or crop, then the resize)."""
  side = max(width, height) if aspect == "pad" else min(width, height)
  left, top, scale = (width - side) // 2, (height - side) // 2, size / side
  x, y, w, h = box
  return ((x - left) * scale, (y - top) * scale, w * scale, h * scale)


def load_film(path: str | os.PathLike, size: int, aspect: str = "pad") -> np.ndarray:
  """Decodes `path` and returns a (size, size) uint8 array; raises BadImageError on any bad file."""
  return load_film_with_metadata(path, size, aspect)[0]


def load_film_with_metadata(path: str | os.PathLike, size: int, aspect: str = "pad") -> tuple[np.ndarray, dict]:
  """`load_film`'s array and what the file says of its pixels, for a prediction to record.

  The metadata has `dicom.METADATA_KEYS`: `pixel_spacing_mm` ((row, column) in mm of the file's own pixels,
  before resizing), `photometric`, `bits_stored` and the DICOM tags Modality, BodyPartExamined and ViewPosition;
  all are None for a PNG or JPEG, which carry none of them.
  """
  if aspect not in ASPECT_MODES:
    raise ValueError(f"aspect must be one of {ASPECT_MODES}, got {aspect!r}")
  try:
    if dicom.is_dicom(path):
      film, metadata = dicom.read_film(path, check_size=functools.partial(check_size, path))
      gray = Image.fromarray(film)
    else:
      gray, metadata = _decode(path, size), dict.fromkeys(dicom.METADATA_KEYS)
  except BadImageError:
    raise
  except dicom.DicomError as e:
    raise BadImageError(str(e)) from e
  except FileNotFoundError as e:
    raise BadImageError(f"{path}: file not found") from e
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError,
          Image.DecompressionBombWarning) as e:
    raise BadImageError(f"{path}: cannot decode ({e})") from e
  check_not_blank(path, gray)
  return _fit(gray, size, aspect), metadata


def _decode(path: str | os.PathLike, size: int) -> Image.Image:
  """A PNG or JPEG (anything PIL opens) as an 'L' image; JPEGs decoded at the smallest scale above `size`."""
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    with Image.open(path) as img:
      check_size(path, img.width, img.height)
      if getattr(img, "n_frames", 1) > 1:  # an animated GIF or a TIFF stack is not one film
        raise BadImageError(f"{path}: holds {img.n_frames} frames; a film is one image")
      if img.format == "JPEG":
        img.draft("L", (size, size))
      img.load()
      # A phone photo of a film (or a JPEG from some viewers) is stored sideways with an EXIF Orientation tag
      # saying how to turn it: laterality and the network both need it upright.
      return _to_grayscale(path, ImageOps.exif_transpose(img))


def check_size(path: str | os.PathLike, width: int, height: int) -> None:
  """The limits every format passes before its pixels are decoded: no decompression bomb, nothing but a film."""
  if width * height > MAX_PIXELS:
    raise BadImageError(f"{path}: {width}x{height} pixels exceeds the "
                        f"{MAX_PIXELS:,}-pixel limit (decompression bomb?)")
  short, long = sorted((width, height))
  if short < MIN_SIDE or long > MAX_ASPECT * short:
    raise BadImageError(f"{path}: {width}x{height} pixels is not a chest film (each side at least "
                        f"{MIN_SIDE} px, the longer at most {MAX_ASPECT:g}x the shorter)")


def check_not_blank(path: str | os.PathLike, gray: Image.Image) -> None:
  """A film whose pixels all have one value (a blank export, a flat 16-bit file) carries nothing to score; it
  would otherwise become a black square that still gets a probability and a label."""
  low, high = gray.getextrema()
  if low == high:
    raise BadImageError(f"{path}: every pixel has the value {low} (a blank or flat image, not a film)")


def _fit(img: Image.Image, size: int, aspect: str) -> np.ndarray:
  square = _square(img, aspect)
  if square.size != (size, size):
    # reducing_gap=1: an integer box reduction (itself antialiasing) first, then bilinear for the
    # remainder, a fraction of a full-size bilinear filter's cost (python -m jaxcxr.perf.data_bench).
    square = square.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=1.0)
  return np.asarray(square, dtype=np.uint8)


def fit(gray: np.ndarray, size: int, aspect: str = "pad") -> np.ndarray:
  """A 2-D uint8 film made square (`pad` or `crop`) and resized to (size, size), antialiased."""
  return _fit(Image.fromarray(gray), size, aspect)


def fit_array(film: np.ndarray, size: int, aspect: str = "pad") -> np.ndarray:
  """A film handed over as an array (2-D uint8 greyscale, any size) fitted to (size, size) as the cache fits a
  file's; BadImageError for any other array."""
  film = np.asarray(film)
  if film.ndim != 2 or film.dtype != np.uint8:
    raise BadImageError(f"a film given as an array must be 2-D uint8 greyscale; got {film.dtype} {film.shape} "
                        "(pass paths to have PNG, JPEG or DICOM files decoded)")
  check_size("a film given as an array", film.shape[1], film.shape[0])
  check_not_blank("a film given as an array", Image.fromarray(film))
  return film if film.shape == (size, size) else fit(film, size, aspect)
