"""Pretrained weights from a local `.safetensors` file with torchvision's `state_dict` names.

The file is read with the `safetensors` package's NumPy API: no PyTorch and no pickle at run time, and
nothing is downloaded. Every tensor of the network's backbone is mapped by one rule: torchvision's module
path with `_` for `.` (below `features.` for DenseNet) names the flax module, and

  conv `weight` (O, I, H, W)        -> `kernel` (H, W, I, O)
  BatchNorm `weight`, `bias`        -> `scale`, `bias`
  BatchNorm `running_mean`, `_var`  -> batch_stats `mean`, `var`

The first convolution's RGB kernel is summed over its input channels into the network's one grey
channel (a grey film is an RGB image with three equal channels). `num_batches_tracked` is not used, and
the classifier (`fc`, `classifier`) is left out: the head is initialised fresh for this task's outputs.
Missing, unexpected or mis-shaped tensors stop the import with one line that lists them.
"""

import pathlib

import numpy as np
from flax import traverse_util

from jaxcxr.errors import UserError

# torchvision names the backbone's tensors below these prefixes; these modules are the ImageNet head.
_PREFIXES = ("features.",)
_HEADS = ("fc", "classifier")
_UNUSED = ("num_batches_tracked",)
_LEAVES = {"kernel": ("params", "weight"), "scale": ("params", "weight"), "bias": ("params", "bias"),
           "mean": ("batch_stats", "running_mean"), "var": ("batch_stats", "running_var")}


def _torch_name(module_path: tuple[str, ...], leaf: str) -> str:
  return "_".join(module_path) + "." + _LEAVES[leaf][1]


def _canonical(name: str) -> str | None:
  """A torchvision tensor name as `module_module.leaf`, or None for tensors the import does not use."""
  for prefix in _PREFIXES:
    name = name.removeprefix(prefix)
  module, _, leaf = name.rpartition(".")
  if leaf in _UNUSED or module.split(".")[0] in _HEADS:
    return None
  return module.replace(".", "_") + "." + leaf


def _to_flax(leaf: str, tensor: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
  if leaf != "kernel":
    return tensor
  kernel = tensor.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  if kernel.shape[2] == 3 and target_shape[2] == 1:
    kernel = kernel.sum(axis=2, keepdims=True)  # RGB into the grey channel
  return kernel


def format_problem(path: pathlib.Path) -> str | None:
  """Why `path` is not a safetensors file, read from its first bytes alone (an 8-byte little-endian header length,
  then a JSON header): a text file or a torch `.pt` pickle is refused when the config is checked, not after the
  cache is built. None where the header looks right."""
  try:
    with open(path, "rb") as f:
      head = f.read(9)
    size = path.stat().st_size
  except OSError as e:
    return f"cannot be read ({e.strerror or e})"
  length = int.from_bytes(head[:8], "little") if len(head) == 9 else 0
  if len(head) < 9 or not 0 < length <= size - 8 or head[8:9] != b"{":
    what = " (a PyTorch pickle or zip: save it with safetensors.torch.save_file)" if head[:2] in (b"PK", b"\x80\x02") \
        else ""
    return f"is not a .safetensors file{what}"
  return None


def load_backbone(path: str | pathlib.Path, variables: dict, backbone: str = "backbone") -> dict:
  """`variables` ({'params', 'batch_stats'}) with every tensor of the `backbone` submodule read from `path`."""
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise UserError(f"model.init_from={path} is not a file; write one with torchvision (docs/training.md, "
                    "'Networks and pretrained weights') or leave model.init_from empty to start from scratch")
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top  # only when importing weights
    tensors = load_file(str(path))
  except Exception as e:  # pylint: disable=broad-except  # safetensors raises its own error types
    raise UserError(f"model.init_from={path} is not a readable .safetensors file ({e})") from e
  available = {c: t for name, t in tensors.items() if (c := _canonical(name)) is not None}
  flat = {collection: traverse_util.flatten_dict(dict(variables.get(collection, {})))
          for collection in ("params", "batch_stats")}
  missing, misshaped, not_float, not_finite, used = [], [], [], [], set()
  out = {c: dict(f) for c, f in flat.items()}
  for collection, leaves in flat.items():
    for key, value in leaves.items():
      if key[0] != backbone:
        continue
      name = _torch_name(key[1:-1], key[-1])
      if name not in available:
        missing.append(name)
        continue
      used.add(name)
      # A tensor of another rank cannot be transposed into place: mis-shaped too, not a transpose error.
      array = _to_flax(key[-1], available[name], value.shape) if available[name].ndim == value.ndim else None
      if array is None or array.shape != value.shape:
        misshaped.append(f"{name} {tuple(available[name].shape)} (needs {value.shape})")
        continue
      # Integer tensors are not trained weights (a quantised or wrongly saved file); casting them would hide it.
      if not np.issubdtype(array.dtype, np.floating):
        not_float.append(f"{name} {array.dtype}")
        continue
      if not np.isfinite(array).all():
        not_finite.append(name)
        continue
      out[collection][key] = np.asarray(array, dtype=value.dtype)
  unexpected = sorted(set(available) - used)
  problems = [f"{label}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''} ({len(names)})"
              for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
                                   ("not floating point", not_float), ("NaN or infinite", not_finite))
              if names]
  if problems:
    raise UserError(f"model.init_from={path} does not fit this network ({'; '.join(problems)}); write the "
                    "file from the same torchvision architecture as model.name")
  return {c: traverse_util.unflatten_dict(f) for c, f in out.items() if f}
