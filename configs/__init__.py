"""The config files (ml_collections `get_config()`), installed as `jaxcxr.configs`: `configs/` in a checkout."""

import pathlib


def path(name: str) -> str:
  """The file of config `name` (`default`, `paper`, ...), wherever the package is installed."""
  return str(pathlib.Path(__file__).parent / f"{name}.py")


EVERY_KEY = "configs/default.py"  # where a user reads every config key and what it means, for error messages
