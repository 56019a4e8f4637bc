import importlib

import pytest

from tests.support import CONFIGS


def test_the_configs_are_found():
  assert {"default", "paper", "tiny", "resnet18", "densenet121", "bench_step"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_with_grouped_keys_and_a_run_command(name):
  module = importlib.import_module(f"jaxcxr.configs.{name}")
  config = module.get_config()
  assert {"data", "model", "train", "checkpoint"} <= set(config.keys())
  assert "python run.py" in module.__doc__


def test_paper_config_matches_the_paper():
  from jaxcxr.configs import paper
  config = paper.get_config()
  assert config.train.epochs == 10 and config.train.optimizer == "adam"
  assert config.data.image_size == 180 and config.train.batch_size == 16
  assert -(-4_200 // config.train.batch_size) == 263  # Keras counts the final partial batch
