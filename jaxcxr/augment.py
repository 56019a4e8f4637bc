"""Augmentation, split by where each part is cheapest: geometry on the host, photometry on the device.

The geometric part (a small random shift, scale and rotation) resamples
pixels, which PIL does in C per film inside the grain pipeline. The
photometric part (brightness and contrast) is two numbers per film applied
elementwise: inside the jitted train step it costs next to nothing on any
device, where on the host it would double the per-film work. Both are seeded
by position: the geometric part by the batch's index in the stream, the
photometric part by the step, so a resumed run sees the same augmentations.
Horizontal flips are never used: laterality matters in chest films (the heart
sits on the left), so a mirrored film is not a plausible film.
"""

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image


class GeometricAugment(grain.transforms.RandomMap):
  """Per film, a random affine warp in PIL: nearest (default, as torchvision's RandomAffine; at
  <=5 degrees and <=5% scale it moves no pixel by more than one) or bilinear (dearer: the README's
  input-pipeline table)."""

  RESAMPLING = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR}

  def __init__(self, cfg: ml_collections.ConfigDict, rows: slice | None = None, batch_size: int | None = None):
    """`rows` of a batch of `batch_size`: the films given are those rows, warped as in the whole batch (one
    process's share of it); None: the films are the whole batch."""
    self.cfg, self.rows, self.batch_size = cfg, rows, batch_size

  def random_map(self, batch: dict, rng: np.random.Generator) -> dict:
    cfg, films = self.cfg, batch["image"]
    n, size = films.shape[0], films.shape[1]
    limits = np.array([cfg.max_rotate_deg, cfg.max_scale, cfg.max_translate, cfg.max_translate])
    draws = rng.uniform(-1.0, 1.0, (self.batch_size or n, 4))  # every row's, so a share warps as the whole
    angle, scale, tx, ty = (draws[self.rows or slice(None)] * limits).T
    angle, scale, tx, ty = np.radians(angle), 1.0 + scale, tx * size, ty * size
    # PIL maps each output pixel to an input pixel: invert rotate+scale about the centre, then shift.
    c = (size - 1) / 2.0
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    matrices = np.stack([cos, sin, c - cos * (c + tx) - sin * (c + ty),
                         -sin, cos, c + sin * (c + tx) - cos * (c + ty)], axis=1)
    resample = self.RESAMPLING[cfg.interpolation]
    out = np.empty_like(films)
    for i in range(n):
      out[i] = np.asarray(Image.fromarray(films[i]).transform(
          (size, size), Image.Transform.AFFINE, tuple(matrices[i]), resample=resample))
    return {"image": out, "label": batch["label"]}


def photometric_params(cfg: ml_collections.ConfigDict) -> tuple[float, float]:
  """(contrast, brightness) magnitudes for the train step; zeros when augmentation is off."""
  return (float(cfg.contrast), float(cfg.brightness)) if cfg.enabled else (0.0, 0.0)


def photometric(images: jax.Array, key: jax.Array, contrast: float, brightness: float) -> jax.Array:
  """Per film, contrast about its mean grey level and a brightness shift, clipped to [0, 255].

  `images` are (B, H, W) grey levels of any dtype; returns float32.
  """
  images = images.astype(jnp.float32)
  if contrast == 0.0 and brightness == 0.0:
    return images
  u = jax.random.uniform(key, (images.shape[0], 2, 1, 1), minval=-1.0, maxval=1.0)
  mean = images.mean(axis=(1, 2), keepdims=True)
  out = (images - mean) * (1.0 + contrast * u[:, 0]) + mean + 255.0 * brightness * u[:, 1]
  return jnp.clip(out, 0.0, 255.0)
