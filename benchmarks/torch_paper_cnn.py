"""A PyTorch twin of `jaxcxr.models.PaperCNN` and its Adam train step, for side-by-side timing only.

Same layers and shapes (3x3 'same' convs + ReLU, 2x2 max-pools, flatten, dense
+ ReLU + dropout, one logit), same input scaling, loss and optimizer. PyTorch
is an optional benchmark extra (`pip install '.[bench]'`), never a runtime
dependency: it lives outside the package, and only `python -m jaxcxr.bench
--torch` loads it (by path, from the source checkout).
"""

import ml_collections
import numpy as np

from jaxcxr.devices import host_cores


def make_step(model_cfg: ml_collections.ConfigDict, image_size: int, learning_rate: float,
              images: np.ndarray, labels: np.ndarray, device: str = "cpu"):
  """Returns `step() -> loss`, one Adam update on `images` (B, H, W uint8) and `labels` per call.

  The batch is copied to `device` ('cpu' or 'cuda') once, as the JAX side's is.
  On CUDA, cuDNN picks each convolution's fastest algorithm (as XLA's autotuner
  does) and float32 matmuls may use TF32, as under XLA's default precision.
  `model_cfg.dtype == 'bfloat16'` runs the step under bf16 autocast, the
  counterpart of the JAX model's bf16 compute with float32 parameters.
  """
  import torch  # pylint: disable=g-import-not-at-top  # optional: only the benchmark needs it
  from torch import nn  # pylint: disable=g-import-not-at-top

  device = torch.device(device)
  if device.type == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
  else:
    torch.set_num_threads(host_cores())
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
  model = nn.Sequential(*layers).to(device).train()
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
