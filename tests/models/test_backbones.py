"""The backbones against torchvision itself: parameter counts, and a port of torchvision's weights that
gives torchvision's features; per-network config keys; BatchNorm in bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file

from jaxcxr import conv, models
from jaxcxr.configs import densenet121, resnet18, resnet50, tiny
from jaxcxr.errors import UserError
from jaxcxr.models import weights

CONFIGS = {"resnet18": resnet18, "resnet50": resnet50, "densenet121": densenet121}
# torchvision's own counts for each feature extractor (its model without the ImageNet classifier).
FEATURE_PARAMETERS = {"resnet18": 11_176_512, "resnet50": 23_508_032, "densenet121": 6_953_856}


def _model(name):
  model, lowering = models.create_model(CONFIGS[name].get_config().model)
  assert lowering == conv.backbone_module("cpu")[1]  # the CPU's reformulated convolutions
  return model


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_feature_extractor_has_torchvisions_parameter_count(name):
  model = _model(name)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert sum(x.size for x in jax.tree.leaves(variables["params"]["backbone"])) == FEATURE_PARAMETERS[name]
  torch_model = getattr(torchvision.models, name)(weights=None)
  head = torch_model.fc if name.startswith("resnet") else torch_model.classifier
  assert sum(p.numel() for p in torch_model.parameters()) - sum(p.numel() for p in head.parameters()) == \
      FEATURE_PARAMETERS[name]


def _random_batchnorm(torch_model, generator):
  """torchvision initialises BatchNorm to the identity; random statistics make the comparison mean something."""
  for module in torch_model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
      module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
      module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
      module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


def _torch_features(name, torch_model, x):
  if name.startswith("resnet"):
    return torch.flatten(torch.nn.Sequential(*list(torch_model.children())[:-1])(x), 1)
  return torch.flatten(torch.nn.functional.adaptive_avg_pool2d(torch.relu(torch_model.features(x)), 1), 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CONFIGS))
def test_imported_torchvision_weights_give_torchvisions_features(name, tmp_path):
  generator = torch.Generator().manual_seed(0)
  torch_model = getattr(torchvision.models, name)(weights=None)
  with torch.no_grad():
    _random_batchnorm(torch_model, generator)
  torch_model.eval()
  path = tmp_path / f"{name}.safetensors"
  save_file(torch_model.state_dict(), str(path))

  films = np.random.default_rng(0).integers(0, 256, (2, 64, 64)).astype(np.uint8)
  grey = models.prepare_input(jnp.asarray(films))  # (B, H, W, 1): a grey film is RGB with three equal channels
  model = _model(name)
  variables = weights.load_backbone(path, model.init(jax.random.key(0), grey, train=False))
  ours = model.backbone.apply({c: v["backbone"] for c, v in variables.items()}, grey, train=False)
  with torch.no_grad():
    theirs = _torch_features(name, torch_model, torch.from_numpy(np.array(grey)).permute(0, 3, 1, 2)
                             .repeat(1, 3, 1, 1)).numpy()
  assert ours.shape == theirs.shape
  np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


@pytest.mark.parametrize("written, read, problems", [
    ("resnet18", "resnet50", r"missing: layer1_0_conv3.weight, .*; mis-shaped: layer1_0_conv1.weight "
                             r"\(64, 64, 3, 3\) \(needs \(1, 1, 64, 64\)\)"),
    ("resnet50", "resnet18", r"unexpected: layer1_0_bn3.bias, .*; mis-shaped: ")])
def test_a_file_of_another_architecture_lists_what_does_not_fit(written, read, problems, tmp_path):
  path = tmp_path / f"{written}.safetensors"
  save_file(getattr(torchvision.models, written)(weights=None).state_dict(), str(path))
  model = _model(read)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 1)), train=False)
  with pytest.raises(UserError, match=f"does not fit this network \\({problems}") as e:
    weights.load_backbone(path, variables)
  assert "\n" not in str(e.value)


def test_a_missing_or_unreadable_file_is_one_line(tmp_path):
  variables = {"params": {}}
  with pytest.raises(UserError, match="is not a file"):
    weights.load_backbone(tmp_path / "none.safetensors", variables)
  (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
  with pytest.raises(UserError, match="is not a readable .safetensors file"):
    weights.load_backbone(tmp_path / "bad.safetensors", variables)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bfloat16_compute_keeps_float32_parameters_and_batchnorm_statistics(name):
  cfg = tiny.get_config(name).model
  cfg.dtype = "bfloat16"
  model, _ = models.create_model(cfg)
  x = models.prepare_input(jnp.zeros((2, 32, 32), jnp.uint8), model.dtype)
  variables = model.init(jax.random.key(0), x, train=False)
  logits, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert all(s.dtype == jnp.float32 for s in jax.tree.leaves(updated["batch_stats"]))
  assert logits.dtype == jnp.float32


def test_a_tensor_of_another_rank_is_named_as_mis_shaped(tmp_path):
  model = _model("resnet18")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
  state = torchvision.models.resnet18(weights=None).state_dict()
  state["conv1.weight"] = state["conv1.weight"][0]  # (3, 7, 7): right name, one axis short
  save_file(state, str(tmp_path / "r18.safetensors"))
  with pytest.raises(UserError, match=r"does not fit this network \(mis-shaped: conv1.weight \(3, 7, 7\) "
                                      r"\(needs \(7, 7, 1, 64\)\) \(1\)\)"):
    weights.load_backbone(tmp_path / "r18.safetensors", variables)


def test_integer_or_non_finite_weights_are_named_not_cast_or_trained_on(tmp_path):
  model = _model("resnet18")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
  state = torchvision.models.resnet18(weights=None).state_dict()
  state["conv1.weight"] = state["conv1.weight"].to(torch.int64)
  state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
  save_file(state, str(tmp_path / "r18.safetensors"))
  with pytest.raises(UserError, match=r"r18.safetensors does not fit this network \(not floating point: "
                                      r"conv1.weight int64 \(1\); NaN or infinite: layer1.0.conv1.weight \(1\)\)"):
    weights.load_backbone(tmp_path / "r18.safetensors", variables)


def test_a_weights_file_that_is_not_safetensors_is_refused_when_the_config_is_checked(tmp_path):
  from jaxcxr import config as config_lib  # pylint: disable=g-import-not-at-top
  (tmp_path / "notes.safetensors").write_text("not weights")
  torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pt")
  for name, expected in [("notes.safetensors", r"is not a .safetensors file;"),
                         ("resnet18.pt", r"is not a .safetensors file \(a PyTorch pickle or zip: save it with "
                                         r"safetensors.torch.save_file\)")]:
    config = tiny.get_config("resnet18")
    config.model.init_from = str(tmp_path / name)
    with pytest.raises(UserError, match=rf"model.init_from='.*{name}' {expected}"):
      config_lib.validate(config)
