"""The networks, chosen by `config.model.name`; definitions only, no training code.

Each network has its own `model.*` keys (besides `name` and `dtype`), and a key
another network owns is refused. `paper_cnn` receives its convolution as a
module: `create_model` asks the convolution wing which lowering the platform
runs (`jaxcxr.conv.resolve`). The backbones (`resnet18`, `resnet50`,
`densenet121`) are torchvision's networks with BatchNorm; they receive their
convolution module from the wing too (`jaxcxr.conv.backbone_module`: on the CPU
each 1x1 convolution runs as a matmul and each stride-1 'same' one through the
lowering `auto` resolves to, elsewhere XLA's own convolutions);
`model.init_from` names a `.safetensors` file of ImageNet weights for them
(`weights.py`), applied by the training code to a fresh state.
"""

import dataclasses
import functools
import pathlib
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxcxr import conv
from jaxcxr.models import weights
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.densenet import DenseNetFeatures
from jaxcxr.models.layers import max_pool_2x2, prepare_input
from jaxcxr.models.paper_cnn import PaperCNN
from jaxcxr.models.resnet import ResNetFeatures


@dataclasses.dataclass(frozen=True)
class Network:
  """How to build one network from its own config keys (`keys`), and which values it can be built from:
  `sizes` are the keys that list positive layer counts or widths, `min_image_size(fields)` the smallest film
  its downsampling leaves at least one pixel of."""
  build: Callable[..., nn.Module]
  keys: tuple[str, ...]
  sizes: tuple[str, ...]
  min_image_size: Callable[[dict], int]
  takes_conv: bool = False  # receives the conv wing's stride-1 'SAME' module; else a backbone's (`backbone_module`)


def _backbone(features: Callable[..., nn.Module], dtype, outputs: int, conv_module: type = nn.Conv,
              **fields) -> nn.Module:
  fields.pop("init_from")  # read by the training code, not part of the definition
  return Classifier(features(dtype=dtype, conv_module=conv_module, **fields), dtype=dtype, outputs=outputs)


def _densenet_min_size(fields: dict) -> int:
  # The padded stem and max-pool round up (ceil(n / 4)); each transition's unpadded 2x2 average pool rounds
  # down, once per block after the first.
  return 4 * (2 ** (len(fields["block_sizes"]) - 1) - 1) + 1


_RESNET_KEYS = ("stage_sizes", "width", "init_from", "lowering")
MODELS = {
    # Each block ends in an unpadded 2x2 max-pool that rounds down.
    "paper_cnn": Network(PaperCNN, ("widths", "convs_per_block", "dense", "dropout", "lowering"),
                         ("widths", "convs_per_block", "dense"), lambda fields: 2 ** len(fields["widths"]),
                         takes_conv=True),
    # Every downsampling of a ResNet is padded and rounds up: any film keeps a pixel.
    "resnet18": Network(functools.partial(_backbone, functools.partial(ResNetFeatures, block="basic")),
                        _RESNET_KEYS, ("stage_sizes", "width"), lambda fields: 1),
    "resnet50": Network(functools.partial(_backbone, functools.partial(ResNetFeatures, block="bottleneck")),
                        _RESNET_KEYS, ("stage_sizes", "width"), lambda fields: 1),
    "densenet121": Network(functools.partial(_backbone, DenseNetFeatures),
                           ("block_sizes", "growth_rate", "init_features", "init_from", "lowering"),
                           ("block_sizes", "growth_rate", "init_features"), _densenet_min_size),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
COMMON_KEYS = ("name", "dtype")


def _own_fields(cfg: ml_collections.ConfigDict) -> dict:
  """The `model.*` keys that belong to the chosen network (all but the common ones)."""
  return {k: v for k, v in cfg.to_dict().items() if k not in COMMON_KEYS}

__all__ = ["DTYPES", "MODELS", "PaperCNN", "config_problems", "create_model", "max_pool_2x2", "prepare_input",
           "with_xla_convolutions"]


def config_problems(cfg: ml_collections.ConfigDict, image_size: int, weights_needed: bool = True) -> list[str]:
  """What stops `cfg` from building a network for films of `image_size` px, one phrase each (see
  `jaxcxr.config`): an unknown name or dtype, another network's keys or a missing one, impossible sizes, a
  missing weights file (unless not `weights_needed`: a run resuming from its checkpoint never reads it)."""
  if cfg.name not in MODELS:
    return [f"model.name={cfg.name!r} must be one of {', '.join(MODELS)}"]
  network = MODELS[cfg.name]
  fields = _own_fields(cfg)
  foreign, missing = sorted(set(fields) - set(network.keys)), sorted(set(network.sizes) - set(fields))
  if foreign or missing:
    return [f"model.{', model.'.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not a key of "
            f"model.name={cfg.name} (its keys: {', '.join(network.keys)}); start from a config written for "
            f"{cfg.name} (configs/) rather than overriding model.name"] if foreign else \
        [f"model.{', model.'.join(missing)} missing: model.name={cfg.name} needs {', '.join(network.keys)}"]
  found = [] if cfg.dtype in DTYPES else [f"model.dtype={cfg.dtype!r} must be one of {', '.join(DTYPES)}"]
  sizes_ok = True
  for key in network.sizes:
    value = fields[key]
    listed = isinstance(value, (tuple, list))
    counts = value if listed else (value,)
    # A paper CNN may have no hidden dense layer; every other list needs an entry.
    if (not counts and key != "dense") or any(not isinstance(n, int) or n < 1 for n in counts):
      found.append(f"model.{key}={value!r} must be {'positive whole numbers' if listed else 'at least 1'}")
      sizes_ok = False
  if "dropout" in fields and not 0.0 <= fields["dropout"] < 1.0:
    found.append(f"model.dropout={fields['dropout']!r} must be in [0, 1)")
  if "lowering" in fields and fields["lowering"] not in (*conv.LOWERINGS, conv.AUTO):
    found.append(f"model.lowering={fields['lowering']!r} must be one of {', '.join((*conv.LOWERINGS, conv.AUTO))}")
  weights_file = pathlib.Path(fields["init_from"]).expanduser() if fields.get("init_from") else None
  if weights_file and not weights_file.is_file() and weights_needed:
    found.append(f"model.init_from={fields['init_from']!r} is not a file (write one with torchvision: "
                 "docs/training.md, \"Networks and pretrained weights\")")
  elif weights_file and weights_file.exists() and (problem := weights.format_problem(weights_file)):
    found.append(f"model.init_from={fields['init_from']!r} {problem}")
  smallest = network.min_image_size(fields) if sizes_ok else 1
  if image_size < smallest:
    found.append(f"data.image_size={image_size} is smaller than the {smallest} px model.name={cfg.name} needs "
                 f"(its downsampling would leave no pixels); use data.image_size >= {smallest} or fewer stages")
  return found


def create_model(cfg: ml_collections.ConfigDict, platform: str = "cpu", outputs: int = 1,
                 devices: int = 1) -> tuple[nn.Module, str]:
  """`cfg.name` built from its own `model.*` keys (checked by `config_problems`) with `outputs` logits per film
  (one per target), and the convolution lowering it runs with on `platform` over `devices` devices
  (`model.lowering`, resolved by `jaxcxr.conv.resolve`; the backbones' from `jaxcxr.conv.backbone_module`)."""
  network = MODELS[cfg.name]
  fields = _own_fields(cfg)
  fields["dtype"], fields["outputs"] = DTYPES[cfg.dtype], outputs
  requested = fields.pop("lowering", conv.AUTO)  # a backbone run written before backbones had the key: auto
  if not network.takes_conv:
    module, lowering = conv.backbone_module(platform, requested, devices)
    return network.build(**fields, conv_module=module), lowering
  lowering = conv.resolve(requested, platform, devices=devices)
  return network.build(**fields, conv=conv.module(lowering)), lowering


def with_xla_convolutions(model: nn.Module) -> nn.Module:
  """`model` with XLA's own convolution in every layer, whatever lowering it was built with: the plain
  formulation, whose FLOPs XLA's cost analysis can count (the own lowerings loop or call compiled kernels)."""
  if isinstance(model, Classifier):
    return model.clone(backbone=model.backbone.clone(conv_module=nn.Conv))
  return model.clone(conv=conv.module(conv.XLA))
