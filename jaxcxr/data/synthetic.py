"""A small, seeded, synthetic dataset written in the NIH ChestX-ray14 on-disk format.

SYNTHETIC: these are drawn chest-like films, not radiographs. They exist so that
`python run.py` works on a fresh machine with no download and exercises exactly
the code path real NIH data takes (metadata CSV with the original quirks,
`images/PPPPPPPP_FFF.png`, official split lists, RGBA and 16-bit PNGs).
"Pneumonia" films carry soft opacities inside a lung field; a network that
learns to see them proves the pipeline learns end to end, nothing about medicine.
"""

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil

import numpy as np
from PIL import Image, ImageFilter

from jaxcxr.data import nih
from jaxcxr.errors import UserError
from jaxcxr.fsutil import building_folder, publish

HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
          "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
OTHER_FINDINGS = ("Effusion", "Atelectasis", "Nodule", "Pleural_Thickening", "Pneumothorax")
MARKER = "SYNTHETIC.json"
# 2: the folder holds opacities.csv (a folder written before it is regenerated beside it, the films unchanged).
FORMAT_VERSION = 2
# Where each pneumonia film's opacities are, in its own pixels: what an explanation's localisation is measured on.
OPACITIES = "opacities.csv"
OPACITY_FINDING = "Pneumonia"  # the finding the films' opacities stand for
OPACITY_HEADER = "Image Index,row,column,sigma"
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Everything that determines the generated files; its hash names the cache folder."""
  num_patients: int = 240
  max_images_per_patient: int = 4
  image_size: int = 256
  pneumonia_fraction: float = 0.4
  other_finding_fraction: float = 0.08
  test_fraction: float = 0.25
  seed: int = 0

  def fingerprint(self) -> str:
    described = {**dataclasses.asdict(self), "format": FORMAT_VERSION}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:12]


def _ellipse(xx, yy, cx, cy, rx, ry):
  return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def render_film(rng: np.random.Generator, size: int, pneumonia: bool) -> np.ndarray:
  """One chest-like film as float32 in [0, 1]: body, two dark lung fields, spine, ribs, noise."""
  return render_film_with_opacities(rng, size, pneumonia)[0]


def render_film_with_opacities(rng: np.random.Generator, size: int,
                               pneumonia: bool) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
  """`render_film`, and where each opacity lies: (row, column, sigma) in the film's pixels, the Gaussian's
  centre and width (the ground truth an explanation is checked against)."""
  yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j].astype(np.float32)
  shift_x, shift_y, scale = rng.normal(0, 0.04), rng.normal(0, 0.04), rng.uniform(0.9, 1.05)
  xx, yy = (xx - shift_x) / scale, (yy - shift_y) / scale
  img = np.full((size, size), 0.06, np.float32)
  img[_ellipse(xx, yy, 0, 0.15, 0.88, 1.05)] = 0.55
  lungs = []
  for side in (-1, 1):
    cx, cy = side * rng.uniform(0.34, 0.42), rng.uniform(-0.12, 0.0)
    rx, ry = rng.uniform(0.24, 0.3), rng.uniform(0.48, 0.58)
    mask = _ellipse(xx, yy, cx, cy, rx, ry)
    img[mask] = 0.2 + 0.04 * np.sin(yy[mask] * rng.uniform(24, 32))
    lungs.append((cx, cy, rx, ry))
  img[np.abs(xx) < 0.07] += 0.2
  opacities = []
  pixels_per_unit = (size - 1) / 2  # the grid spans [-1, 1] over `size` pixels
  if pneumonia:
    for _ in range(rng.integers(1, 4)):
      cx, cy, rx, ry = lungs[rng.integers(2)]
      bx, by = cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry
      sigma = rng.uniform(0.09, 0.18)
      img += rng.uniform(0.22, 0.35) * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sigma ** 2))
      opacities.append((float((by * scale + shift_y + 1) * pixels_per_unit),
                        float((bx * scale + shift_x + 1) * pixels_per_unit), float(sigma * scale * pixels_per_unit)))
  img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
  img += rng.normal(0, 0.03, img.shape).astype(np.float32)
  blurred = Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8)).filter(
      ImageFilter.GaussianBlur(radius=size / 256))
  return np.asarray(blurred, np.float32) / 255.0, opacities


def _save_png(path: pathlib.Path, film: np.ndarray, kind: str) -> None:
  """Writes the film as 8-bit grayscale, RGBA (as ~500 NIH films are) or 16-bit grayscale."""
  gray8 = np.round(film * 255).astype(np.uint8)
  if kind == "rgba":
    rgba = np.stack([gray8, gray8, gray8, np.full_like(gray8, 255)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(path)
  elif kind == "gray16":
    Image.fromarray(np.round(film * 4095 + 100).astype(np.uint16)).save(path)
  else:
    Image.fromarray(gray8).save(path)


def _patient_rows(rng: np.random.Generator, spec: SyntheticSpec, patient: int, images: pathlib.Path,
                  opacities: list[str]):
  """Renders one patient's films and yields their metadata rows; appends their opacities' rows to `opacities`."""
  for follow_up in range(int(rng.integers(1, spec.max_images_per_patient + 1))):
    draw = rng.uniform()
    if draw < spec.pneumonia_fraction:
      labels = OPACITY_FINDING if rng.uniform() < 0.6 else \
          f"{OPACITY_FINDING}|{rng.choice(['Infiltration', 'Effusion'])}"
    elif draw < spec.pneumonia_fraction + spec.other_finding_fraction:
      labels = str(rng.choice(OTHER_FINDINGS))
    else:
      labels = nih.NO_FINDING
    name = f"{patient:08d}_{follow_up:03d}.png"
    kind = rng.choice(["gray8", "rgba", "gray16"], p=[0.94, 0.03, 0.03])
    film, where = render_film_with_opacities(rng, spec.image_size, OPACITY_FINDING in labels)
    _save_png(images / name, film, kind)
    opacities += [f"{name},{row:.3f},{col:.3f},{sigma:.3f}" for row, col, sigma in where]
    view = "PA" if rng.uniform() < 0.6 else "AP"
    age, sex = int(rng.integers(1, 95)), rng.choice(["M", "F"])
    yield (f"{name},{labels},{follow_up},{patient},{age},{sex},{view},"
           f"{spec.image_size},{spec.image_size},0.143,0.143,")


def write_dataset(root: pathlib.Path, spec: SyntheticSpec) -> None:
  """Writes metadata CSV (original-release form, trailing comma), images/ and the split lists."""
  rng = np.random.default_rng(spec.seed)
  (root / "images").mkdir(parents=True)
  rows, patient_of, opacities = [], {}, []
  for patient in range(1, spec.num_patients + 1):
    for row in _patient_rows(rng, spec, patient, root / "images", opacities):
      rows.append(row)
      patient_of[row.split(",")[0]] = patient
  (root / "Data_Entry_2017.csv").write_text("\n".join([HEADER, *rows]) + "\n")
  (root / OPACITIES).write_text("\n".join([OPACITY_HEADER, *opacities]) + "\n")
  test_patients = set(rng.permutation(np.arange(1, spec.num_patients + 1))[
      :int(round(spec.test_fraction * spec.num_patients))].tolist())
  names = sorted(patient_of)
  # The official lists may lack a final newline; write them that way so the reader copes.
  (root / "test_list.txt").write_text("\n".join(n for n in names if patient_of[n] in test_patients))
  (root / "train_val_list.txt").write_text(
      "\n".join(n for n in names if patient_of[n] not in test_patients))
  (root / MARKER).write_text(json.dumps({"synthetic": True, **dataclasses.asdict(spec)}, indent=2))


def dataset_folder(cache_dir: pathlib.Path, spec: SyntheticSpec) -> pathlib.Path:
  return cache_dir / f"synthetic-nih-{spec.fingerprint()}"


def _damage(root: pathlib.Path) -> str | None:
  """What is missing from a generated folder (a deleted film, a lost opacities.csv), or None if it is whole."""
  for name in ("Data_Entry_2017.csv", "test_list.txt", "train_val_list.txt", OPACITIES):
    if not (root / name).is_file():
      return f"{name} is missing"
  listed = len((root / "Data_Entry_2017.csv").read_text().splitlines()) - 1
  found = sum(1 for _ in (root / "images").glob("*.png")) if (root / "images").is_dir() else 0
  return None if found == listed else f"{listed - found} of its {listed} films are missing"


def ensure_dataset(cache_dir: pathlib.Path, spec: SyntheticSpec) -> pathlib.Path:
  """Returns the generated dataset folder, generating it once (atomically) if it is not there yet, and again
  where something of it was lost (it is a pure function of `spec`, so nothing is lost by regenerating it)."""
  root = dataset_folder(cache_dir, spec)
  if (root / MARKER).is_file():
    damage = _damage(root)
    if damage is None:
      return root
    log.warning("The synthetic dataset in %s is damaged (%s): generating it again", root, damage)
    aside = root.with_name(f"{root.name}.damaged-{os.getpid()}")
    try:
      root.rename(aside)  # another run may be regenerating it too: the first to publish wins
    except FileNotFoundError:
      pass
    shutil.rmtree(aside, ignore_errors=True)
    if (root / MARKER).is_file() and _damage(root) is None:
      return root
  tmp = None
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = building_folder(cache_dir, "synthetic")
    write_dataset(tmp / "data", spec)
    publish(tmp / "data", root, lambda folder: (folder / MARKER).is_file())  # another run's may be there
  except OSError as e:
    raise UserError(f"could not write the synthetic dataset under {cache_dir} ({e.strerror or e}); "
                    "free disk space, or pass a writable --workdir (or data.cache_dir, where it is set)") from e
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)
  return root


def read_opacities(root: pathlib.Path) -> dict[str, list[tuple[float, float, float]]] | None:
  """Each film's opacities (row, column, sigma in its pixels) from a generated dataset; None for any other."""
  path = root / OPACITIES
  if not path.is_file():
    return None
  out: dict[str, list[tuple[float, float, float]]] = {}
  for line in path.read_text().splitlines()[1:]:
    name, row, col, sigma = line.split(",")
    out.setdefault(name, []).append((float(row), float(col), float(sigma)))
  return out
