"""bench.durable_floor: the replicated-write bound, run for real on a small scale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.durable_floor import MIB, FloorResult, measure
from bench.iscsi_bench import Result, floor_line


def test_every_replica_keeps_the_last_version_of_each_stream(tmp_path: Path) -> None:
    payload = os.urandom(MIB)
    r = measure(tmp_path, mib=8, depth=2, replicas=3, payload=payload)
    assert (r.replicas, r.durable, r.mib) == (3, True, 8)
    assert r.seconds > 0 and r.mb_s > 0
    streams = sorted(tmp_path.glob("replica-*/stream-*"))
    assert len(streams) == 3 * 2
    for stream in streams:
        # four versions written per stream; the older three removed, no temporary left
        assert [p.name for p in stream.iterdir()] == ["00000003.data"]
        assert (stream / "00000003.data").read_bytes() == payload


def test_measure_refuses_a_pipeline_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        measure(tmp_path, mib=2, depth=4)
    with pytest.raises(ValueError):
        measure(tmp_path, mib=4, depth=1, payload=b"short")


def test_floor_line_sets_the_run_against_the_floor() -> None:
    floor = FloorResult(replicas=3, durable=True, mib=400, seconds=400 * MIB / 400e6,
                        machine_cpu_s=1.2)  # fmt: skip
    results = {
        ("1m-seqwrite-qd8", "tgt"): Result(figure=500.0, cpu_per_io_us=None, seconds=1.0),
        ("1m-seqwrite-qd8", "volume"): Result(
            figure=300.0, cpu_per_io_us=None, seconds=1.0, figure_incl_flush=200.0
        ),
    }
    line = floor_line(floor, results)
    assert "400.0 MB/s" in line and "3.00 ms per MiB" in line
    assert "0.8x tgt's 1 MiB write = 400.0 MB/s" in line
    assert "volume/floor 0.75 (incl. flush 0.50)" in line
