import jax
import jax.numpy as jnp

from jaxcxr import models
from jaxcxr.configs import default, paper


def _param_count(model, size):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 1)), train=False))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def test_output_is_one_logit_per_image():
  model = models.PaperCNN(widths=(4, 8), convs_per_block=1, dense=(8,))
  x = models.prepare_input(jnp.zeros((3, 32, 32), jnp.uint8))
  variables = model.init(jax.random.key(0), x, train=False)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (3,) and logits.dtype == jnp.float32


def test_parameter_count_matches_layer_arithmetic():
  model = models.PaperCNN(widths=(4, 8), convs_per_block=2, dense=(8,))
  convs = (9 * 1 * 4 + 4) + (9 * 4 * 4 + 4) + (9 * 4 * 8 + 8) + (9 * 8 * 8 + 8)
  dense = (8 * 8 * 8) * 8 + 8 + 8 * 1 + 1  # 32 px pooled twice -> 8x8x8 features
  assert _param_count(model, 32) == convs + dense


def test_paper_config_model_size():
  cfg = paper.get_config()
  count = _param_count(models.create_model(cfg.model)[0], cfg.data.image_size)
  # 180 px pooled 5 times -> 5x5x256 features into a 512-128-64 head: about 4.4 M parameters.
  assert 4_000_000 < count < 5_000_000


def test_bfloat16_compute_keeps_float32_params_and_logits():
  cfg = default.get_config().model
  cfg.dtype = "bfloat16"
  model, _ = models.create_model(cfg)
  x = models.prepare_input(jnp.zeros((2, 64, 64), jnp.uint8), model.dtype)
  variables = model.init(jax.random.key(0), x, train=False)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert model.apply(variables, x, train=False).dtype == jnp.float32
