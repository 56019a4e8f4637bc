"""--mode=export: the run's network as jax.export StableHLO, applied without the model code, and the ways a
damaged, foreign or mismatched export stops in one line."""

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pandas as pd
import pytest

from jaxcxr import conv, export, exported, inference, predict
from jaxcxr.configs import tiny
from jaxcxr.data import cache
from jaxcxr.errors import UserError
from jaxcxr.models import create_model
from jaxcxr.train_step import create_state
from tests.support import ROOT, run_command

pytestmark = pytest.mark.slow  # the default run, and an export per network


@pytest.fixture(scope="module")
def default_export(default_run, tmp_path_factory):
  """A copy of the README's default run, exported by the command line as a user would."""
  run = tmp_path_factory.mktemp("exported") / "run"
  shutil.copytree(default_run, run, ignore=shutil.ignore_patterns("cache", "predictions", ".lock"))
  result = run_command("--mode=export", f"--workdir={run}")
  assert result.returncode == 0, result.stderr
  assert f"exported the checkpoint of step {json.loads((run / 'summary.json').read_text())['step']}" in result.stdout
  return run / export.EXPORT_DIR


def _films(default_run, count):
  return cache.open_split(next((default_run / "cache").glob("test-*"))).images[:count]


@pytest.mark.parametrize("batch_size", [3, 64])
def test_the_export_predicts_what_the_run_does(default_run, default_export, batch_size):
  films = _films(default_run, 10)
  run = predict.load(default_run).network
  loaded = exported.load(default_export)
  loaded = dataclasses.replace(loaded, batch_size=batch_size)
  np.testing.assert_allclose(loaded.logits(films), run.logits(films), atol=1e-5)
  assert loaded.readout == run.readout and loaded.step == run.step
  manifest = json.loads((default_export / exported.MANIFEST).read_text())
  assert manifest["input"]["image_size"] == run.image_size and manifest["readout"]["temperatures"] == \
      list(run.readout.temperatures)


@pytest.mark.parametrize("network", ["resnet18", "resnet50", "densenet121"])
def test_each_backbone_exports_to_the_same_logits(network):
  config = tiny.get_config(network)
  config.model.lowering = conv.XLA  # as `export.run` builds it: the CPU kernels are not portable
  model, _ = create_model(config.model, outputs=1)
  state = create_state(model, optax.adam(1e-3), image_size=config.data.image_size, seed=0)
  # Batch statistics away from their initial values, so that eval mode's use of them is tested too.
  state = state.replace(batch_stats=jax.tree.map(lambda x: x + 0.1, state.batch_stats))
  network_ = inference.from_state(config, state, None, jax.device_put)
  serialized, _ = export.serialize(network_, ["cpu"])
  loaded = jax.export.deserialize(bytearray(serialized))
  films = np.random.default_rng(0).integers(0, 256, (5, 32, 32), dtype=np.uint8)
  for batch in (films[:1], films):
    np.testing.assert_allclose(np.asarray(loaded.call(batch)), network_.logits(batch), atol=1e-5)


_BLOCKED = """
import sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("flax", "orbax", "optax") or name.startswith("jaxcxr.models"):
      raise ImportError(f"{name} is blocked: an export must load without the model code")
sys.meta_path.insert(0, Block())
from jaxcxr import exported
from jaxcxr.data import images
network = exported.load(sys.argv[1])
film = images.load_film(sys.argv[2], network.image_size, network.aspect)
print(float(network.readout.probabilities(network.logits(film[None]))[0, 0]))
"""


def test_an_export_predicts_in_a_process_that_cannot_import_flax(default_run, default_export):
  film = next(next((default_run / "cache").glob("synthetic-nih-*")).glob("images/*.png"))
  blocked = subprocess.run([sys.executable, "-c", _BLOCKED, str(default_export), str(film)], capture_output=True,
                           text=True, cwd=ROOT, timeout=300, env={"JAX_PLATFORMS": "cpu", "PATH": ""})
  assert blocked.returncode == 0, blocked.stderr
  result = run_command("--mode=predict", f"--workdir={default_export}", str(film), "--output_name=one")
  assert result.returncode == 0, result.stderr
  table = pd.read_csv(default_export / "predictions" / "one.csv")
  assert float(blocked.stdout.strip()) == pytest.approx(table["p_Pneumonia"][0], abs=1e-6)
  # The run folder itself predicts the film alike, its convolutions lowered as it trained.
  assert predict.load(default_run)([film])["p_Pneumonia"][0] == pytest.approx(table["p_Pneumonia"][0], abs=1e-5)


def _copy(default_export, tmp_path):
  shutil.copytree(default_export, tmp_path / "export", ignore=shutil.ignore_patterns("predictions"))
  return tmp_path / "export"


def _edit_manifest(folder, **changes):
  manifest = json.loads((folder / exported.MANIFEST).read_text())
  (folder / exported.MANIFEST).write_text(json.dumps({**manifest, **changes}))


def test_a_changed_model_file_is_refused(default_export, tmp_path):
  folder = _copy(default_export, tmp_path)
  data = bytearray((folder / exported.MODEL_FILE).read_bytes())
  data[len(data) // 2] ^= 0xFF
  (folder / exported.MODEL_FILE).write_bytes(bytes(data))
  with pytest.raises(UserError, match=r"model.jax does not match its manifest \(SHA-256 .*export the run again"):
    exported.load(folder)


@pytest.mark.parametrize("changes, message", [
    (dict(calling_convention_version=3, jax_version="0.4.1"),
     r"was exported by JAX 0.4.1 with calling convention 3; this JAX .* reads versions \d+-\d+: export the run again"),
    (dict(format_version=99), "is export format version 99; this jaxcxr reads version 1"),
    (dict(format="something-else"), "is not a jaxcxr export manifest"),
])
def test_a_foreign_manifest_is_refused(default_export, tmp_path, changes, message):
  folder = _copy(default_export, tmp_path)
  _edit_manifest(folder, **changes)
  with pytest.raises(UserError, match=message) as error:
    exported.load(folder)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("field, value, message", [
    ("readout", None, r"TypeError"),
    ("temperatures", ["hot"], r"ValueError: could not convert string to float"),
    ("thresholds", [], r"1 targets but 0 thresholds and 1 temperatures"),
    ("temperatures", [0.0], r"a temperature that is not positive"),
    ("input", {"image_size": 64}, r"KeyError: 'aspect'"),
])
def test_a_manifest_whose_readout_or_input_is_malformed_is_damaged(default_export, tmp_path, field, value,
                                                                     message):
  folder = _copy(default_export, tmp_path)
  manifest = json.loads((folder / exported.MANIFEST).read_text())
  if field in manifest:
    manifest[field] = value
  else:
    manifest["readout"][field] = value
  (folder / exported.MANIFEST).write_text(json.dumps(manifest))
  with pytest.raises(UserError, match=rf"manifest.json is damaged \(.*{message}.*export the run again") as error:
    predict.load(folder)
  assert "\n" not in str(error.value)


def test_a_folder_that_is_no_export_and_a_damaged_manifest_are_named(default_export, tmp_path):
  with pytest.raises(UserError, match=r"is not a jaxcxr export \(no manifest.json\)"):
    exported.load(tmp_path)
  folder = _copy(default_export, tmp_path)
  (folder / exported.MANIFEST).write_text('{"format": "jaxcxr-exp')
  with pytest.raises(UserError, match=r"manifest.json is damaged \(JSONDecodeError"):
    predict.load(folder)


def test_an_export_for_another_platform_is_refused(default_run, tmp_path):
  network = inference.from_checkpoint(default_run, lowering=conv.XLA)
  folder = tmp_path / "cuda-only"
  folder.mkdir()
  serialized, convention = export.serialize(network, ["cuda"])
  (folder / exported.MODEL_FILE).write_bytes(serialized)
  (folder / exported.MANIFEST).write_text(json.dumps({
      "format": exported.FORMAT, "format_version": exported.FORMAT_VERSION, "calling_convention_version": convention,
      "sha256": hashlib.sha256(serialized).hexdigest()}))
  with pytest.raises(UserError, match="was exported for cuda, not this machine's cpu; export it again with "
                                      "--platforms=cuda,cpu"):
    exported.load(folder)


def test_export_flags_and_folders_fail_in_one_line(default_run, default_export, tmp_path):
  with pytest.raises(UserError, match=r"--platforms='tpu' must name one or more of cpu, cuda, rocm"):
    export.parse_platforms("tpu")
  assert export.parse_platforms(" CPU,cuda,cpu") == ("cpu", "cuda")
  with pytest.raises(UserError, match="holds no trained run"):
    export.run(tmp_path)
  with pytest.raises(UserError, match="--explain needs the run's model code, which an export leaves out"):
    predict.run(default_export, [str(next(default_run.glob("cache/synthetic-nih-*/images/*.png")))],
                explain_films=True)


def test_an_export_folder_given_where_a_run_is_needed_is_named(default_export):
  with pytest.raises(UserError, match="is an export, not a run folder: --mode=predict applies it, and the other modes "
                                      "take the run folder that holds it"):
    export.run(default_export)
