"""Class activation maps: one mark per network, the two weightings, and whether they find the opacity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcxr import explain, workdir
from jaxcxr.configs import tiny
from jaxcxr.data import synthetic
from jaxcxr.models import MODELS, create_model, prepare_input

_explain = jax.jit(explain.class_activation_map, static_argnums=(0, 1, 2))


def _network(name: str, outputs: int = 1):
  config = tiny.get_config(name)
  model, _ = create_model(config.model, "cpu", outputs=outputs)
  size = config.data.image_size
  variables = model.init(jax.random.key(0), prepare_input(jnp.zeros((1, size, size), jnp.uint8)), train=False)
  return model, {k: v for k, v in variables.items() if k in ("params", "batch_stats")}, size


def _films(size: int, count: int = 4) -> jnp.ndarray:
  return jnp.asarray(np.random.default_rng(0).integers(0, 256, (count, size, size)), jnp.uint8)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_network_is_explained_at_its_last_convolutional_stage(name):
  model, variables, size = _network(name, outputs=3)
  maps = np.asarray(_explain(model.apply, jnp.float32, "hirescam", variables, _films(size), jnp.array([0, 1, 2, 0])))
  assert maps.shape == (4, size, size) and np.isfinite(maps).all()
  peaks = maps.max(axis=(1, 2))
  assert maps.min() >= 0.0 and np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))  # each map scaled to its peak
  assert np.isclose(peaks, 1.0).any()


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121"])
def test_behind_global_average_pooling_gradcam_and_hirescam_are_the_same_map(name):
  model, variables, size = _network(name)
  films, targets = _films(size), jnp.zeros(4, jnp.int32)
  np.testing.assert_allclose(_explain(model.apply, jnp.float32, "gradcam", variables, films, targets),
                             _explain(model.apply, jnp.float32, "hirescam", variables, films, targets), atol=1e-5)


def test_behind_the_paper_cnns_flattened_head_the_two_weightings_differ():
  model, variables, size = _network("paper_cnn")
  films, targets = _films(size), jnp.zeros(4, jnp.int32)
  gradcam = _explain(model.apply, jnp.float32, "gradcam", variables, films, targets)
  hirescam = _explain(model.apply, jnp.float32, "hirescam", variables, films, targets)
  assert float(jnp.abs(gradcam - hirescam).max()) > 0.1


def test_a_peak_is_inside_an_opacity_within_two_sigmas_of_its_centre_at_the_maps_scale():
  heatmap = np.zeros((64, 64))
  heatmap[10, 20] = 1.0
  # An opacity at (41.5, 81.5) of a 256 px film is at (10, 20) of the 64 px map (pixel centres line up).
  assert explain.peak_inside(heatmap, (41.5, 81.5, 1.0), 256)
  assert explain.peak_inside(heatmap, (41.5, 81.5 + 30, 16.0), 256)      # 7.5 px away at 64 px, 2 sigmas = 8
  assert not explain.peak_inside(heatmap, (41.5, 81.5 + 30, 12.0), 256)  # 2 sigmas = 6


def test_the_recorded_opacities_are_where_the_films_are_brighter():
  rng = np.random.default_rng(3)
  brighter = []
  for _ in range(30):
    film, opacities = synthetic.render_film_with_opacities(rng, 128, pneumonia=True)
    for row, col, sigma in opacities[:1]:
      mirrored = 127 - col  # the same place in the other lung
      brighter.append(film[round(row), round(col)] > film[round(row), round(mirrored)])
  assert np.mean(brighter) > 0.8


def test_on_the_default_run_the_map_peaks_inside_the_opacity_for_most_films(default_run):
  found = workdir.read_summary(default_run)["localisation"]
  assert found["films"] >= 10
  assert found["inside"]["hirescam"] > found["films"] / 2, found
