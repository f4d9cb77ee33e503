"""The cost of the ETag (MD5) against cairn's per-block xxh3-64 checksums, per object size."""

from __future__ import annotations

import hashlib
import os

import pytest
import xxhash

from objectd.fileformat import BLOCK_BYTES as BLOCK

SIZES = [4096, 1 << 20]
IDS = ["4KiB", "1MiB"]


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_md5(benchmark, size: int) -> None:
    body = os.urandom(size)
    assert benchmark(lambda: hashlib.md5(body).hexdigest()) == hashlib.md5(body).hexdigest()


@pytest.mark.parametrize("size", SIZES, ids=IDS)
def test_xxh3_blocks(benchmark, size: int) -> None:
    body = memoryview(os.urandom(size))

    def digests() -> int:
        return len(b"".join(xxhash.xxh3_64_digest(body[i : i + BLOCK])
                            for i in range(0, size, BLOCK)))  # fmt: skip

    assert benchmark(digests) == 8 * -(-size // BLOCK)
