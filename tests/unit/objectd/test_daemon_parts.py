"""Small parts of the object daemons: rate limiter, recon files, expiry queue entries."""

from __future__ import annotations

import asyncio
import json

import pytest

from common.clock import ManualClock
from common.nodecli import parse_only
from common.timestamps import Timestamp
from objectd.daemons import DAEMON_NAMES
from objectd.expirer import ExpiryEntry, _due_entries, decode_entry, encode_entry, write_entry
from objectd.ratelimit import RateLimiter
from objectd.recon import ReconError, read_recon, recon_path, write_recon


def test_rate_limiter_holds_the_rate_and_banks_at_most_one_second_when_idle():
    clock = ManualClock()
    lim = RateLimiter(1000, clock)

    async def go(n: int, size: int) -> None:
        for _ in range(n):
            await lim.consume(size)

    asyncio.run(go(10, 500))  # 5000 bytes at 1000 B/s
    assert clock.monotonic() == pytest.approx(5.0)
    clock.advance(10.0)  # idle: only one second of allowance is banked
    asyncio.run(go(1, 1500))
    assert clock.monotonic() == pytest.approx(15.5)


def test_rate_limiter_zero_means_unlimited():
    clock = ManualClock()
    asyncio.run(RateLimiter(0, clock).consume(10**9))
    assert clock.monotonic() == 0.0


def test_recon_round_trip_and_refusals(tmp_path):
    write_recon(tmp_path, "object-replicator", 10.0, 12.5, {"partitions_in_sync": 3})
    rec = read_recon(tmp_path, "object-replicator")
    assert rec == {
        "version": 1,
        "daemon": "object-replicator",
        "pass_started": 10.0,
        "pass_finished": 12.5,
        "pass_seconds": 2.5,
        "stats": {"partitions_in_sync": 3},
    }
    assert read_recon(tmp_path, "object-auditor") is None
    with pytest.raises(ReconError):
        recon_path(tmp_path, "../etc/passwd")
    recon_path(tmp_path, "object-updater").write_text(json.dumps({"version": 9}))
    with pytest.raises(ReconError, match="version 1"):
        read_recon(tmp_path, "object-updater")


def test_expiry_entries_round_trip_and_come_due_in_order(tmp_path):
    e1 = ExpiryEntry(1_700_003_600, "AUTH_a", "c", "o/1", "a" * 32, Timestamp(170000000000000))
    e2 = ExpiryEntry(1_700_000_100, "AUTH_a", "c", "o2", "b" * 32, Timestamp(170000000000000))
    assert decode_entry(encode_entry(e1)) == e1
    for e in (e1, e2):
        write_entry(tmp_path, e)
    assert [p.name for p in _due_entries(tmp_path, 1_700_000_200, 10)] == [e2.file_name()]
    assert len(_due_entries(tmp_path, 1_700_004_000, 10)) == 2
    assert len(_due_entries(tmp_path, 1_700_004_000, 1)) == 1
    with pytest.raises(ValueError):
        decode_entry(b"\x81\xa1v\x02")
    with pytest.raises(ValueError):
        decode_entry(b"\xc1")


def test_only_option():
    assert parse_only("auditor,expirer", DAEMON_NAMES) == ("auditor", "expirer")
    assert parse_only(None, DAEMON_NAMES) == ("replicator", "auditor", "updater", "expirer")
    with pytest.raises(ValueError):
        parse_only("replicator,reaper", DAEMON_NAMES)
