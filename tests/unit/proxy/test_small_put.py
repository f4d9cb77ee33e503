"""Which object PUTs skip Expect: 100-continue (read whole, one request per replica)."""

from __future__ import annotations

from multidict import CIMultiDict

from proxy.objput import SMALL_PUT_BYTES_MAX
from proxy.ops import _small_length


def test_small_declared_lengths_are_buffered() -> None:
    assert _small_length(CIMultiDict({"Content-Length": "0"})) == 0
    assert _small_length(CIMultiDict({"content-length": "4096"})) == 4096
    assert _small_length(CIMultiDict({"Content-Length": str(SMALL_PUT_BYTES_MAX)})) == (
        SMALL_PUT_BYTES_MAX
    )


def test_large_unknown_or_bad_lengths_stream() -> None:
    assert _small_length(CIMultiDict({"Content-Length": str(SMALL_PUT_BYTES_MAX + 1)})) is None
    assert _small_length(CIMultiDict()) is None  # chunked: length unknown
    assert _small_length(CIMultiDict({"Content-Length": "12", "Transfer-Encoding": "x"})) is None
    assert _small_length(CIMultiDict({"Content-Length": "-1"})) is None
    assert _small_length(CIMultiDict({"Content-Length": "4k"})) is None
