"""A PyTorch twin of `jaxcxr.models.PaperCNN` and its Adam train step, for side-by-side timing only.

Same layers and shapes (3x3 'same' convs + ReLU, 2x2 max-pools, flatten, dense
+ ReLU + dropout, one logit), same input scaling, loss and optimizer. PyTorch
is an optional benchmark extra (`pip install '.[bench]'`), never a runtime
dependency: it lives outside the package, and only `python -m jaxcxr.bench
--torch` loads it (by path, from the source checkout).
"""

import os

import ml_collections
import numpy as np


def make_step(model_cfg: ml_collections.ConfigDict, image_size: int, learning_rate: float):
  """Returns `step(images_uint8 (B, H, W), labels (B,)) -> loss`, one Adam update per call."""
  import torch  # pylint: disable=g-import-not-at-top  # optional: only the benchmark needs it
  from torch import nn  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(len(os.sched_getaffinity(0)))
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
  model = nn.Sequential(*layers).train()
  optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
  loss_fn = nn.BCEWithLogitsLoss()

  def step(images: np.ndarray, labels: np.ndarray) -> float:
    x = (torch.from_numpy(images).float() - 127.5) / 64.0
    y = torch.from_numpy(labels).float()
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x[:, None])[:, 0], y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())

  return step
