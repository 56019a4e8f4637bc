"""The networks, chosen by `config.model.name`; definitions only, no training code.

A network receives its convolution as a module. `create_model` asks the
convolution wing which lowering the platform runs (`jaxcxr.conv.resolve`) and
hands the network that lowering's module.
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxcxr import conv
from jaxcxr.errors import UserError
from jaxcxr.models.layers import max_pool_2x2, prepare_input
from jaxcxr.models.paper_cnn import PaperCNN

MODELS = {"paper_cnn": PaperCNN}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

__all__ = ["DTYPES", "MODELS", "PaperCNN", "create_model", "max_pool_2x2", "prepare_input"]


def create_model(cfg: ml_collections.ConfigDict, platform: str = "cpu") -> tuple[nn.Module, str]:
  """`cfg.name` built from the other `model.*` keys, and the convolution lowering it runs with on
  `platform` (`model.lowering`, resolved by `jaxcxr.conv.resolve`)."""
  if cfg.name not in MODELS:
    raise UserError(f"model.name={cfg.name!r} is unknown; choose one of {', '.join(MODELS)}")
  if cfg.dtype not in DTYPES:
    raise UserError(f"model.dtype={cfg.dtype!r}; choose one of {', '.join(DTYPES)}")
  lowering = conv.resolve(cfg.lowering, platform)
  fields = {k: v for k, v in cfg.to_dict().items() if k not in ("name", "lowering")}
  fields["dtype"] = DTYPES[fields["dtype"]]
  return MODELS[cfg.name](**fields, conv=conv.module(lowering)), lowering
