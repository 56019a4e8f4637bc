"""Faults around the preprocessed cache and the synthetic data: killed builds, and runs that share a cache."""

import os
import socket

import numpy as np

from jaxcxr import fsutil
from jaxcxr.configs import tiny
from jaxcxr.data import cache, nih, synthetic
from tests.support import dead_pid


def test_a_killed_builds_folder_is_removed_by_the_next_build_and_a_live_one_kept(tmp_path):
  host = socket.gethostname()
  dead = tmp_path / f".train-building-{dead_pid()}@{host}.abc"
  live = tmp_path / f".train-building-{os.getppid()}@{host}.def"  # the parent of this process is alive
  elsewhere = tmp_path / f".train-building-{dead_pid()}@another-{host}.ghi"  # maybe alive on its own host
  for folder in (dead, live, elsewhere):
    folder.mkdir()
    (folder / "images.u8").write_bytes(b"half")
  mine = fsutil.building_folder(tmp_path, "val")
  assert not dead.exists() and live.exists() and elsewhere.exists()
  assert mine.name.startswith(f".val-building-{os.getpid()}@{host}.")


def test_a_build_that_loses_the_race_to_an_equal_build_keeps_the_published_one(tmp_path, tiny_nih):
  table = nih.load_examples(tiny_nih, "Pneumonia", "no_finding", (), 0.15, 0.2, 0)
  rows = table[table["split"] == "val"]
  first = cache.build_or_load(rows, "val", tmp_path, 32, "pad", "error", 1)
  folder = next(tmp_path.glob("val-*"))
  before = (folder / "images.u8").stat().st_ino
  # A second process that started building before the first published: its commit must not replace it.
  with cache._Building(tmp_path, "val") as build:  # pylint: disable=protected-access
    (build.tmp / "images.u8").write_bytes(bytes(first.images.shape[0] * 32 * 32))
    build.commit(folder, {"split": "val"})
  assert (folder / "images.u8").stat().st_ino == before
  np.testing.assert_array_equal(cache.open_split(folder).images[:], first.images[:])
  assert not list(tmp_path.glob(".val-building-*"))


def test_synthetic_generation_keeps_a_dataset_another_run_published_meanwhile(tmp_path, monkeypatch):
  spec = synthetic.SyntheticSpec(**tiny.get_config().data.synthetic.to_dict())
  root = tmp_path / f"synthetic-nih-{spec.fingerprint()}"
  write, published = synthetic.write_dataset, {}

  def another_run_publishes_meanwhile(folder, spec_):
    write(root, spec_)  # the other run's dataset, complete while this one is still writing its own
    published["inode"] = (root / synthetic.MARKER).stat().st_ino
    write(folder, spec_)

  monkeypatch.setattr(synthetic, "write_dataset", another_run_publishes_meanwhile)
  assert synthetic.ensure_dataset(tmp_path, spec) == root
  assert (root / synthetic.MARKER).stat().st_ino == published["inode"]
  assert not list(tmp_path.glob(".synthetic-building-*"))


def test_an_incomplete_folder_under_the_final_name_is_replaced(tmp_path):
  built, final = tmp_path / "built", tmp_path / "val-0123"
  for folder, content in ((built, b"new"), (final, b"half")):
    folder.mkdir()
    (folder / "images.u8").write_bytes(content)
  (built / "manifest.json").write_text("{}")
  fsutil.publish(built, final, lambda folder: (folder / "manifest.json").is_file())
  assert (final / "images.u8").read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["val-0123"]
