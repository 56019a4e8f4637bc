"""Training runs as child processes, for the measurements that time whole runs (speedup, data benchmark)."""

import os
import sys

from absl import flags
from ml_collections import config_flags


def config_args(flag_name: str = "config") -> list[str]:
  """`--config=FILE` (absolute) and every `--config.key=value` override this process was given, so a child
  `jaxcxr.main` trains on the same config, from any working directory."""
  flag = flags.FLAGS[flag_name]
  overrides = config_flags.get_override_values(flag)
  return [f"--config={os.path.abspath(config_flags.get_config_filename(flag))}",
          *(f"--config.{key}={value if isinstance(value, str) else value!r}" for key, value in overrides.items())]


def training_command(platform: str, workdir: os.PathLike, config: list[str], *extra: str) -> list[str]:
  """The `python -m jaxcxr.main` command line of one training run; `extra` flags come last and win."""
  return [sys.executable, "-m", "jaxcxr.main", f"--platform={platform}", f"--workdir={os.path.abspath(workdir)}",
          *config, *extra]
