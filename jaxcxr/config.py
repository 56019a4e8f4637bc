"""One validation pass over a run's config, before any work: every key's range and the combinations.

ml_collections already fixes each key's type (an override of the wrong type is
refused while the flags are parsed). What it cannot know is the range of a
value and which values go together; `validate` checks all of that at once and
reports every problem in one line, so a run never builds a cache, compiles or
trains with a config that would fail later. The names a key may take live with
the module that owns them and are imported from there.
"""

import math
from collections.abc import Iterator

import ml_collections
from absl import flags
from ml_collections import config_flags

from jaxcxr import augment, input_pipeline, metrics, models, optim
from jaxcxr.data import cache, datasets, images, nih
from jaxcxr.errors import UserError
from jaxcxr.report import tensorboard

MIN_IMAGE_SIZE = 8


def _choice(value, names) -> tuple[bool, str]:
  return value in names, f"must be one of {', '.join(map(str, names))}"


def _at_least(value, low: float) -> tuple[bool, str]:
  return value >= low, f"must be at least {low:g}"


def _within(value, low: float, high: float, closed_high: bool = False) -> tuple[bool, str]:
  ok = math.isfinite(value) and low <= value and (value <= high if closed_high else value < high)
  return ok, f"must be in [{low:g}, {high:g}{']' if closed_high else ')'}"


def _data_rules(d: ml_collections.ConfigDict) -> Iterator[tuple[str, object, tuple[bool, str]]]:
  yield "data.dataset", d.dataset, _choice(d.dataset, datasets.DATASETS)
  yield "data.image_size", d.image_size, _at_least(d.image_size, MIN_IMAGE_SIZE)
  yield "data.aspect", d.aspect, _choice(d.aspect, images.ASPECT_MODES)
  if d.dataset == datasets.NIH:
    yield "data.target", d.target, _choice(d.target, nih.TARGETS)
    yield "data.negatives", d.negatives, _choice(d.negatives, nih.NEGATIVE_POLICIES)
  elif d.target == nih.ALL_FINDINGS:
    yield "data.target", d.target, (False, f"names NIH's 14 findings; data.dataset={d.dataset} has one target")
  yield "data.val_fraction", d.val_fraction, (0.0 < d.val_fraction < 1.0, "must be in (0, 1)")
  yield "data.test_fraction", d.test_fraction, (0.0 < d.test_fraction < 1.0 - d.val_fraction,
                                                "must be in (0, 1 - data.val_fraction)")
  yield "data.split_seed", d.split_seed, _at_least(d.split_seed, 0)
  yield "data.on_bad_image", d.on_bad_image, _choice(d.on_bad_image, cache.BAD_IMAGE_POLICIES)
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
  for key in ("pneumonia_fraction", "other_finding_fraction", "test_fraction"):
    yield f"data.synthetic.{key}", s[key], _within(s[key], 0.0, 1.0)


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
  yield "eval.bootstrap", e.bootstrap, _at_least(e.bootstrap, 0)
  yield "eval.confidence", e.confidence, (0.0 < e.confidence < 1.0, "must be in (0, 1)")
  yield "eval.seed", e.seed, _at_least(e.seed, 0)


def problems(config: ml_collections.ConfigDict) -> list[str]:
  """Every problem of `config`, one phrase each (`key=value must ...`); empty when it is valid."""
  found = [f"{key}={value!r} {expect}"
           for key, value, (ok, expect) in (*_data_rules(config.data), *_train_rules(config.train, config.data.target),
                                            *_eval_rules(config.eval))
           if not ok]
  found += [f"checkpoint.{key}={config.checkpoint[key]!r} must be at least {low}"
            for key, low in (("every_steps", 0), ("keep", 1)) if config.checkpoint[key] < low]
  found += models.config_problems(config.model, config.data.image_size)
  if config.logging.tensorboard and not tensorboard.available():
    found.append(f"logging.tensorboard=True needs the {tensorboard.PACKAGE} package: pip install "
                 "'jaxcxr[tensorboard]', or leave logging.tensorboard off")
  return found


def from_flag(config_flag: flags.FlagHolder) -> ml_collections.ConfigDict:
  """A `DEFINE_config_file` flag's config with its overrides applied; UserError when the file cannot be loaded
  (ml_collections reports a missing file as a chained traceback when the value is first used)."""
  try:
    config = config_flag.value
    config.keys()  # a file that failed to load gives a stand-in that raises on first use
    return config
  except OSError as e:
    path = config_flags.get_config_filename(flags.FLAGS[config_flag.name])
    cause = next((line.strip() for line in str(e.__cause__ or e).splitlines() if "Errno" in line or "Error" in line),
                 type(e).__name__)
    raise UserError(f"--config={path} could not be loaded ({cause}); pass a config file such as "
                    "jaxcxr/configs/default.py") from e


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises one UserError naming every problem of `config` (see `problems`); returns when it is valid."""
  found = problems(config)
  if found:
    raise UserError(f"invalid config: {'; '.join(found)}; fix {'it' if len(found) == 1 else 'them'} in the "
                    "config file or its --config.KEY=VALUE overrides (every key: jaxcxr/configs/default.py)")



