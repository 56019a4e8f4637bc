"""The one validation pass over a config (`jaxcxr.config`): every bad value is named before any work starts."""

import importlib

import pytest

from jaxcxr import config as config_lib
from jaxcxr.configs import default, densenet121, kermany, paper, resnet18, tiny
from jaxcxr.errors import UserError
from tests.support import CONFIGS, override, run_command


@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_is_valid(name):
  assert config_lib.problems(importlib.import_module(f"jaxcxr.configs.{name}").get_config()) == []


@pytest.mark.parametrize("network", ["paper_cnn", "resnet18", "resnet50", "densenet121"])
def test_the_tiny_variants_are_valid(network):
  assert config_lib.problems(tiny.get_config(network)) == []


BAD = [  # (key, value, what the message must say)
    ("data.image_size", 0, "data.image_size=0 must be at least 8"),
    ("data.image_size", -4, "data.image_size=-4 must be at least 8"),
    ("data.dataset", "padchest", "data.dataset='padchest' must be one of nih, kermany, medmnist, chexpert, mimic"),
    ("data.aspect", "stretch", "data.aspect='stretch' must be one of pad, crop"),
    ("data.target", "Pneumonitis", "data.target='Pneumonitis' must be one of all, any, Atelectasis"),
    ("data.negatives", "others", "data.negatives='others' must be one of no_finding, rest"),
    ("data.val_fraction", 1.5, "data.val_fraction=1.5 must be in"),
    ("data.test_fraction", 0.9, "data.test_fraction=0.9 must be in (0, 1 - data.val_fraction)"),
    ("data.split_seed", -1, "data.split_seed=-1 must be at least 0"),
    ("data.on_bad_image", "ignore", "data.on_bad_image='ignore' must be one of error, skip"),
    ("data.num_threads", 0, "data.num_threads=0 must be at least 1"),
    ("data.prefetch", 0, "data.prefetch=0 must be at least 1"),
    ("data.augment.interpolation", "cubic", "data.augment.interpolation='cubic' must be one of nearest, bilinear"),
    ("data.augment.max_rotate_deg", 400.0, "data.augment.max_rotate_deg=400.0 must be in [0, 180]"),
    ("data.augment.contrast", -0.1, "data.augment.contrast=-0.1 must be in [0, 1)"),
    ("data.synthetic.num_patients", 2, "data.synthetic.num_patients=2 must be at least 10"),
    ("model.dropout", 1.5, "model.dropout=1.5 must be in [0, 1)"),
    ("model.dtype", "float61", "model.dtype='float61' must be one of float32, bfloat16"),
    ("model.widths", (16, 0), "model.widths=(16, 0) must be positive whole numbers"),
    ("model.widths", (), "model.widths=() must be positive whole numbers"),
    ("model.convs_per_block", 0, "model.convs_per_block=0 must be at least 1"),
    ("model.lowering", "fast", "model.lowering='fast' must be one of xla, gemm, winograd, direct, auto"),
    ("train.epochs", 0, "train.epochs=0 must be at least 1"),
    ("train.batch_size", 0, "train.batch_size=0 must be at least 1"),
    ("train.eval_batch_size", -5, "train.eval_batch_size=-5 must be at least 1 (0: train.batch_size)"),
    ("train.optimizer", "lion", "train.optimizer='lion' must be one of sgd, adam, adamw"),
    ("train.learning_rate", 0.0, "train.learning_rate=0.0 must be a positive number"),
    ("train.learning_rate", float("nan"), "train.learning_rate=nan must be a positive number"),
    ("train.momentum", 1.0, "train.momentum=1.0 must be in [0, 1)"),
    ("train.schedule", "cosine", "train.schedule='cosine' must be one of constant, warmup_cosine, plateau"),
    ("train.warmup_steps", -1, "train.warmup_steps=-1 must be at least 0"),
    ("train.plateau_factor", 1.5, "train.plateau_factor=1.5 must be in (0, 1)"),
    ("train.class_balance", "oversample", "train.class_balance='oversample' must be one of pos_weight, sampling"),
    ("eval.threshold", "median", "eval.threshold='median' must be a probability in (0, 1)"),
    ("eval.bootstrap", -1, "eval.bootstrap=-1 must be in [0, 100000]"),
    ("eval.bootstrap", 10**8, "eval.bootstrap=100000000 must be in [0, 100000]"),
    ("eval.confidence", 1.0, "eval.confidence=1.0 must be in (0, 1)"),
    ("checkpoint.keep", 0, "checkpoint.keep=0 must be at least 1"),
    ("checkpoint.every_steps", -1, "checkpoint.every_steps=-1 must be at least 0"),
    ("data.views", "pa", "data.views='pa' must list NIH's views, PA, AP (as the CSV spells them)"),
    ("data.views", "PA,LL", "data.views='PA,LL' must list NIH's views"),
    ("data.synthetic.test_fraction", 0.0, "data.synthetic.test_fraction=0.0 must be in (0, 1)"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_a_bad_value_is_named_in_one_line(key, value, message):
  with pytest.raises(UserError) as error:
    config_lib.validate(override(default.get_config(), key, value))
  text = str(error.value)
  assert message in text and "\n" not in text and text.startswith("invalid config: ")


def test_every_problem_is_reported_at_once():
  config = override(override(default.get_config(), "train.batch_size", 0), "model.dropout", 2.0)
  found = config_lib.problems(config)
  assert len(found) == 2 and any("train.batch_size" in p for p in found) and any("model.dropout" in p for p in found)


@pytest.mark.parametrize("make,size,smallest", [(kermany.get_config, 28, 32), (paper.get_config, 16, 32),
                                                (densenet121.get_config, 28, 29)])
def test_an_image_too_small_for_the_network_is_refused(make, size, smallest):
  config = override(make(), "data.image_size", size)
  with pytest.raises(UserError, match=rf"data.image_size={size} is smaller than .* use data.image_size >= {smallest}"):
    config_lib.validate(config)
  config_lib.validate(override(make(), "data.image_size", smallest))


def test_a_resnet_takes_any_image_size():  # its downsamplings are all padded
  config_lib.validate(override(resnet18.get_config(), "data.image_size", 8))


def test_a_key_of_another_network_is_refused():
  config = default.get_config()
  config.model.name = "resnet18"
  # model.lowering is both networks' key, so it is not named.
  with pytest.raises(UserError, match=r"model.convs_per_block, model.dense, model.dropout, model.widths are not "
                                      r"a key of model.name=resnet18 \(its keys: stage_sizes, width, init_from, "
                                      r"lowering\)"):
    config_lib.validate(config)


def test_an_unknown_network_is_refused():
  config = default.get_config()
  config.model.name = "resnet9000"
  with pytest.raises(UserError, match="model.name='resnet9000' must be one of paper_cnn, resnet18"):
    config_lib.validate(config)


def test_a_missing_weights_file_is_refused_before_any_work(tmp_path):
  config = densenet121.get_config()
  config.model.init_from = str(tmp_path / "nothere.safetensors")
  with pytest.raises(UserError, match="model.init_from=.*nothere.safetensors' is not a file"):
    config_lib.validate(config)
  config_lib.validate(config, weights_needed=False)  # a run folder with a checkpoint never reads the file


def test_combinations_that_cannot_work_are_refused():
  config = default.get_config()
  config.data.target, config.train.class_balance = "all", "sampling"
  with pytest.raises(UserError, match="train.class_balance='sampling' balances one target"):
    config_lib.validate(config)
  config = kermany.get_config()
  config.data.target = "all"
  with pytest.raises(UserError, match="data.target='all' names every finding of a multi-label dataset; data.dataset=kermany"):
    config_lib.validate(config)


@pytest.mark.parametrize("args,message", [
    (["--config.model.dtype=float61"], "model.dtype='float61' must be one of"),
    (["--config.data.image_size=0"], "data.image_size=0 must be at least 8"),
    (["--config=/no/such/file.py"], "--config=/no/such/file.py could not be loaded ([Errno 2]"),
    (["--config=tests/data/__init__.py"], "--config file could not be loaded: it defines no get_config()"),
    (["--config={dir}/dict.py"], "the config is a dict, not an ml_collections.ConfigDict"),
    (["--config={dir}/none.py"], "gives no config (Unexpected None value for flag config); its get_config() must"),
    (["--config={dir}/old.py"], "the config lacks eval.seed, train.seed (2 keys); build it on default.get_config()"),
    (["--workdir="], "flag --workdir=: is empty (an unset shell variable?)"),
], ids=["bad-value", "zero-size", "missing-file", "not-a-config", "a-dict", "none", "missing-keys", "empty-workdir"])
def test_the_command_line_stops_in_one_line_before_any_work(tmp_path, args, message):
  (tmp_path / "dict.py").write_text("def get_config():\n  return {'train': {}}\n")
  (tmp_path / "none.py").write_text("def get_config():\n  return None\n")
  (tmp_path / "old.py").write_text("from jaxcxr.configs import default\n\n\ndef get_config():\n"
                                   "  config = default.get_config()\n  del config.train['seed'], config.eval['seed']\n"
                                   "  return config\n")
  given = [a.format(dir=tmp_path) for a in args]
  workdir = [] if any(a.startswith("--workdir") for a in given) else [f"--workdir={tmp_path / 'run'}"]
  result = run_command(*workdir, *given)
  assert result.returncode != 0 and "Traceback" not in result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith(("error:", "FATAL Flags"))]
  assert len(lines) == 1 and message in lines[0], result.stderr[-1000:]
  assert not (tmp_path / "run" / "cache").exists()


def test_a_warmup_longer_than_the_run_is_refused_before_training(tiny_config, tmp_path):
  from jaxcxr import devices, experiment
  tiny_config.train.schedule, tiny_config.train.warmup_steps = "warmup_cosine", 500
  with pytest.raises(UserError, match=r"train.warmup_steps=500 is not below this run's 16 steps \(2 epochs of 8\)"):
    experiment.train_and_evaluate(tiny_config, tmp_path, devices.select_devices("cpu", 1)[0])
  assert not (tmp_path / "checkpoints").exists()


def test_a_path_flag_expands_the_home_folder_and_never_makes_a_folder_named_tilde(tmp_path, tiny_nih):
  home = tmp_path / "home"
  home.mkdir()
  result = run_command("--mode=describe", "--workdir=~/described", f"--data_dir={tiny_nih}",
                       env={"HOME": str(home)}, cwd=tmp_path)
  assert result.returncode == 0, result.stderr[-2000:]
  assert (home / "described" / "describe.json").is_file() and not (tmp_path / "~").exists()


def test_a_batch_larger_than_the_machines_memory_is_refused_before_any_work():
  config = tiny.get_config()
  config.data.image_size = 100_000  # the tiny config's 64-film evaluation batch: 2.4 TiB of float32
  with pytest.raises(UserError, match=r"data.image_size=100000 with a batch of 64 films: one float32 batch is "
                                      r"2384.2 GiB, more than this machine's .* GiB of memory"):
    config_lib.validate(config)


def test_views_are_refused_for_a_dataset_that_records_none():
  config = override(default.get_config(), "data.dataset", "kermany")
  config.data.views = "PA"
  with pytest.raises(UserError, match=r"data.views='PA' filters by view, which data.dataset=kermany does not "
                                      r"record; leave it empty"):
    config_lib.validate(config)


def test_a_cache_dir_that_is_a_file_is_named_as_such(tmp_path):
  config = tiny.get_config()
  (tmp_path / "cache").write_text("")
  config.data.cache_dir = str(tmp_path / "cache")
  with pytest.raises(UserError, match=r"data.cache_dir='.*/cache' is a file; point it at a folder, or leave it "
                                      r"empty for RUN/cache"):
    config_lib.validate(config)
