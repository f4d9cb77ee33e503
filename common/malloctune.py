"""glibc malloc settings for the daemons that move object bodies (proxy, storage servers,
blockd), applied once at start-up with mallopt(3).

Why: bodies arrive and leave in buffers of 64 KiB to a few MiB. With glibc's defaults such a
buffer is often mmap'ed and unmapped again, or freed at the top of the heap and trimmed, so
the next one faults fresh pages in and has the kernel zero them. On a virtual machine that
hands free memory back to its host (virtio-balloon free page reporting, as on this project's
build machines) a fresh page costs much more: a host fault as well. Keeping freed buffers in
the process saves that: measured on the all-in-one (docs/performance.md, "Session 10"), the
object servers' system time per 1 MiB PUT fell from 13.7-15.3 to 10.9-11.8 ms and a 256 MiB
PUT cost ~7% less CPU.

- `M_MMAP_THRESHOLD` = 32 MiB: buffers below it come from the heap (32 MiB is the highest
  value glibc's own sliding threshold reaches);
- `M_TRIM_THRESHOLD` = 128 MiB: free memory at the top of a heap is given back to the kernel
  only past this.

The cost is memory a daemon keeps after a burst of large bodies (at most about the trim
threshold per malloc arena). An operator's `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_`
environment variables win: a setting given there is left alone. Elsewhere than glibc on Linux
this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "chosen_settings", "tune_malloc"]

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024

# mallopt(3) parameter numbers (glibc's malloc.h) and the environment variable for each.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_SETTINGS = (
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
)


def chosen_settings(environ: Mapping[str, str]) -> list[tuple[str, int, int]]:
    """The (environment variable, mallopt parameter, value) settings to make: those the
    environment does not set."""
    return [setting for setting in _SETTINGS if setting[0] not in environ]


def tune_malloc(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """Apply the settings this process's environment leaves to us. Returns what was set, by
    environment variable name (empty when not on glibc, or nothing was left to set)."""
    if not sys.platform.startswith("linux"):
        return {}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    env = os.environ if environ is None else environ
    return {
        name: value for name, param, value in chosen_settings(env) if mallopt(param, value) == 1
    }
