"""Recon files (atomic, versioned, validated on read), their gauges, and the daemon runner."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from common.clock import ManualClock
from common.listingdb.daemon import Job, run_jobs
from common.listingdb.recon import ReconCollector, read_recon, recon_path, write_recon


def test_write_then_read(tmp_path: Path) -> None:
    write_recon(tmp_path, "container-replicator", {"node": "n1", "stats": {"rows_sent": 3}})
    record = read_recon(tmp_path, "container-replicator")
    assert record == {
        "v": 1,
        "daemon": "container-replicator",
        "node": "n1",
        "stats": {"rows_sent": 3},
    }
    assert [p.name for p in (tmp_path / "recon").iterdir()] == ["container-replicator.json"]
    assert read_recon(tmp_path, "account-replicator") is None


@pytest.mark.parametrize(
    "content", [b"not json", b"[1]", b'{"v": 2}', b"\xff\xfe", b'{"v": 1}' + b" " * (1 << 20)]
)
def test_bad_recon_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = recon_path(tmp_path, "container-updater")
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_recon(tmp_path, "container-updater")


def test_daemon_names_are_checked(tmp_path: Path) -> None:
    for bad in ("../etc", "Upper", "", "a/b"):
        with pytest.raises(ValueError):
            recon_path(tmp_path, bad)


def test_gauges_come_from_the_files(tmp_path: Path) -> None:
    write_recon(
        tmp_path,
        "account-replicator",
        {"pass_duration_s": 1.5, "pass_ended": 10.0, "stats": {"dbs_total": 4, "x": "text"}},
    )
    registry = CollectorRegistry()
    registry.register(ReconCollector(tmp_path, ["account-replicator", "container-updater"]))
    text = generate_latest(registry).decode()
    assert 'cairn_daemon_pass_seconds{daemon="account-replicator"} 1.5' in text
    assert 'cairn_daemon_pass_end_time_seconds{daemon="account-replicator"} 10.0' in text
    assert 'cairn_daemon_pass_stat{daemon="account-replicator",stat="dbs_total"} 4.0' in text
    assert "container-updater" not in text and 'stat="x"' not in text


def test_once_runs_each_job_one_pass_and_records_failures(tmp_path: Path) -> None:
    calls: list[str] = []

    async def good() -> dict[str, Any]:
        calls.append("good")
        return {"rows_sent": 7}

    async def bad() -> dict[str, Any]:
        calls.append("bad")
        raise OSError("disk on fire")

    jobs = [Job("container-replicator", 30.0, good), Job("container-updater", 30.0, bad)]
    asyncio.run(run_jobs(jobs, tmp_path, "n1", ManualClock(), once=True))
    assert sorted(calls) == ["bad", "good"]
    ok = read_recon(tmp_path, "container-replicator")
    failed = read_recon(tmp_path, "container-updater")
    assert ok is not None and failed is not None
    assert (ok["stats"], ok["error"], ok["passes"], ok["node"]) == ({"rows_sent": 7}, None, 1, "n1")
    assert failed["stats"] == {} and "disk on fire" in failed["error"]


def test_a_looping_job_passes_again_after_its_interval(tmp_path: Path) -> None:
    passes = 0

    async def count() -> dict[str, Any]:
        nonlocal passes
        passes += 1
        if passes == 3:  # stop the daemon the way SIGTERM does
            os.kill(os.getpid(), signal.SIGTERM)
        return {"n": passes}

    jobs = [Job("account-replicator", 0.01, count)]
    asyncio.run(asyncio.wait_for(run_jobs(jobs, tmp_path, "n1", ManualClock(), False), 30))
    record = read_recon(tmp_path, "account-replicator")
    # The third pass may be cancelled before its record is written: that is the clean stop.
    assert passes == 3 and record is not None and record["passes"] in (2, 3)
