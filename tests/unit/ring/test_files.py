"""Ring and builder files: round trips, identical bytes, golden bytes, and damaged files."""

from __future__ import annotations

from pathlib import Path

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from ring.builder_file import decode_builder, encode_builder, load_builder, save_builder
from ring.errors import RingFileError
from ring.ringfile import decode_ring, encode_ring, read_ring, write_ring
from tests.unit.ring._util import grid, new_device, snapshot

GOLDEN = Path(__file__).with_name("golden")


def small_ring_bytes(compress: bool) -> bytes:
    b = grid(3, 3, zones=3, servers=1, disks=2)
    b.rebalance(seed=1, now=0)
    return encode_ring(b.ring_data(), compress=compress)


def test_ring_round_trip(tmp_path: Path) -> None:
    b = grid(10, 2.5, zones=4, servers=2, disks=2)
    b.rebalance(seed=3, now=0)
    data = b.ring_data()
    write_ring(tmp_path / "object.ring", data)
    back = read_ring(tmp_path / "object.ring")
    assert back.part_power == 10 and back.replicas == 2.5
    assert back.devices == b.devs
    assert back.columns == data.columns
    assert back.version == b.version


def test_identical_data_identical_bytes() -> None:
    assert small_ring_bytes(True) == small_ring_bytes(True)
    assert small_ring_bytes(False) == small_ring_bytes(False)


def test_golden_ring_bytes_are_stable() -> None:
    """Format v1 must not drift: the uncompressed encoding of a fixed ring is pinned."""
    golden = (GOLDEN / "ring-v1-uncompressed.bin").read_bytes()
    assert small_ring_bytes(False) == golden
    assert decode_ring(golden).part_power == 3


def test_builder_round_trip(tmp_path: Path) -> None:
    b = grid(9, 3, zones=3, servers=2, disks=1, min_part_hours=5)
    b.set_overload(0.5)
    b.rebalance(seed=1, now=0)
    b.add(new_device(1, 2, 9, 0, 50.0))
    b.remove(b.devs[0].id)
    path = tmp_path / "object.builder"
    save_builder(path, b)
    back = load_builder(path)
    assert (back.part_power, back.replicas, back.min_part_hours) == (9, 3.0, 5)
    assert back.overload == 0.5
    assert back.devs == b.devs and back.pending_removal == b.pending_removal
    assert snapshot(back) == snapshot(b)
    assert back.last_moved == b.last_moved and back.version == b.version
    assert encode_builder(back) == encode_builder(b)
    # the restored builder carries on exactly as the original would
    r1 = b.rebalance(seed=9, now=86400)
    r2 = back.rebalance(seed=9, now=86400)
    assert r1.moved == r2.moved and snapshot(back) == snapshot(b)


def test_unrebalanced_builder_round_trip() -> None:
    b = grid(4, 3, zones=3)
    back = decode_builder(encode_builder(b))
    assert back.devs == b.devs and not back.rebalanced


@pytest.mark.parametrize("which", ["ring", "builder"])
def test_damage_is_detected(which: str) -> None:
    b = grid(6, 3, zones=3)
    b.rebalance(seed=1, now=0)
    blob = encode_ring(b.ring_data()) if which == "ring" else encode_builder(b)
    decode = decode_ring if which == "ring" else decode_builder
    for bad in (
        b"",
        blob[:10],
        blob[:-1],
        b"XXXX" + blob[4:],
        blob[:4] + b"\x00\x09" + blob[6:],
        blob[:40] + bytes([blob[40] ^ 1]) + blob[41:],
    ):
        with pytest.raises(RingFileError):
            decode(bad)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes(blob: bytes) -> None:
    for decode in (decode_ring, decode_builder):
        with pytest.raises(RingFileError):
            decode(blob)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RingFileError):
        read_ring(tmp_path / "nope.ring")
    with pytest.raises(RingFileError):
        load_builder(tmp_path / "nope.builder")


def test_checksum_covers_everything() -> None:
    blob = small_ring_bytes(False)
    assert xxhash.xxh3_64_digest(blob[:-8]) == blob[-8:]


def test_same_history_same_bytes_across_processes() -> None:
    """No dependence on str hashing or other per-process state: PYTHONHASHSEED varies."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, xxhash\n"
        "from tests.unit.ring._util import grid, new_device\n"
        "from ring.ringfile import encode_ring\n"
        "b = grid(9, 3, zones=4, servers=3, disks=2)\n"
        "b.rebalance(seed=4, now=0)\n"
        "for i in range(5): b.add(new_device(1, 1 + i % 4, 9, i, 150.0))\n"
        "b.remove(2)\n"
        "b.rebalance(seed=4, now=7200)\n"
        "print(xxhash.xxh3_64_hexdigest(encode_ring(b.ring_data())))\n"
    )
    root = Path(__file__).resolve().parents[3]
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        digests.add(done.stdout.strip())
    assert len(digests) == 1
