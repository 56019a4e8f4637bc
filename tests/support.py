"""Helpers the tests share (no test module imports another): commands as a user runs them, trained runs
compared bit for bit, and small datasets written in each reader's on-disk format."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from jaxcxr import checkpoints, devices, experiment, models, train_step

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_command(*args, timeout=300, env=None, cwd=ROOT):
  """`python run.py ARGS` (in `cwd`, with `env` added), on the CPU: the exit code and output a user sees."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
  return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


TIMING_KEYS = {"sec_per_epoch", "ms_per_step", "data_wait_fraction", "steps_timed"}


CPU = devices.select_devices("cpu", 1)[0]


def train_run(config, workdir, data_dir=None, report=False):
  """A whole run in this process, on one CPU device: train, test report and summary, and with `report` the run
  page (its gallery's maps take seconds a test of training need not spend; test_report.py checks the page)."""
  config.logging.report = report
  return experiment.train_and_evaluate(config, workdir, CPU, data_dir)


def learning(history):
  return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


def final_state(workdir):
  with ocp.CheckpointManager((workdir / "checkpoints").absolute()) as manager:
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored["state"]


def assert_same_state(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


class Killed(Exception):
  pass


def crash_then_resume(config, workdir, monkeypatch) -> dict:
  """Runs until just after the mid-epoch checkpoint at step 5 (every 5 steps, 8 per epoch), dies there,
  then reruns the same command; returns the resumed run's summary."""
  original = checkpoints.Checkpointer.save

  def save_then_die(self, state, data_state, history):
    original(self, state, data_state, history)
    if int(state.step) == 5:
      raise Killed

  monkeypatch.setattr(checkpoints.Checkpointer, "save", save_then_die)
  with pytest.raises(Killed):
    train_run(config, workdir)
  monkeypatch.undo()
  return train_run(config, workdir)


def override(config, key, value):
  group, *rest = key.split(".")
  node = config[group]
  for part in rest[:-1]:
    node = node[part]
  node[rest[-1]] = value
  return config


CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                 if p.stem != "__init__")


KERMANY = {
    "train": {"NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-0041-0001.jpeg", "IM-0117-0001.jpeg"],
              "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_6.jpeg",
                            "person3_bacteria_10.jpeg"]},
    "val": {"NORMAL": ["NORMAL2-IM-1427-0001.jpeg"], "PNEUMONIA": ["person1946_bacteria_4874.jpeg"]},
    "test": {"NORMAL": ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg"], "PNEUMONIA": ["person100_bacteria_475.jpeg"]},
}


def plain_film(shape, value):
  """A film of one grey value but for its corner pixel: a film of a single value is refused as blank."""
  film = np.full(shape, value, np.uint8)
  film[0, 0] = 255 - value
  return film


def write_kermany(root, tree=KERMANY):
  for split, classes in tree.items():
    for cls, names in classes.items():
      (root / split / cls).mkdir(parents=True, exist_ok=True)
      for i, name in enumerate(names):
        Image.fromarray(plain_film((30, 40), 20 * i)).save(root / split / cls / name)
  return root


def write_npz(path, size=28, counts=(12, 4, 6), rng=np.random.default_rng(0)):
  arrays = {}
  for split, n in zip(("train", "val", "test"), counts):
    arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size)).astype(np.uint8)
    arrays[f"{split}_labels"] = (np.arange(n) % 2).astype(np.uint8).reshape(n, 1)
  np.savez(path, **arrays)
  return path


HEADER_V2020 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


ROWS = [  # name, labels, patient, view
    ("00000001_000.png", "Pneumonia", 1, "PA"),
    ("00000001_001.png", "No Finding", 1, "AP"),
    ("00000002_000.png", "Pneumonia|Effusion", 2, "PA"),
    ("00000003_000.png", "Pleural_Thickening", 3, "PA"),
    ("00000004_000.png", "No Finding", 4, "AP"),
    ("00000005_000.png", "Pneumothorax", 5, "PA"),
    ("00000006_000.png", "No Finding", 6, "PA"),
    ("00000007_000.png", "Infiltration|Pneumonia", 7, "AP"),
]


def write_release(root, original=True, kaggle=False, lists=True, trailing_newline=False):
  """A miniature NIH release: CSV (original with trailing comma, or v2020), images, split lists."""
  root.mkdir(parents=True, exist_ok=True)
  header = HEADER_V2020 + ("," if original else "")
  lines = [header] + [f"{n},{l},0,{p},{150 if p == 1 else 40},M,{v},1024,1024,0.14300000000000002,0.143"
                      + ("," if original else "") for n, l, p, v in ROWS]
  (root / ("Data_Entry_2017.csv" if original else "Data_Entry_2017_v2020.csv")).write_text("\n".join(lines) + "\n")
  for i, (name, *_rest) in enumerate(ROWS):
    folder = root / (f"images_{1 + i % 2:03d}/images" if kaggle else "images")
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(plain_film((8, 8), 10 * i)).save(folder / name)
  if lists:
    end = "\n" if trailing_newline else ""
    (root / "test_list.txt").write_text("00000006_000.png\n00000007_000.png" + end)
    (root / "train_val_list.txt").write_text("\n".join(n for n, *_ in ROWS[:6]) + end)
  return root


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def tiny_state(seed=0):
  model = models.PaperCNN(widths=(4, 8), convs_per_block=1, dense=(8,), dropout=0.0)
  return train_step.create_state(model, optax.adam(1e-2), image_size=16, seed=seed)


def tiny_batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 2
  images = rng.integers(0, 100, (n, 16, 16)).astype(np.uint8)
  images[labels == 1, 4:12, 4:12] = 220  # positives carry a bright square
  return {"image": images, "label": labels.astype(np.int32)}


def references(page: str) -> list[str]:
  """Every src or href of the page that is not an inlined PNG: what would break offline."""
  return [ref for ref in re.findall(r'(?:src|href)="([^"]*)"', page) if not ref.startswith("data:image/png;base64,")]


DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def dicom_dataset(sop_class: str = DX_FOR_PRESENTATION) -> Dataset:
  """An image dataset of `sop_class` with its file meta information, Modality DX, and no pixels yet."""
  ds = Dataset()
  ds.file_meta = FileMetaDataset()
  ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
  ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
  ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
  ds.Modality = "DX"
  return ds


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                **attrs):
  """`pixels` as a DICOM film at `path`, with any other attributes (Modality, PixelSpacing, ...) given."""
  ds = dicom_dataset()
  ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8, generate_instance_uid=False)
  for key, value in attrs.items():
    setattr(ds, key, value)
  ds.save_as(path, enforce_file_format=True)
  return path
