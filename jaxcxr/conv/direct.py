"""Direct 3x3 convolutions for the CPU as a small C++ kernel, compiled on first use and called through XLA's FFI.

Why a compiled kernel: the narrow, large layers of the paper CNN (16-64
channels at 224-56 px) are memory-bound in every formulation XLA offers
(its own convolution, patch GEMMs, Winograd), because each materializes a
patch or tile matrix several times the activations. A direct convolution
keeps a block of outputs in vector registers and reads each input once; it
is what PyTorch's oneDNN runs (its per-layer timings: `python -m jaxcxr.perf.bench --layers`,
README "Where the time goes").

`direct_conv.cc` is compiled with the host's C++ compiler (`$CXX`, else
c++/g++/clang++) for this CPU (-march=native) against the FFI headers that
ship with jaxlib, once per source, jaxlib and CPU, into the cache folder
(`$JAXCXR_CACHE_DIR`, else `$XDG_CACHE_HOME/jaxcxr` or `~/.cache/jaxcxr`).
Nothing is downloaded. Without a compiler `available()` is False and the
`auto` lowering keeps to pure XLA (`policy.resolve`).
"""

import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp

from jaxcxr.errors import UserError

log = logging.getLogger(__name__)

SOURCE = pathlib.Path(__file__).with_name("direct_conv.cc")
# Output channels (forward) and gradient channels (kernel gradient) must come in whole register blocks
# (kBlock in direct_conv.cc).
CHANNEL_BLOCK = 16
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC")
_TARGETS = {"jaxcxr_direct_conv_forward": "JaxcxrConvForward",
            "jaxcxr_direct_conv_kernel_grad": "JaxcxrConvKernelGrad"}


def cache_dir() -> pathlib.Path:
  if os.environ.get("JAXCXR_CACHE_DIR"):
    return pathlib.Path(os.environ["JAXCXR_CACHE_DIR"])
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "jaxcxr"


def compiler() -> str | None:
  """The C++ compiler to use: `$CXX` if set (it must exist), else the first of c++, g++, clang++ on PATH."""
  if os.environ.get("CXX"):
    return shutil.which(os.environ["CXX"])
  return next((found for name in ("c++", "g++", "clang++") if (found := shutil.which(name))), None)


def _cpu_signature() -> str:
  """What -march=native depends on: the CPU's feature flags where Linux lists them, else the architecture."""
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(("flags", "Features")):
        return line
  except OSError:
    pass
  return platform.machine() + platform.processor()


def library_path(cxx: str) -> pathlib.Path:
  """Where the build for this source, compiler, jaxlib and CPU lives: any change gives a new file."""
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), cxx.encode(), " ".join(_FLAGS).encode(), jax.ffi.include_dir().encode(),
               jax.__version__.encode(), _cpu_signature().encode()):
    key.update(part + b"\0")
  return cache_dir() / f"direct_conv-{key.hexdigest()[:16]}.so"


def build(cxx: str) -> pathlib.Path:
  """Compiles the kernel unless this build exists; written under a temporary name and renamed into place."""
  path = library_path(cxx)
  if path.is_file():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  os.close(fd)
  try:
    command = [cxx, *_FLAGS, "-isystem", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
      raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    os.replace(tmp, path)
  finally:
    pathlib.Path(tmp).unlink(missing_ok=True)
  return path


def load_library() -> ctypes.CDLL | str:
  """The built kernel library, or a one-line reason it cannot be had (no compiler, a failed build)."""
  cxx = compiler()
  if cxx is None:
    named = f"CXX={os.environ['CXX']} is not a program on PATH" if os.environ.get("CXX") else "no C++ compiler found"
    return f"{named} (set CXX, or install g++ or clang++)"
  try:
    return ctypes.cdll.LoadLibrary(str(build(cxx)))
  except (OSError, RuntimeError) as e:
    return f"building {SOURCE.name} failed: {e}"


@functools.cache
def unavailable_reason() -> str | None:
  """None where the kernels are ready, else a one-line reason (logged whole, with any compiler output).

  The first call builds and registers them; later calls in the process return the same answer.
  """
  library = load_library()
  if isinstance(library, str):
    log.warning("direct convolution kernels unavailable, pure-XLA lowerings only: %s", library)
    return library.splitlines()[0]
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)), platform="cpu")
  return None


def available() -> bool:
  return unavailable_reason() is None


def require() -> None:
  """Raises a UserError naming the fix where the kernels cannot be built."""
  reason = unavailable_reason()
  if reason:
    raise UserError(f"model.lowering=direct needs its C++ kernel, but {reason}; "
                    "install a compiler or choose model.lowering=winograd")


def fits(x_shape, kernel_shape, dtype) -> bool:
  """Whether the kernels take this layer: float32, a 3x3 kernel, output channels in whole blocks."""
  return (jnp.dtype(dtype) == jnp.float32 and len(x_shape) == 4 and tuple(kernel_shape[:2]) == (3, 3)
          and kernel_shape[3] % CHANNEL_BLOCK == 0)


def conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'SAME' 3x3 convolution of NHWC float32 `x` with an HWIO kernel (`fits` must hold)."""
  require()
  out = jax.ShapeDtypeStruct((*x.shape[:3], kernel.shape[3]), jnp.float32)
  return jax.ffi.ffi_call("jaxcxr_direct_conv_forward", out)(x, kernel)


def kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
  """d(loss)/d(kernel) of `conv(x, kernel)` given its output gradient `g`: a (3, 3, ci, co) kernel."""
  require()
  out = jax.ShapeDtypeStruct((3, 3, x.shape[3], g.shape[3]), jnp.float32)
  return jax.ffi.ffi_call("jaxcxr_direct_conv_kernel_grad", out)(x, g)
