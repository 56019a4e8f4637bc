"""Keeping XLA:CPU's per-step buffers in memory that is already mapped.

Each execution of a compiled CPU step allocates its temporaries and frees
them at the end. glibc serves allocations that large with a fresh `mmap` and
returns them with `munmap`, so every step first-touches all of it again: page
faults and kernel time on every step. Asking glibc to keep one heap (no
per-thread arenas, whose large requests fall back to `mmap`), never to `mmap`
a request, and never to give freed memory back lets the next step reuse the
same pages. The price is memory: the heap never shrinks and fragments. Both
sides are measured in the README ("Performance": faults per step; the input
pipeline table: peak RSS), with the commands that measure them.

The CPU entry points (`jaxcxr.main`, the benchmarks) call this explicitly,
before the backend starts its threads; where the C library is not glibc it does nothing.
"""

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER = -1  # for M_TRIM_THRESHOLD: never return the heap's free top to the system (mallopt(3)).

_retained = False  # process-wide, as the allocator is


def retain_freed_memory() -> bool:
  """Tells glibc to reuse freed memory instead of unmapping it; True where it agreed.

  Call before JAX's CPU backend starts (its threads pick their malloc arena
  on first use). Idempotent.
  """
  global _retained  # pylint: disable=global-statement
  if not _retained:
    process = ctypes.CDLL(None)  # the C library this process already runs on
    if hasattr(process, "gnu_get_libc_version"):  # other C libraries' mallopt options differ
      _retained = all(process.mallopt(option, value) == 1 for option, value in
                      ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER)))
      log.debug("glibc malloc set to retain freed memory: %s", _retained)
  return _retained


def retained() -> bool:
  """Whether this process runs with retained memory: run summaries and the benchmark record it."""
  return _retained
