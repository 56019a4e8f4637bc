"""The run signature (`config.run_signature`): what a checkpoint must match to be resumed."""

import pytest

from jaxcxr import config as config_lib
from jaxcxr.configs import tiny
from tests.support import override


def _signature(data_dir=None, **overrides):
  config = tiny.get_config()
  for key, value in overrides.items():
    override(config, key.replace("__", "."), value)
  return config_lib.run_signature(config, data_dir)


def test_settings_of_speed_saving_and_reporting_leave_the_signature_as_it_is():
  plain = _signature()
  for key, value in [("data.num_threads", 1), ("data.worker_processes", 2), ("data.cache_dir", "/elsewhere"),
                     ("model.lowering", "xla"), ("train.eval_batch_size", 16), ("train.num_devices", 2),
                     ("train.log_step_times", True), ("eval.bootstrap", 7), ("checkpoint.keep", 9),
                     ("logging.tensorboard", True)]:
    assert _signature(**{key.replace(".", "__"): value}) == plain, key
    assert key not in plain


@pytest.mark.parametrize("key,value", [("train.learning_rate", 3e-3), ("train.seed", 5), ("data.image_size", 48),
                                       ("model.widths", (8, 32)), ("data.augment.max_scale", 0.2)])
def test_what_changes_the_computation_changes_the_signature(key, value):
  assert _signature(**{key.replace(".", "__"): value})[key] != _signature()[key]


def test_a_moved_weights_file_leaves_the_signature_as_it_is():
  config = tiny.get_config("resnet18")
  signatures = [config_lib.run_signature(override(config, "model.init_from", path), None)
                for path in ("/data/resnet18.safetensors", "/elsewhere/resnet18.safetensors", "")]
  assert signatures[0] == signatures[1] == signatures[2] and "model.init_from" not in signatures[0]


def test_epochs_count_only_where_the_schedule_spans_the_run():
  assert "train.epochs" not in _signature()  # the tiny config's constant rate: more epochs continue a run
  cosine = _signature(train__schedule="warmup_cosine")
  assert cosine["train.epochs"] == 2 and _signature(train__schedule="warmup_cosine", train__epochs=3) != cosine


def test_the_dataset_folder_is_part_of_it_resolved(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "data").mkdir()
  assert _signature()["data_dir"] is None
  assert _signature("data")["data_dir"] == _signature(str(tmp_path / "data"))["data_dir"] == str(tmp_path / "data")


def test_tuples_and_the_lists_a_json_record_holds_compare_equal():
  assert _signature(model__widths=(8, 16))["model.widths"] == [8, 16]
