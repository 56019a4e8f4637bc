import errno
import os

import pytest

from jaxcxr import fsutil
from jaxcxr.errors import UserError


def test_atomic_write_replaces_whole_file(tmp_path):
  fsutil.atomic_write_json(tmp_path / "a.json", {"x": 1})
  fsutil.atomic_write_json(tmp_path / "a.json", {"x": 2})
  assert (tmp_path / "a.json").read_text().strip() == '{\n  "x": 2\n}'
  assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  (tmp_path / "summary.json").write_text("old")
  real_fsync = os.fsync

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(UserError, match="could not write .*summary.json: No space left on device; free some disk"):
    fsutil.atomic_write_text(tmp_path / "summary.json", "new")
  monkeypatch.setattr(os, "fsync", real_fsync)
  assert (tmp_path / "summary.json").read_text() == "old"
  assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_unwritable_directory_is_named(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(UserError, match="--workdir .*file/sub is not writable"):
    fsutil.ensure_writable_dir(tmp_path / "file" / "sub", "--workdir")


def test_a_file_or_a_dangling_link_as_the_directory_is_named_for_what_it_is(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(UserError, match=r"--workdir .*/file is a file, not a directory; pass a directory"):
    fsutil.ensure_writable_dir(tmp_path / "file", "--workdir")
  (tmp_path / "link").symlink_to(tmp_path / "nowhere")
  with pytest.raises(UserError, match=r"--workdir .*/link is a symbolic link to .*/nowhere, which does not exist"):
    fsutil.ensure_writable_dir(tmp_path / "link", "--workdir")
  assert not (tmp_path / "nowhere").exists()


def test_a_refused_run_leaves_no_folder_it_made_holding_only_its_lock(tmp_path):
  made = fsutil.ensure_writable_dir(tmp_path / "new" / "run", "--workdir")
  with pytest.raises(UserError, match="refused"):
    with fsutil.exclusive(made, "--workdir"):
      (made / "cache").mkdir()  # an empty folder is nothing kept
      raise UserError("refused")
  assert not made.exists()
  given = tmp_path / "given"
  given.mkdir()  # the user's own folder stays, whatever happens in it
  with pytest.raises(UserError):
    with fsutil.exclusive(fsutil.ensure_writable_dir(given, "--workdir"), "--workdir"):
      raise UserError("refused")
  assert given.is_dir()
  worked = fsutil.ensure_writable_dir(tmp_path / "worked", "--workdir")
  with pytest.raises(UserError):
    with fsutil.exclusive(worked, "--workdir"):
      (worked / "config.json").write_text("{}")  # something written: the folder is kept
      raise UserError("refused")
  assert (worked / "config.json").is_file()
