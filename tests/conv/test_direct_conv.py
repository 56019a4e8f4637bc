"""The compiled direct convolution: its build and cache, its failure modes, and its values against XLA."""

import jax
import numpy as np
import pytest

from jaxcxr import models
from jaxcxr.configs import default
from jaxcxr.conv import direct as direct_conv
from jaxcxr.conv import gemm
from jaxcxr.errors import UserError


def test_fits_only_float32_3x3_layers_with_whole_output_blocks():
  assert direct_conv.fits((2, 8, 8, 3), (3, 3, 3, 32), np.float32)
  assert not direct_conv.fits((2, 8, 8, 3), (3, 3, 3, 24), np.float32)  # 24 is not a multiple of 16
  assert not direct_conv.fits((2, 8, 8, 3), (5, 5, 3, 32), np.float32)
  assert not direct_conv.fits((2, 8, 8, 3), (3, 3, 3, 32), jax.numpy.bfloat16)


def test_build_is_cached_and_leaves_no_temporary_files(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCXR_CACHE_DIR", str(tmp_path))
  cxx = direct_conv.compiler()
  path = direct_conv.build(cxx)
  assert path.parent == tmp_path and path.is_file()
  built = path.stat().st_mtime_ns
  assert direct_conv.build(cxx) == path and path.stat().st_mtime_ns == built  # not rebuilt
  assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failing_compiler_is_reported_and_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXCXR_CACHE_DIR", str(tmp_path))
  monkeypatch.setenv("CXX", "false")  # exists, exits 1
  reason = direct_conv.load_library()
  assert isinstance(reason, str) and reason.startswith("building direct_conv.cc failed")
  assert list(tmp_path.iterdir()) == []


def test_a_missing_compiler_is_named(monkeypatch):
  monkeypatch.setenv("CXX", "no-such-compiler-here")
  assert direct_conv.load_library() == ("CXX=no-such-compiler-here is not a program on PATH "
                                        "(set CXX, or install g++ or clang++)")


def test_asking_for_direct_without_its_kernel_is_a_user_error(monkeypatch):
  monkeypatch.setattr(direct_conv, "unavailable_reason", lambda: "no C++ compiler found")
  with pytest.raises(UserError, match="lowering=direct needs its C\\+\\+ kernel, but no C\\+\\+ compiler found"):
    direct_conv.require()
  cfg = default.get_config().model
  cfg.lowering = "direct"
  with pytest.raises(UserError, match="choose model.lowering=winograd"):
    models.create_model(cfg, "cpu")


def test_direct_on_a_gpu_is_a_user_error():
  cfg = default.get_config().model
  cfg.lowering = "direct"
  with pytest.raises(UserError, match="cannot run on gpu"):
    models.create_model(cfg, "gpu")


# An odd batch (uneven split over threads, partial sums added up), a width that leaves a partial
# block of pixels, 20 input channels (a partial block of the kernel gradient's channels), 2 output blocks.
def test_forward_and_kernel_gradient_match_xla():
  x = jax.random.normal(jax.random.key(0), (5, 9, 13, 20))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 20, 32))
  g = jax.random.normal(jax.random.key(2), (5, 9, 13, 32))
  np.testing.assert_allclose(jax.jit(direct_conv.conv)(x, kernel), gemm.conv_xla(x, kernel), rtol=1e-5, atol=1e-4)
  expected = jax.vjp(lambda k: gemm.conv_xla(x, k), kernel)[1](g)[0]
  np.testing.assert_allclose(jax.jit(direct_conv.kernel_grad)(x, g), expected, rtol=1e-5, atol=1e-4)


def test_kernel_gradient_is_bitwise_reproducible():
  """Exact resume needs the same bits every call, however the pool's threads split the batch."""
  x = jax.random.normal(jax.random.key(3), (16, 12, 12, 16))
  g = jax.random.normal(jax.random.key(4), (16, 12, 12, 16))
  grad = jax.jit(direct_conv.kernel_grad)
  first = np.asarray(grad(x, g))
  for _ in range(20):
    np.testing.assert_array_equal(grad(x, g), first)


def test_kernel_gradient_of_an_empty_batch_is_zero():
  x, g = np.zeros((0, 4, 4, 3), np.float32), np.zeros((0, 4, 4, 16), np.float32)
  np.testing.assert_array_equal(jax.jit(direct_conv.kernel_grad)(x, g), np.zeros((3, 3, 3, 16), np.float32))
