"""Class activation maps: where in a film a network's evidence for one target lies.

Each network marks its last convolutional feature map (`models.layers.explained_stage`); a map weighs that
stage's activations by the gradient of the target's logit with respect to them, sums over channels, keeps
only evidence *for* the target (ReLU) and is resized to the film. It differentiates through the network's own
`apply`, so it works for every network in the project, with or without BatchNorm. Two weightings:

- `gradcam` (Selvaraju et al. 2017): each channel weighted by its gradient averaged over positions.
- `hirescam` (Draelos & Carin 2020), the default: each activation weighted by its own gradient. Behind global
  average pooling and a linear head (ResNet, DenseNet) every position's gradient is the same, and the two
  maps are identical; behind the paper CNN's flattened dense head, averaging discards which position each
  weight belongs to, and only the element-wise map shows where the evidence is (measured in the README).
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from jaxcxr.models import prepare_input
from jaxcxr.models.layers import EXPLAINED_STAGE


def _stage(collection: dict) -> jax.Array:
  """The one explained map in a variable collection, wherever the network nests it."""
  found = [v for path, v in flax.traverse_util.flatten_dict(collection).items() if EXPLAINED_STAGE in path]
  if len(found) != 1:
    raise ValueError(f"expected one {EXPLAINED_STAGE!r} mark in the network, found {len(found)}")
  return found[0][0] if isinstance(found[0], tuple) else found[0]


METHODS = ("hirescam", "gradcam")


def class_activation_map(apply_fn: Any, dtype: Any, method: str, variables: dict, films: jax.Array,
                         targets: jax.Array) -> jax.Array:
  """(B, H, W) maps in [0, 1] for uint8 (B, H, W) `films`: `method`'s map of film i's logit `targets[i]` (0 for
  a single-target network), each film scaled by its own maximum (all zeros where no evidence is found). Jit it
  with `apply_fn`, `dtype` and `method` static."""
  images = prepare_input(films, dtype)
  _, marked = apply_fn(variables, images, train=False, mutable=["intermediates", "perturbations"])

  def explained_logits(perturbations):
    logits = apply_fn({**variables, "perturbations": perturbations}, images, train=False)
    logits = logits.reshape(films.shape[0], -1)
    # Films are independent in evaluation (BatchNorm uses its running averages): one gradient serves them all.
    return jnp.take_along_axis(logits, targets[:, None], axis=1).sum()

  gradients = jax.grad(explained_logits)(marked["perturbations"])
  activation = _stage(marked["intermediates"]).astype(jnp.float32)
  weights = _stage(gradients).astype(jnp.float32)
  if method == "gradcam":
    weights = weights.mean(axis=(1, 2), keepdims=True)
  cam = jax.nn.relu((weights * activation).sum(axis=-1))
  cam = jax.image.resize(cam, (cam.shape[0], *films.shape[1:]), method="bilinear")
  peak = cam.max(axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)


def peak_inside(heatmap: np.ndarray, opacity: tuple[float, float, float], film_size: int) -> bool:
  """Whether the heatmap's peak lies inside an opacity given as (row, column, sigma) in the pixels of the square
  film it was drawn on (`film_size` a side) before that film was resized to the heatmap's: within two sigmas
  of its centre, where the opacity still adds more than e^-2 (14%) of its peak brightness."""
  scale = heatmap.shape[0] / film_size
  row, col = ((opacity[0] + 0.5) * scale - 0.5, (opacity[1] + 0.5) * scale - 0.5)  # pixel centres, as resizing
  peak_row, peak_col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
  return bool((peak_row - row) ** 2 + (peak_col - col) ** 2 <= (2.0 * opacity[2] * scale) ** 2)


def peak_in_boxes(heatmap: np.ndarray, boxes: list[tuple[float, float, float, float]], film_size: int) -> bool:
  """The pointing game: whether the heatmap's peak pixel has its centre inside one of the boxes (x, y, width,
  height in the pixels of the square film, `film_size` a side, that the heatmap was computed over)."""
  scale = heatmap.shape[0] / film_size
  peak_row, peak_col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
  row, col = (peak_row + 0.5) / scale, (peak_col + 0.5) / scale
  return any(x <= col <= x + w and y <= row <= y + h for x, y, w, h in boxes)
