"""Shared fixtures: a tiny synthetic NIH-format dataset generated once per session, and tiny configs."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

from jaxcxr.configs import tiny  # noqa: E402
from jaxcxr.data import synthetic  # noqa: E402


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
def default_run(tmp_path_factory) -> pathlib.Path:
  """The README's default run (the paper CNN on the embedded synthetic films, 8 epochs), trained once per
  session: the run that predict, the explanations and the report are checked on."""
  import jax  # pylint: disable=g-import-not-at-top

  from jaxcxr import train  # pylint: disable=g-import-not-at-top
  from jaxcxr.configs import default  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp("default-run")
  train.train_and_evaluate(default.get_config(), workdir, jax.devices("cpu")[0])
  return workdir
