"""What every absl command shares (`run.py`/`jaxcxr.main`, `jaxcxr.perf.bench`, `.data_bench`, `.speedup`): the
`--config` flag, flag parsing and the config's loading, each failing in one line that names the problem and the
fix, and the `error: ...` exit for a `UserError` raised anywhere in the command.

  _CONFIG = cli.config_flag("bench_step", "Config whose model is benchmarked.")
  def main(argv):
    config = cli.load_config(_CONFIG)   # loaded, overrides applied, validated
  if __name__ == "__main__":
    cli.run(main)
"""

import gc
import os
import sys
from collections.abc import Callable

import ml_collections
from absl import app, flags
from ml_collections import config_flags

import jaxcxr.configs
from jaxcxr.configs import EVERY_KEY
from jaxcxr.errors import UserError


def _bad_override(e: Exception):
  """ml_collections applies `--config.x.y` overrides while defining and parsing the flag."""
  detail = " ".join(str(e).encode().decode("unicode_escape").replace("'", "").split())
  sys.exit(f"error: unknown config key in a --config override ({detail}); the keys are listed in {EVERY_KEY}")


def config_flag(default: str, help_text: str) -> flags.FlagHolder:
  """`--config` (a config file, `configs/<default>.py` when absent) with its `--config.KEY=VALUE` overrides."""
  try:
    return config_flags.DEFINE_config_file("config", jaxcxr.configs.path(default), help_text, lock_config=True)
  except (AttributeError, KeyError) as e:
    _bad_override(e)


class _PathParser(flags.ArgumentParser):
  """A path flag's value with `~` expanded: the shell leaves `--workdir=~/run` as it is, and a folder named `~`
  would be created. An empty value (an unset variable in a script) is refused rather than taken as absent."""
  syntactic_help = "a file or folder; ~ is your home"

  def parse(self, argument: str) -> str:
    if not argument:
      raise ValueError("is empty (an unset shell variable?); give a path or leave the flag out")
    return os.path.expanduser(argument)

  def flag_type(self) -> str:
    return "path"


def path_flag(name: str, default: str | None, help_text: str) -> flags.FlagHolder:
  """A string flag naming a file or folder, `~` expanded (`_PathParser`)."""
  return flags.DEFINE(_PathParser(), name, default, help_text, serializer=flags.ArgumentSerializer())


def _raised_by_the_config_file(e: Exception) -> bool:
  """Whether `e` came from inside a config file's `get_config()`, not from applying an override."""
  tb = e.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_name == "get_config":
      return True
    tb = tb.tb_next
  return False


def _given_twice(argv: list[str]) -> str | None:
  """The first flag `argv` gives twice with different values (absl would keep the last without a word)."""
  seen: dict[str, str] = {}
  for i, arg in enumerate(argv[1:], start=1):
    if arg == "--":
      break
    if not arg.startswith("--"):
      continue
    name, eq, value = arg[2:].partition("=")
    flag = flags.FLAGS[name] if name in flags.FLAGS else None
    if not eq and flag is None and name.startswith("no") and name[2:] in flags.FLAGS:
      name, value, flag = name[2:], "false", flags.FLAGS[name[2:]]
    elif not eq:
      following = argv[i + 1] if i + 1 < len(argv) else ""
      value = "true" if isinstance(flag, flags.BooleanFlag) or following.startswith("-") else following
    if isinstance(flag, flags.MultiFlag):
      continue
    if name in seen and seen[name] != value:
      return f"--{name} is given twice ({seen[name]!r} and {value!r}); give it once"
    seen.setdefault(name, value)
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, plus one line for a config file that fails to load, a `--config.x.y` that names no key, or
  a flag given twice with different values."""
  twice = _given_twice(argv)
  if twice:
    sys.exit(f"error: {twice}")
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    if "get_config" in str(e):
      sys.exit(f"error: the --config file could not be loaded: it defines no get_config(); start from {EVERY_KEY}")
    if not _raised_by_the_config_file(e):
      _bad_override(e)
    sys.exit(f"error: the --config file could not be loaded: its get_config() raised {type(e).__name__}: {e}; "
             f"fix the file, or start from {EVERY_KEY}")
  except Exception as e:  # pylint: disable=broad-except  # the config file's own code failed while it loaded
    where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
    sys.exit(f"error: the --config file could not be loaded: {type(e).__name__}: {e.msg if where else e}{where}; "
             f"fix the file, or start from {EVERY_KEY}")


def config_file(holder: flags.FlagHolder) -> str:
  """The path the `--config` flag names."""
  return config_flags.get_config_filename(flags.FLAGS[holder.name])


def load_config(holder: flags.FlagHolder, weights_needed: bool = True) -> ml_collections.ConfigDict:
  """The `--config` flag's config with its overrides applied, validated once (`jaxcxr.config.validate`), before
  any work; UserError when the file cannot be loaded or the config is invalid."""
  from jaxcxr import config as config_lib  # pylint: disable=g-import-not-at-top  # after flags: keeps --help fast
  try:
    config = holder.value
    config.keys()  # a file that failed to load gives a stand-in that raises on first use
  except flags.IllegalFlagValueError as e:  # absl refuses the None that get_config() returned
    raise UserError(f"--config={config_file(holder)} gives no config ({e}); its get_config() must return an "
                    f"ml_collections.ConfigDict, as {EVERY_KEY} does") from e
  except OSError as e:  # ml_collections reports a missing file as a chained traceback when the value is first used
    cause = next((line.strip() for line in str(e.__cause__ or e).splitlines() if "Errno" in line or "Error" in line),
                 type(e).__name__)
    raise UserError(f"--config={config_file(holder)} could not be loaded ({cause}); pass a config file such as "
                    f"{EVERY_KEY}") from e
  config_lib.validate(config, weights_needed)
  return config


INTERRUPTED_EXIT = 128 + 2  # the shell's code for a command ended by SIGINT


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` with this module's flag parser; a UserError from `main` exits 1 with `error: <its line>`,
  and Ctrl-C (SIGINT) exits 130 with one line, once every `finally` on the way out has run."""
  def guarded(argv: list[str]) -> None:
    try:
      main(argv)
    except UserError as e:
      sys.exit(f"error: {e}")
    except KeyboardInterrupt:
      print("error: interrupted (Ctrl-C); what was finished is kept, and the same command goes on from the last "
            "checkpoint or finished file", file=sys.stderr, flush=True)
    else:
      return
    # Past the except block, the traceback and the frames it held are gone: what the interrupted work left (a
    # decoding pool's semaphores) can be finalized. Then not sys.exit: interpreter shutdown while XLA's and the
    # input pipeline's threads still run can crash.
    sys.stdout.flush()
    gc.collect()
    os._exit(INTERRUPTED_EXIT)  # pylint: disable=protected-access
  app.run(guarded, flags_parser=parse_flags)
