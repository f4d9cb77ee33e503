"""common/malloctune.py: the settings reach glibc's malloc, and the environment wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from common.malloctune import MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES, chosen_settings

# In a fresh interpreter: allocate an 8 MiB buffer, then report how many bytes malloc has in
# mmap'ed blocks (mallinfo2().hblkhd). With glibc's default threshold (128 KiB, not yet raised
# by any free) the buffer is mmap'ed; under a 32 MiB threshold it comes from the heap.
_PROBE = """
import ctypes, json, sys
from common.malloctune import tune_malloc
tuned = tune_malloc() if sys.argv[1] == "tune" else {}

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
buf = bytearray(8 * 1024 * 1024)
print(json.dumps({"tuned": tuned, "mmapped": libc.mallinfo2().hblkhd - before}))
"""


def _probe(mode: str, **env: str) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tuned_a_large_buffer_comes_from_the_heap_not_a_fresh_mapping() -> None:
    plain = _probe("plain")
    assert plain["mmapped"] >= 8 * 1024 * 1024  # glibc's default: a fresh mapping
    tuned = _probe("tune")
    assert tuned["tuned"] == {
        "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES,
        "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD_BYTES,
    }
    assert tuned["mmapped"] == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_an_operators_environment_setting_is_left_alone() -> None:
    # The operator keeps the 128 KiB mmap threshold: the buffer is mmap'ed, and only the trim
    # threshold is ours.
    got = _probe("tune", MALLOC_MMAP_THRESHOLD_="131072")
    assert got["tuned"] == {"MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD_BYTES}
    assert got["mmapped"] >= 8 * 1024 * 1024


def test_chosen_settings_skip_what_the_environment_sets() -> None:
    assert len(chosen_settings({})) == 2
    assert len(chosen_settings({"MALLOC_TRIM_THRESHOLD_": "1"})) == 1
    assert chosen_settings({"MALLOC_TRIM_THRESHOLD_": "1", "MALLOC_MMAP_THRESHOLD_": "1"}) == []
