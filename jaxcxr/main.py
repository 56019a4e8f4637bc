"""The command line: train and evaluate a chest X-ray classifier on one platform, or describe a dataset.

  python run.py --platform=cpu                         # embedded synthetic default (run.py calls `run`)
  python -m jaxcxr.main --platform=cpu                 # the same, from an installed package
  python run.py --platform=gpu --data_dir=/data/nih --config=configs/paper.py
  python run.py --config.train.epochs=3                # any config key can be overridden
  python run.py --mode=describe --data_dir=/data/nih   # what the dataset holds; no training
  python run.py --mode=predict --workdir=runs/default-cpu --inputs=films/ scan.dcm --explain
  python run.py --mode=export --workdir=runs/default-cpu     # RUN/export/: model.jax and manifest.json
  python run.py --mode=evaluate --workdir=runs/nih --data_dir=/data/CheXpert-v1.0-small \
      --config.data.dataset=chexpert                          # external validation: RUN/external/chexpert/
"""

import logging
import os
import pathlib
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging

from jaxcxr import cli, devices, hostmem
from jaxcxr.data import images
from jaxcxr.errors import UserError

_CONFIG = cli.config_flag("default", "Config file.")
_WORKDIR = cli.path_flag("workdir", None, "Run folder (checkpoints, metrics, summary). "
                               "Default: runs/<config name>-<platform>.")
_PLATFORM = flags.DEFINE_enum("platform", "cpu", list(devices.PLATFORMS), "Device to train on.")
_DATA_DIR = cli.path_flag("data_dir", None, "Dataset folder (or .npz file); absent = embedded "
                                 "synthetic default.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "describe", "predict", "export", "evaluate"],
                          "train: train, evaluate, report. describe: report what the dataset holds from its "
                          "metadata, no training. predict: apply the --workdir run (or export folder) to --inputs. "
                          "export: write --workdir/export/, the run's network as jax.export StableHLO with its "
                          "manifest. evaluate: apply the --workdir run, unchanged, to another dataset's test split "
                          "(--data_dir, --config.data.dataset): external validation.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Several processes (hosts): process 0's HOST:PORT, "
                                   f"or '{devices.FROM_CLUSTER}' to read them from the cluster's environment.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "How many processes the run has (with "
                                      "--coordinator_address).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index, 0 .. --num_processes - 1.")
_INPUTS = flags.DEFINE_multi_string("inputs", [], "predict: films (PNG, JPEG, DICOM), folders of films or globs; "
                                    "paths after the flags are taken as inputs too.")
_EXPLAIN = flags.DEFINE_bool("explain", False, "predict: also write a class activation map over each film "
                             "(jaxcxr/explain.py).")
_ON_BAD_IMAGE = flags.DEFINE_enum("on_bad_image", images.STOP_AT_BAD_IMAGE, list(images.ON_BAD_IMAGE),
                                  "predict: stop at an unreadable film, or skip it and list it.")
_OUTPUT_NAME = flags.DEFINE_string("output_name", None, "predict: writes RUN/predictions/<name>.csv; default: the "
                                   "first input's name.")
_STRICT_INPUTS = flags.DEFINE_bool("strict_inputs", False, "predict: refuse films outside the model's scope (not a "
                                   "chest radiograph, or a lateral view for a frontal run) instead of flagging them.")
_EXTERNAL_SPLIT = flags.DEFINE_enum("external_split", "test", ["test", "all"], "evaluate: the other dataset's "
                                    "test split, or all its films (a dataset the run never saw any of).")
_PLATFORMS = flags.DEFINE_string("platforms", "cpu", "export: the platforms model.jax runs on, comma-separated "
                                 "(cpu, cuda, rocm).")


def _setup_logging() -> None:
  """jaxcxr's own progress at INFO; libraries (orbax logs every file it renames) at WARNING unless -v."""
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  package = logging.getLogger("jaxcxr")
  package.addHandler(handler)
  package.setLevel(logging.INFO)
  package.propagate = False
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)


# Flags that mean something in one mode only: given in another they would be ignored without a word.
_MODE_ONLY = {"predict": ("inputs", "explain", "on_bad_image", "output_name", "strict_inputs"),
              "export": ("platforms",), "evaluate": ("external_split",)}
# predict and export apply a finished run as its own config.json says: these would change nothing.
_APPLYING = ("predict", "export")
_TRAINING_ONLY = ("config", "data_dir", "coordinator_address", "num_processes", "process_id")
# evaluate applies the run on one device of --platform.
_NOT_FOR_EVALUATE = ("coordinator_address", "num_processes", "process_id")
# export lowers on the CPU for each of --platforms: a --platform would change nothing.
_NOT_FOR_EXPORT = ("platform",)


def _check_mode_flags(argv: list[str]) -> None:
  mode = _MODE.value
  if len(argv) > 1 and mode != "predict":  # a shell-expanded --inputs=*.png leaves paths behind
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  other_modes = {name: m for m, names in _MODE_ONLY.items() if m != mode for name in names}
  ignored = {name for name in other_modes if flags.FLAGS[name].present}
  modes = sorted({other_modes[n] for n in ignored})
  why = f"they apply to --mode={'/'.join(modes)} only; drop them" + (f", or add --mode={modes[0]}" if len(modes) == 1
                                                                      else "")
  if mode in _APPLYING:
    overrides = flags.FLAGS["config"].present or any(a.startswith("--config.") for a in sys.argv[1:])
    training = {name for name in _TRAINING_ONLY if flags.FLAGS[name].present} | ({"config"} if overrides else set())
    if training:
      ignored, why = ignored | training, f"{mode} applies the run's own config.json; drop them"
  unlowered = {name for name in _NOT_FOR_EXPORT if mode == "export" and flags.FLAGS[name].present}
  if unlowered and not ignored:
    ignored, why = unlowered, "export lowers on the CPU for each platform of --platforms (e.g. --platforms=cpu,cuda)"
  single = {name for name in _NOT_FOR_EVALUATE if mode == "evaluate" and flags.FLAGS[name].present}
  if single and not ignored:
    ignored, why = single, "evaluate applies the run in one process, on one device of --platform"
  if ignored:
    raise UserError(f"--{', --'.join(sorted(ignored))} would be ignored with --mode={mode}: {why}")


def main(argv):
  _check_mode_flags(argv)
  # After flags: keeps --help fast.
  from jaxcxr import checkpoints, experiment, export, external, predict  # pylint: disable=g-import-not-at-top
  from jaxcxr.data import describe  # pylint: disable=g-import-not-at-top
  from jaxcxr.fsutil import ensure_writable_dir, exclusive  # pylint: disable=g-import-not-at-top
  _setup_logging()
  config_name = pathlib.Path(cli.config_file(_CONFIG)).stem
  workdir = _WORKDIR.value or f"runs/{config_name}-{_PLATFORM.value}"
  try:
    if _MODE.value == "predict":  # the run's own config, not --config
      predict.run(workdir, [*_INPUTS.value, *argv[1:]], _PLATFORM.value, _ON_BAD_IMAGE.value, _EXPLAIN.value,
                  _OUTPUT_NAME.value, _STRICT_INPUTS.value)
      return
    if _MODE.value == "export":
      export.run(workdir, export.parse_platforms(_PLATFORMS.value))
      return
    # Validated before the device starts or any file is touched; a run resuming needs no init_from file.
    config = cli.load_config(_CONFIG, weights_needed=not checkpoints.saved_in(workdir))
    if _MODE.value == "evaluate":  # the run's own network; the config names the other dataset
      external.evaluate(workdir, config.data, _DATA_DIR.value, _PLATFORM.value, _EXTERNAL_SPLIT.value)
      return
    if _MODE.value == "describe":
      folder = ensure_writable_dir(workdir, "--workdir")
      with exclusive(folder, "--workdir"):
        describe.run(config.data, _DATA_DIR.value, folder)
      return
    if _PLATFORM.value == devices.CPU:
      # Before the CPU backend starts its threads: XLA:CPU's per-step buffers then stay mapped (hostmem).
      hostmem.retain_freed_memory()
    devices.start_processes(_PLATFORM.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if not devices.is_primary():  # one process speaks for the run; the others only warn
      logging.getLogger("jaxcxr").setLevel(logging.WARNING)
    used = devices.select_devices(_PLATFORM.value, config.train.num_devices)
    devices.log_devices(used)
    experiment.train_and_evaluate(config, workdir, used, _DATA_DIR.value)
  except UserError as e:
    _stop(f"error: {e}")
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    reason = (str(e).splitlines() or [type(e).__name__])[0][:300]
    _stop(f"error: process {jax.process_index()} lost another process of the run ({reason}); rerun every "
          "process with the same command to resume from the last checkpoint")


def _stop(line: str) -> None:
  """Exits 1 with `line`. In a run of several processes, at once: JAX's exit handler would wait at its shutdown
  barrier for processes that may be waiting for this one, until they all time out; exiting ends this process's
  heartbeat instead, so the others stop within `devices.HEARTBEAT_TIMEOUT_S`."""
  if jax.process_count() == 1:
    sys.exit(line)
  print(line, file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access


def run() -> None:
  cli.run(main)


if __name__ == "__main__":
  run()
