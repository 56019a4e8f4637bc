"""PyTorch twins of jaxcxr's networks, their Adam train step and their forward pass, for side-by-side timing only.

`paper_cnn`: the same layers and shapes (3x3 'same' convs + ReLU, 2x2
max-pools, flatten, dense + ReLU + dropout, one logit). The backbones:
torchvision's own ResNet-18/50 and DenseNet-121 with the first convolution
taking one grey channel and a one-logit head, as jaxcxr builds them. Same
input scaling, loss and optimizer. PyTorch is an optional benchmark extra
(`pip install '.[bench]'`, torchvision too for the backbones), never a runtime
dependency: it lives outside the package, and only `python -m
jaxcxr.perf.bench --torch` loads it (by path, from the source checkout).
"""

import ml_collections
import numpy as np

from jaxcxr.devices import host_cores


def _placed(model_cfg: ml_collections.ConfigDict, image_size: int, device: str):
  """The twin network on `device` ('cpu' or 'cuda'), with the backend settings both timings share: on CUDA, cuDNN
  picks each convolution's fastest algorithm (as XLA's autotuner does), float32 matmuls may use TF32 (as under
  XLA's default precision) and the layout is channels_last (cuDNN's fast one, as XLA picks its own); on the CPU,
  one thread per core."""
  import torch  # pylint: disable=g-import-not-at-top  # optional: only the benchmark needs it

  device = torch.device(device)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
  else:
    torch.set_num_threads(host_cores())
  model = (_paper_cnn(model_cfg, image_size) if model_cfg.name == "paper_cnn" else _backbone(model_cfg)).to(device)
  if device.type == "cuda":
    model = model.to(memory_format=torch.channels_last)
  return model, device


def make_step(model_cfg: ml_collections.ConfigDict, image_size: int, learning_rate: float,
              images: np.ndarray, labels: np.ndarray, device: str = "cpu"):
  """Returns `step() -> loss`, one Adam update on `images` (B, H, W uint8) and `labels` per call.

  The batch is copied to `device` ('cpu' or 'cuda') once, as the JAX side's is.
  `model_cfg.dtype == 'bfloat16'` runs the step under bf16 autocast, the
  counterpart of the JAX model's bf16 compute with float32 parameters.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  model, device = _placed(model_cfg, image_size, device)
  model.train()
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
  loss_fn = nn.BCEWithLogitsLoss()
  pixels = torch.from_numpy(images).to(device)
  targets = torch.from_numpy(labels).float().to(device)
  bf16 = model_cfg.dtype == "bfloat16"

  def step() -> float:
    x = (pixels.float() - 127.5) / 64.0
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      logits = model(x[:, None])[:, 0]
    loss = loss_fn(logits.float(), targets)
    loss.backward()
    optimizer.step()
    return float(loss.detach())  # waits for the step, as the JAX side's block_until_ready does

  return step


def make_forward(model_cfg: ml_collections.ConfigDict, image_size: int, images: np.ndarray, device: str = "cpu"):
  """Returns `forward() -> logits`, the network in `eval()` mode (BatchNorm's running averages, no dropout)
  applied to `images` (B, H, W uint8) under `torch.inference_mode()`: what a deployed PyTorch model runs, the
  counterpart of `jaxcxr.inference.forward`. bf16 autocast as in `make_step`."""
  import torch  # pylint: disable=g-import-not-at-top

  model, device = _placed(model_cfg, image_size, device)
  model.eval()
  pixels = torch.from_numpy(images).to(device)
  bf16 = model_cfg.dtype == "bfloat16"

  def forward() -> np.ndarray:
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
      logits = model(((pixels.float() - 127.5) / 64.0)[:, None])
    return logits.float().cpu().numpy()  # waits for the pass

  return forward


def _paper_cnn(model_cfg: ml_collections.ConfigDict, image_size: int):
  from torch import nn  # pylint: disable=g-import-not-at-top
  layers, channels, size = [], 1, image_size
  for width in model_cfg.widths:
    for _ in range(model_cfg.convs_per_block):
      layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
      channels = width
    layers.append(nn.MaxPool2d(2))
    size //= 2
  layers.append(nn.Flatten())
  features = channels * size * size
  for units in model_cfg.dense:
    layers += [nn.Linear(features, units), nn.ReLU(), nn.Dropout(model_cfg.dropout)]
    features = units
  layers.append(nn.Linear(features, 1))
  return nn.Sequential(*layers)


# torchvision's stage sizes of each backbone: the twin exists for torchvision's own architectures.
_TORCHVISION = {"resnet18": ("stage_sizes", (2, 2, 2, 2)), "resnet50": ("stage_sizes", (3, 4, 6, 3)),
                "densenet121": ("block_sizes", (6, 12, 24, 16))}


def _backbone(model_cfg: ml_collections.ConfigDict):
  import torchvision  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  key, sizes = _TORCHVISION[model_cfg.name]
  if tuple(model_cfg[key]) != sizes or model_cfg.get("width", 64) != 64 or \
      model_cfg.get("growth_rate", 32) != 32 or model_cfg.get("init_features", 64) != 64:
    raise ValueError(f"the PyTorch twin is torchvision's {model_cfg.name}; model.{key}={tuple(model_cfg[key])} "
                     "and the other sizes must be torchvision's")
  model = getattr(torchvision.models, model_cfg.name)(weights=None, num_classes=1)
  if model_cfg.name.startswith("resnet"):
    model.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
  else:
    model.features.conv0 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
  return model
