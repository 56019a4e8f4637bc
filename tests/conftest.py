"""Shared fixtures: a tiny synthetic NIH-format dataset generated once per session, tiny configs, and the runs
several tests read (trained once per session); the fast and slow tiers (`--runslow`)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

from jaxcxr.configs import tiny  # noqa: E402
from jaxcxr.data import synthetic  # noqa: E402


def pytest_addoption(parser):
  parser.addoption("--runslow", action="store_true",
                   help="also run the slow tier (tests marked slow): end-to-end, fault-injection, multi-process "
                        "and torchvision-reference tests")


def pytest_collection_modifyitems(config, items):
  """Without --runslow, the slow tier is deselected (not skipped: the fast tier's summary lists real skips)."""
  if config.getoption("--runslow"):
    return
  slow = [item for item in items if item.get_closest_marker("slow")]
  if slow:
    config.hook.pytest_deselected(items=slow)
    items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> pathlib.Path:
  """One cache folder for the whole session: the synthetic films and their preprocessed arrays."""
  return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_config(shared_cache):
  config = tiny.get_config()
  config.data.cache_dir = str(shared_cache)
  return config


@pytest.fixture(scope="session")
def tiny_nih(shared_cache) -> pathlib.Path:
  """The tiny config's synthetic dataset folder, in NIH on-disk format."""
  spec = synthetic.SyntheticSpec(**tiny.get_config().data.synthetic.to_dict())
  return synthetic.ensure_dataset(shared_cache, spec)


@pytest.fixture(scope="session")
def straight(tmp_path_factory, shared_cache):
  """The reference: the tiny config trained for its 2 epochs in one go, which resumed runs must match bit for
  bit. Tests read it and may rerun it; none changes it."""
  from tests.support import train_run  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.data.cache_dir = str(shared_cache)
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, train_run(config, workdir)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> pathlib.Path:
  """The README's default run (the paper CNN on the embedded synthetic films, 8 epochs), trained once per
  session: the run that predict, the explanations and the report are checked on."""
  from jaxcxr.configs import default  # pylint: disable=g-import-not-at-top
  from tests.support import train_run  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("default-run")
  train_run(default.get_config(), workdir, report=True)
  return workdir


@pytest.fixture(scope="session")
def chexpert_dir(tmp_path_factory) -> pathlib.Path:
  """A generated CheXpert-v1.0-small folder (tests/release_data.py): tests read it and change nothing in it."""
  from tests import release_data  # pylint: disable=g-import-not-at-top
  return release_data.write_chexpert(tmp_path_factory.mktemp("chexpert") / "CheXpert-v1.0-small")


@pytest.fixture(scope="session")
def mimic_dir(tmp_path_factory) -> pathlib.Path:
  """A generated MIMIC-CXR-JPG folder (tests/release_data.py): tests read it and change nothing in it."""
  from tests import release_data  # pylint: disable=g-import-not-at-top
  return release_data.write_mimic(tmp_path_factory.mktemp("mimic-cxr-jpg"))
