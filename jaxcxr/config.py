"""One validation pass over a run's config, before any work: every key's range and the combinations.

ml_collections already fixes each key's type (an override of the wrong type is
refused while the flags are parsed). What it cannot know is the range of a
value and which values go together; `validate` checks all of that at once and
reports every problem in one line, so a run never builds a cache, compiles or
trains with a config that would fail later. The names a key may take live with
the module that owns them and are imported from there.

Two checks need what only the run knows, and are the only ones outside `validate`:
the batch sizes against the devices found (`check_device_count`), and the
schedule against the steps the data gives (`optim.check_steps`). The run's
signature (what a checkpoint must match to be resumed) is defined here too.
"""

import json
import math
import os
import pathlib
from collections.abc import Iterator

import ml_collections

from jaxcxr import augment, calibration, input_pipeline, metrics, models, optim
from jaxcxr.configs import EVERY_KEY
from jaxcxr.data import datasets, findings, images, nih
from jaxcxr.errors import UserError
from jaxcxr import tensorboard

MIN_IMAGE_SIZE = 8
MAX_BOOTSTRAP = 100_000


def _choice(value, names) -> tuple[bool, str]:
  return value in names, f"must be one of {', '.join(map(str, names))}"


def _at_least(value, low: float) -> tuple[bool, str]:
  return value >= low, f"must be at least {low:g}"


def _within(value, low: float, high: float, closed_high: bool = False) -> tuple[bool, str]:
  ok = math.isfinite(value) and low <= value and (value <= high if closed_high else value < high)
  return ok, f"must be in [{low:g}, {high:g}{']' if closed_high else ')'}"


def _dataset_rules(d: ml_collections.ConfigDict) -> Iterator[tuple[str, object, tuple[bool, str]]]:
  """The keys whose valid values depend on the dataset: data.target, data.negatives and data.views."""
  views = datasets.listed_views(d)
  choices = datasets.target_choices(d)
  if choices is not None:
    yield "data.target", d.target, _choice(d.target, choices)
    yield "data.negatives", d.negatives, _choice(d.negatives, nih.NEGATIVE_POLICIES)
  elif d.target == nih.ALL_FINDINGS:
    yield "data.target", d.target, (False, "names every finding of a multi-label dataset; "
                                           f"data.dataset={d.dataset} has one target")
  if datasets.is_joint(d):
    yield "data.views", d.views, (not views, "filters one dataset's views; leave it empty for a joint dataset")
  elif d.dataset in datasets.VIEWS:
    known = datasets.VIEWS[d.dataset]
    yield "data.views", d.views, (set(views) <= set(known),
                                  f"must list {datasets.TITLES[d.dataset]}'s views, {', '.join(known)} (as the CSV "
                                  "spells them), comma-separated, or be empty for all")
  elif views:
    yield "data.views", d.views, (False, f"filters by view, which data.dataset={d.dataset} does not record; "
                                         "leave it empty")


def _data_rules(d: ml_collections.ConfigDict) -> Iterator[tuple[str, object, tuple[bool, str]]]:
  parts = datasets.parts_of(d)
  if len(parts) == 1:
    yield "data.dataset", d.dataset, _choice(d.dataset, datasets.DATASETS)
  else:
    twice = sorted({p for p in parts if parts.count(p) > 1})
    yield "data.dataset", d.dataset, (not twice, f"names {', '.join(twice)} twice; name each dataset once")
    yield "data.dataset", d.dataset, (set(parts) <= set(datasets.JOINABLE),
                                      f"joins datasets of the common label space only: {', '.join(datasets.JOINABLE)}")
  yield "data.image_size", d.image_size, _at_least(d.image_size, MIN_IMAGE_SIZE)
  yield "data.aspect", d.aspect, _choice(d.aspect, images.ASPECT_MODES)
  known = d.dataset in datasets.DATASETS or (set(parts) <= set(datasets.JOINABLE) and len(set(parts)) == len(parts))
  if known:  # the dataset's own rules need a dataset to apply to
    yield from _dataset_rules(d)
  yield "data.uncertain", d.uncertain, _choice(d.uncertain, findings.UNCERTAIN_POLICIES)
  yield "data.val_fraction", d.val_fraction, (0.0 < d.val_fraction < 1.0, "must be in (0, 1)")
  yield "data.test_fraction", d.test_fraction, (0.0 < d.test_fraction < 1.0 - d.val_fraction,
                                                "must be in (0, 1 - data.val_fraction)")
  yield "data.split_seed", d.split_seed, _at_least(d.split_seed, 0)
  yield "data.on_bad_image", d.on_bad_image, _choice(d.on_bad_image, images.ON_BAD_IMAGE)
  cache_dir = pathlib.Path(d.cache_dir).expanduser() if d.cache_dir else None
  yield "data.cache_dir", d.cache_dir, (cache_dir is None or not cache_dir.exists() or cache_dir.is_dir(),
                                        "is a file; point it at a folder, or leave it empty for RUN/cache")
  yield "data.workers", d.workers, _at_least(d.workers, 0)
  yield "data.num_threads", d.num_threads, _at_least(d.num_threads, 1)
  yield "data.worker_processes", d.worker_processes, _at_least(d.worker_processes, 0)
  yield "data.prefetch", d.prefetch, _at_least(d.prefetch, 1)
  a = d.augment
  yield "data.augment.max_translate", a.max_translate, _within(a.max_translate, 0.0, 0.5)
  yield "data.augment.max_scale", a.max_scale, _within(a.max_scale, 0.0, 1.0)
  yield "data.augment.max_rotate_deg", a.max_rotate_deg, _within(a.max_rotate_deg, 0.0, 180.0, closed_high=True)
  yield "data.augment.brightness", a.brightness, _within(a.brightness, 0.0, 1.0)
  yield "data.augment.contrast", a.contrast, _within(a.contrast, 0.0, 1.0)
  yield "data.augment.interpolation", a.interpolation, _choice(a.interpolation,
                                                               tuple(augment.GeometricAugment.RESAMPLING))
  s = d.synthetic
  yield "data.synthetic.num_patients", s.num_patients, _at_least(s.num_patients, 10)
  yield "data.synthetic.max_images_per_patient", s.max_images_per_patient, _at_least(s.max_images_per_patient, 1)
  yield "data.synthetic.image_size", s.image_size, _at_least(s.image_size, images.MIN_SIDE)
  yield "data.synthetic.seed", s.seed, _at_least(s.seed, 0)
  for key in ("pneumonia_fraction", "other_finding_fraction"):
    yield f"data.synthetic.{key}", s[key], _within(s[key], 0.0, 1.0)
  # The generated test list names this share of the patients: none would leave the test split empty.
  yield "data.synthetic.test_fraction", s.test_fraction, (0.0 < s.test_fraction < 1.0, "must be in (0, 1)")


def _train_rules(t: ml_collections.ConfigDict, target: str) -> Iterator[tuple[str, object, tuple[bool, str]]]:
  yield "train.epochs", t.epochs, _at_least(t.epochs, 1)
  yield "train.batch_size", t.batch_size, _at_least(t.batch_size, 1)
  yield "train.num_devices", t.num_devices, _at_least(t.num_devices, 0)
  yield "train.eval_batch_size", t.eval_batch_size, (t.eval_batch_size >= 0, "must be at least 1 (0: train.batch_size)")
  yield "train.optimizer", t.optimizer, _choice(t.optimizer, optim.OPTIMIZERS)
  yield "train.learning_rate", t.learning_rate, (math.isfinite(t.learning_rate) and t.learning_rate > 0,
                                                 "must be a positive number")
  yield "train.momentum", t.momentum, _within(t.momentum, 0.0, 1.0)
  yield "train.weight_decay", t.weight_decay, _at_least(t.weight_decay, 0.0)
  yield "train.schedule", t.schedule, _choice(t.schedule, optim.SCHEDULES)
  yield "train.warmup_steps", t.warmup_steps, _at_least(t.warmup_steps, 0)
  yield "train.plateau_patience", t.plateau_patience, _at_least(t.plateau_patience, 1)
  yield "train.plateau_factor", t.plateau_factor, (0.0 < t.plateau_factor < 1.0, "must be in (0, 1)")
  yield "train.class_balance", t.class_balance, _choice(t.class_balance, input_pipeline.CLASS_BALANCE)
  if target == nih.ALL_FINDINGS:
    yield "train.class_balance", t.class_balance, (t.class_balance != input_pipeline.SAMPLING,
                                                   "balances one target; with data.target=all use pos_weight")
  yield "train.seed", t.seed, _at_least(t.seed, 0)


def _eval_rules(e: ml_collections.ConfigDict) -> Iterator[tuple[str, object, tuple[bool, str]]]:
  try:
    metrics.parse_threshold(e.threshold)
    threshold_ok = True
  except UserError:
    threshold_ok = False
  yield "eval.threshold", e.threshold, (threshold_ok, f"must be {', '.join(metrics.THRESHOLD_RULES)}")
  # Beyond this the interval's digits no longer move, while time and memory grow with every resample.
  yield "eval.bootstrap", e.bootstrap, (0 <= e.bootstrap <= MAX_BOOTSTRAP, f"must be in [0, {MAX_BOOTSTRAP}]")
  yield "eval.confidence", e.confidence, (0.0 < e.confidence < 1.0, "must be in (0, 1)")
  yield "eval.seed", e.seed, _at_least(e.seed, 0)
  yield "eval.calibration", e.calibration, _choice(e.calibration, calibration.METHODS)


def _memory_bytes() -> int | None:
  """This machine's physical memory, where the OS tells it."""
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def _memory_problems(config: ml_collections.ConfigDict) -> list[str]:
  """A batch of films as the step sees them (float32) that cannot fit in this machine's memory: refused here,
  not after the data is generated and the cache half built."""
  memory = _memory_bytes()
  size, batch = config.data.image_size, max(config.train.batch_size, eval_batch_size(config.train))
  need = batch * size * size * 4
  if memory is None or size < MIN_IMAGE_SIZE or batch < 1 or need <= memory:
    return []
  return [f"data.image_size={size} with a batch of {batch} films: one float32 batch is {need / 2**30:.1f} GiB, more "
          f"than this machine's {memory / 2**30:.1f} GiB of memory; lower data.image_size or the batch size"]


def problems(config: ml_collections.ConfigDict, weights_needed: bool = True) -> list[str]:
  """Every problem of `config`, one phrase each (`key=value must ...`); empty when it is valid. A run folder
  that holds a checkpoint needs no `model.init_from` file (`weights_needed=False`)."""
  found = [f"{key}={value!r} {expect}"
           for key, value, (ok, expect) in (*_data_rules(config.data), *_train_rules(config.train, config.data.target),
                                            *_eval_rules(config.eval))
           if not ok]
  found += [f"checkpoint.{key}={config.checkpoint[key]!r} must be at least {low}"
            for key, low in (("every_steps", 0), ("keep", 1)) if config.checkpoint[key] < low]
  found += models.config_problems(config.model, config.data.image_size, weights_needed)
  found += _memory_problems(config)
  if config.logging.tensorboard and not tensorboard.available():
    found.append(f"logging.tensorboard=True needs the {tensorboard.PACKAGE} package: pip install "
                 "'jaxcxr[tensorboard]', or leave logging.tensorboard off")
  return found


def _missing_keys(config: ml_collections.ConfigDict) -> list[str]:
  """The keys of configs/default.py that `config` lacks, outside `model` (whose keys are the network's own and
  are checked by `models.config_problems`)."""
  from jaxcxr.configs import default  # pylint: disable=g-import-not-at-top  # the one list of every key
  every = {k for k in _flatten(default.get_config().to_dict()) if not k.startswith("model.")}
  return sorted(every - set(_flatten(config.to_dict())))


def validate(config: ml_collections.ConfigDict, weights_needed: bool = True) -> None:
  """Raises one UserError naming every problem of `config` (see `problems`); returns when it is valid.

  A config file must give every key: one written before a key existed, or that deletes one, is refused with
  the missing keys named, rather than filled from the defaults behind the user's back."""
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f"the config is a {type(config).__name__}, not an ml_collections.ConfigDict; get_config() must "
                    f"return one, as {EVERY_KEY} does")
  missing = _missing_keys(config)
  if missing:
    raise UserError(f"the config lacks {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} "
                    f"({len(missing)} key{'s' if len(missing) > 1 else ''}); build it on default.get_config() and "
                    f"override what differs, as the configs in {EVERY_KEY.rsplit('/', 1)[0]}/ do")
  found = problems(config, weights_needed)
  if found:
    raise UserError(f"invalid config: {'; '.join(found)}; fix {'it' if len(found) == 1 else 'them'} in the "
                    f"config file or its --config.KEY=VALUE overrides (every key: {EVERY_KEY})")


def eval_batch_size(train: ml_collections.ConfigDict) -> int:
  """The batch size of evaluation and prediction: `train.eval_batch_size`, or the training batch size (0)."""
  return train.eval_batch_size or train.batch_size


def check_device_count(config: ml_collections.ConfigDict, count: int) -> None:
  """UserError unless the (global) batch sizes divide over the `count` devices the run found."""
  for key in ("batch_size", "eval_batch_size"):
    if config.train[key] % count:
      raise UserError(f"train.{key}={config.train[key]} does not divide over the run's {count} devices "
                      f"(the batch size is global); use a multiple of {count}, or train.num_devices")


# Keys that change how fast a run goes, how often it saves or how it reports, never what it computes: a run
# may resume across them. model.lowering computes the same gradients another way, and train.num_devices the
# same global batch over more devices (to float rounding). model.init_from is read at step 0 only: after it,
# the checkpoint holds those weights, so the file may move or go.
RESUMABLE_ACROSS = ("data.workers", "data.num_threads", "data.worker_processes", "data.prefetch", "data.cache_dir",
                    "model.init_from", "model.lowering", "train.log_step_times", "train.eval_batch_size", "train.num_devices", "eval.",
                    "checkpoint.", "logging.")


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def run_signature(config: ml_collections.ConfigDict, data_dir: str | None) -> dict:
  """Everything that decides what a run computes, as dotted keys: a checkpoint written under another signature
  would mix two runs, so it is not resumed. `train.epochs` counts only where the schedule spans the whole run
  (raising it otherwise continues a finished run)."""
  flat = {k: v for k, v in _flatten(config.to_dict()).items() if not k.startswith(RESUMABLE_ACROSS)}
  if not optim.spans_the_run(config.train):
    flat.pop("train.epochs")
  flat["data_dir"] = str(pathlib.Path(data_dir).expanduser().resolve()) if data_dir else None
  # Through JSON, so tuples compare equal to the lists a restored JSON item holds.
  return json.loads(json.dumps(flat))
