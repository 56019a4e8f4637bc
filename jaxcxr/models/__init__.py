"""The networks, chosen by `config.model.name`; definitions only, no training code.

Each network has its own `model.*` keys (besides `name` and `dtype`), and a key
another network owns is refused. `paper_cnn` receives its convolution as a
module: `create_model` asks the convolution wing which lowering the platform
runs (`jaxcxr.conv.resolve`). The backbones (`resnet18`, `resnet50`,
`densenet121`) are torchvision's networks with BatchNorm and use XLA's own
convolutions; `model.init_from` names a `.safetensors` file of ImageNet
weights for them (`weights.py`), applied by the training code to a fresh state.
"""

import dataclasses
import functools
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxcxr import conv
from jaxcxr.errors import UserError
from jaxcxr.models.classifier import Classifier
from jaxcxr.models.densenet import DenseNetFeatures
from jaxcxr.models.layers import max_pool_2x2, prepare_input
from jaxcxr.models.paper_cnn import PaperCNN
from jaxcxr.models.resnet import ResNetFeatures


@dataclasses.dataclass(frozen=True)
class Network:
  """How to build one network from its own config keys (`keys`)."""
  build: Callable[..., nn.Module]
  keys: tuple[str, ...]
  takes_conv: bool = False  # receives the conv wing's module for `model.lowering`


def _backbone(features: Callable[..., nn.Module], dtype, **fields) -> nn.Module:
  fields.pop("init_from")  # read by the training code, not part of the definition
  return Classifier(features(dtype=dtype, **fields), dtype=dtype)


MODELS = {
    "paper_cnn": Network(PaperCNN, ("widths", "convs_per_block", "dense", "dropout", "lowering"), takes_conv=True),
    "resnet18": Network(functools.partial(_backbone, functools.partial(ResNetFeatures, block="basic")),
                        ("stage_sizes", "width", "init_from")),
    "resnet50": Network(functools.partial(_backbone, functools.partial(ResNetFeatures, block="bottleneck")),
                        ("stage_sizes", "width", "init_from")),
    "densenet121": Network(functools.partial(_backbone, DenseNetFeatures),
                           ("block_sizes", "growth_rate", "init_features", "init_from")),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
COMMON_KEYS = ("name", "dtype")

__all__ = ["DTYPES", "MODELS", "PaperCNN", "create_model", "max_pool_2x2", "prepare_input"]


def create_model(cfg: ml_collections.ConfigDict, platform: str = "cpu") -> tuple[nn.Module, str]:
  """`cfg.name` built from its own `model.*` keys, and the convolution lowering it runs with on `platform`
  (`model.lowering`, resolved by `jaxcxr.conv.resolve`; XLA's own for the backbones)."""
  if cfg.name not in MODELS:
    raise UserError(f"model.name={cfg.name!r} is unknown; choose one of {', '.join(MODELS)}")
  if cfg.dtype not in DTYPES:
    raise UserError(f"model.dtype={cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
  network = MODELS[cfg.name]
  fields = {k: v for k, v in cfg.to_dict().items() if k not in COMMON_KEYS}
  foreign = sorted(set(fields) - set(network.keys))
  if foreign:
    raise UserError(f"model.{', model.'.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not a key of "
                    f"model.name={cfg.name} (its keys: {', '.join(network.keys)}); start from a config written for "
                    f"{cfg.name} (jaxcxr/configs/) rather than overriding model.name")
  fields["dtype"] = DTYPES[cfg.dtype]
  if not network.takes_conv:
    return network.build(**fields), conv.XLA
  lowering = conv.resolve(fields.pop("lowering", conv.AUTO), platform)
  return network.build(**fields, conv=conv.module(lowering)), lowering
