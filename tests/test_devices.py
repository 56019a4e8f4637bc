import jax
import pytest

from jaxcxr import devices
from jaxcxr.errors import UserError


def test_cpu_device():
  device = devices.select_devices("cpu", 1)[0]
  assert device.platform == "cpu"
  assert devices.record([device])["jax_version"] == jax.__version__


@pytest.mark.skipif(any(d.platform == "gpu" for d in jax.devices()), reason="a GPU is present")
def test_missing_gpu_names_problem_and_fix():
  with pytest.raises(UserError) as e:
    devices.select_devices("gpu", 1)[0]
  message = str(e.value)
  assert "no GPU backend" in message and "pip install '.[gpu]'" in message and "\n" not in message


def test_unknown_platform():
  with pytest.raises(UserError, match="unknown platform 'tpu'"):
    devices.select_devices("tpu", 1)[0]


def test_choosing_a_device_leaves_the_host_allocator_alone(monkeypatch):
  calls = []
  monkeypatch.setattr(devices.hostmem, "retain_freed_memory", lambda: calls.append("cpu") or True)
  devices.select_devices("cpu", 1)[0]
  assert calls == []


def test_run_summaries_record_whether_host_memory_is_retained(monkeypatch):
  for retained in (True, False):
    monkeypatch.setattr(devices.hostmem, "retained", lambda retained=retained: retained)
    assert devices.record([devices.select_devices("cpu", 1)[0]])["host_memory_retained"] is retained


def test_host_cores_follows_the_affinity_mask(monkeypatch):
  assert devices.host_cores() >= 1
  monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0}, raising=False)
  assert devices.host_cores() == 1
  monkeypatch.delattr(devices.os, "sched_getaffinity")  # macOS has none: every core counts
  monkeypatch.setattr(devices.os, "cpu_count", lambda: 6)
  assert devices.host_cores() == 6
