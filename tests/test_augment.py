import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcxr import augment
from jaxcxr.configs import default


def _geometric(**overrides):
  cfg = default.get_config().data.augment
  cfg.update(overrides)
  return augment.GeometricAugment(cfg)


def test_geometric_keeps_shape_and_is_seeded():
  film = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
  batch = {"image": np.stack([film, film]), "label": np.array([1, 0], np.int32)}
  a = _geometric().random_map(batch, np.random.default_rng(5))
  b = _geometric().random_map(batch, np.random.default_rng(5))
  c = _geometric().random_map(batch, np.random.default_rng(6))
  assert a["image"].shape == (2, 32, 32) and a["image"].dtype == np.uint8
  np.testing.assert_array_equal(a["label"], [1, 0])
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  assert not np.array_equal(a["image"][0], a["image"][1])  # each film draws its own transform


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_geometric_with_zero_magnitudes_is_identity(interpolation):
  aug = _geometric(max_translate=0.0, max_scale=0.0, max_rotate_deg=0.0, interpolation=interpolation)
  films = np.random.default_rng(0).integers(0, 256, (3, 16, 16)).astype(np.uint8)
  out = aug.random_map({"image": films, "label": np.zeros(3)}, np.random.default_rng(0))
  np.testing.assert_allclose(out["image"].astype(int), films.astype(int), atol=1)


def test_geometric_never_flips():
  film = np.zeros((32, 32), np.uint8)
  film[:, :8] = 255  # bright band on the left edge
  out = _geometric().random_map({"image": np.stack([film] * 20), "label": np.zeros(20)},
                                np.random.default_rng(0))["image"]
  assert (out[:, :, :16].mean(axis=(1, 2)) > out[:, :, 16:].mean(axis=(1, 2)) + 50).all()


def test_photometric_per_film_within_bounds_and_seeded():
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 16, 16)).astype(np.uint8))
  a = augment.photometric(images, jax.random.key(1), 0.1, 0.05)
  b = augment.photometric(images, jax.random.key(1), 0.1, 0.05)
  c = augment.photometric(images, jax.random.key(2), 0.1, 0.05)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert float(a.min()) >= 0.0 and float(a.max()) <= 255.0 and a.dtype == jnp.float32
  # brightness moves each film's mean by at most 5% of the range (contrast pivots about the mean)
  shift = np.abs(np.asarray(a.mean(axis=(1, 2)) - images.astype(jnp.float32).mean(axis=(1, 2))))
  assert shift.max() <= 0.05 * 255 + 1e-3 and len(set(np.round(shift, 3))) > 1


def test_photometric_off_is_exact():
  images = jnp.arange(64, dtype=jnp.uint8).reshape(1, 8, 8)
  np.testing.assert_array_equal(augment.photometric(images, jax.random.key(0), 0.0, 0.0), images)


def test_params_follow_the_enabled_switch():
  cfg = ml_collections.ConfigDict(dict(enabled=False, contrast=0.1, brightness=0.05))
  assert augment.photometric_params(cfg) == (0.0, 0.0)
  cfg.enabled = True
  assert augment.photometric_params(cfg) == (0.1, 0.05)
