"""Replication, auditing and expiry across 3-4 real object servers sharing one ring file."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from common.clock import ManualClock
from common.timestamps import Timestamp
from objectd.layout import DeviceLayout
from objectd.partition import local_partitions
from objectd.replicator import clean_tmp
from tests.integration.objectd.conftest import run
from tests.integration.objectd.replication_cluster import Cluster, Node, cluster

pytestmark = pytest.mark.integration


def _ts(clock: ManualClock, delta: float = 0.0) -> str:
    return Timestamp.from_float(clock.time() + delta).internal


async def _replicate_all(c: Cluster) -> None:
    for n in c.nodes:
        stats = await c.replicator(n).run_once()
        assert stats.errors == 0, stats


def _data_files(node: Node) -> list[Path]:
    return sorted(node.layout.objects.rglob("*.data"))


def test_a_missing_replica_is_restored(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o1")
            t = _ts(clock)
            for n in prim[:2]:
                assert await c.put(n, part, "o1", b"hello world", t) == 201
            assert (await c.get(prim[2], part, "o1"))[0] == 404
            stats = await c.replicator(prim[0]).run_once()
            assert stats.objects_synced == 1 and stats.errors == 0
            status, body, headers = await c.get(prim[2], part, "o1")
            assert (status, body) == (200, b"hello world")
            assert headers["X-Backend-Timestamp"] == t
            # A second pass finds everything in sync and sends nothing.
            again = await c.replicator(prim[0]).run_once()
            assert again.objects_synced == 0
            assert again.partitions_in_sync == again.partitions_total

    run(go())


def test_a_newer_overwrite_wins_everywhere(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o2")
            for n in prim:
                assert await c.put(n, part, "o2", b"old", _ts(clock)) == 201
            assert await c.put(prim[1], part, "o2", b"new!", _ts(clock, 5)) == 201
            await _replicate_all(c)
            for n in prim:
                status, body, _ = await c.get(n, part, "o2")
                assert (status, body) == (200, b"new!")
                assert len(_data_files(n)) == 1  # the old .data was cleaned up

    run(go())


def test_a_tombstone_beats_older_data(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o3")
            for n in prim:
                assert await c.put(n, part, "o3", b"doomed", _ts(clock)) == 201
            t_del = _ts(clock, 3)
            status, _ = await _delete(c, prim[2], part, "o3", t_del)
            assert status == 204
            await _replicate_all(c)
            for n in prim:
                status, _, headers = await c.get(n, part, "o3")
                assert status == 404 and headers["X-Backend-Timestamp"] == t_del

    run(go())


async def _delete(c: Cluster, node: Node, part: int, obj: str, ts: str, **extra: str):
    from objectd.client import direct_delete_object

    return await direct_delete_object(
        c.session, node.url, "sda", part, "AUTH_a", "c", obj, {"X-Timestamp": ts, **extra}
    )


def test_old_tombstones_are_reclaimed(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock, reclaim_age_s=100.0) as c:
            part, prim, _ = c.placement("o4")
            for n in prim:
                await _delete(c, n, part, "o4", _ts(clock))
            assert list(prim[0].layout.objects.rglob("*.ts"))
            clock.advance(101)
            await _replicate_all(c)
            for n in prim:
                assert not list(n.layout.objects.rglob("*.ts"))

    run(go())


def test_a_handoff_partition_is_pushed_home_and_removed(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock, nodes=4) as c:
            part, prim, handoffs = c.placement("o5")
            h = handoffs[0]
            assert await c.put(h, part, "o5", b"stray" * 1000, _ts(clock)) == 201
            assert await c.put(h, part, "o5b", b"", _ts(clock)) in (201,)
            assert part in local_partitions(h.layout)
            stats = await c.replicator(h).run_once()
            assert stats.handoffs_removed == 1, stats
            assert part not in local_partitions(h.layout)
            for n in prim:
                status, body, _ = await c.get(n, part, "o5")
                assert (status, body) == (200, b"stray" * 1000)

    run(go())


def test_auditor_quarantines_a_flipped_byte_and_replication_restores_it(tmp_path):
    clock = ManualClock()
    body = os.urandom(200_000)

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o6")
            for n in prim:
                assert await c.put(n, part, "o6", body, _ts(clock)) == 201
            victim = prim[1]
            (path,) = _data_files(victim)
            with path.open("r+b") as f:
                f.seek(123_456)
                byte = f.read(1)
                f.seek(123_456)
                f.write(bytes([byte[0] ^ 0x40]))
            fast = await c.auditor(victim, zero_byte_only=True).run_once()
            assert fast.quarantined == 0  # the footer is intact: only a full pass sees it
            stats = await c.auditor(victim).run_once()
            assert stats.quarantined == 1 and stats.files_checked == 1
            assert not _data_files(victim)
            assert (await c.get(victim, part, "o6"))[0] == 404
            await c.replicator(prim[0]).run_once()
            status, got, _ = await c.get(victim, part, "o6")
            assert status == 200 and got == body
            assert (await c.auditor(victim).run_once()).quarantined == 0

    run(go())


def test_zero_byte_pass_quarantines_a_truncated_file(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o7")
            assert await c.put(prim[0], part, "o7", b"abc", _ts(clock)) == 201
            (path,) = _data_files(prim[0])
            os.truncate(path, 0)
            stats = await c.auditor(prim[0], zero_byte_only=True).run_once()
            assert stats.quarantined == 1
            assert not _data_files(prim[0])

    run(go())


def test_expirer_deletes_a_due_object_on_every_replica(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o8")
            delete_at = int(clock.time()) + 60
            for n in prim:
                status = await c.put(
                    n, part, "o8", b"short-lived", _ts(clock), **{"X-Delete-At": str(delete_at)}
                )
                assert status == 201
            early = await c.expirer(prim[0]).run_once()
            assert early.due == 0
            clock.advance(61)
            stats = await c.expirer(prim[0]).run_once()
            assert (stats.due, stats.expired, stats.errors) == (1, 1, 0)
            for n in prim:
                status, _, headers = await c.get(n, part, "o8")
                assert status == 404
                assert headers["X-Backend-Timestamp"] == Timestamp.from_float(delete_at).internal
            # The other nodes' queue entries find the job done (404) and are dropped.
            for n in prim[1:]:
                assert (await c.expirer(n).run_once()).expired == 1

    run(go())


def test_expirer_leaves_an_object_whose_delete_at_changed(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o9")
            at = int(clock.time()) + 60
            for n in prim:
                await c.put(n, part, "o9", b"x", _ts(clock), **{"X-Delete-At": str(at)})
            for n in prim:  # overwritten without an expiry
                await c.put(n, part, "o9", b"kept", _ts(clock, 1))
            clock.advance(61)
            stats = await c.expirer(prim[0]).run_once()
            assert stats.expired == 1  # 412 everywhere: the entry is done
            for n in prim:
                assert (await c.get(n, part, "o9"))[:2] == (200, b"kept")

    run(go())


def test_a_file_deleted_by_hand_is_restored_after_an_audit_and_a_replication_pass(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o10")
            for n in prim:
                assert await c.put(n, part, "o10", b"precious", _ts(clock)) == 201
            await _replicate_all(c)  # every replica has cached its suffix hashes
            victim = prim[2]
            (path,) = _data_files(victim)
            path.unlink()  # behind the server's back: no suffix invalidation
            await c.replicator(prim[0]).run_once()
            assert (await c.get(victim, part, "o10"))[0] == 404  # the stale cache hides it
            await c.auditor(victim).run_once()
            await c.replicator(prim[0]).run_once()
            assert (await c.get(victim, part, "o10"))[:2] == (200, b"precious")

    run(go())


def test_old_temp_files_are_cleaned(tmp_path):
    node_tmp = tmp_path / "sda" / "tmp"
    (node_tmp / "removing-3.abcd").mkdir(parents=True)
    (node_tmp / "x.tmp").write_bytes(b"half")
    layout = DeviceLayout(tmp_path, "sda")
    now = os.stat(node_tmp / "x.tmp").st_mtime
    assert clean_tmp(layout, now + 10, 100) == 0
    assert clean_tmp(layout, now + 101, 100) == 2
    assert os.listdir(node_tmp) == []


def test_a_missing_primary_device_is_covered_by_a_handoff_until_it_returns(tmp_path):
    clock = ManualClock()

    async def go():
        async with cluster(tmp_path, clock, nodes=4) as c:
            part, prim, handoffs = c.placement("o11")
            for n in prim[:2]:
                assert await c.put(n, part, "o11", b"kept safe", _ts(clock)) == 201
            gone = prim[2].devices_dir / "sda"
            gone.rename(prim[2].devices_dir / "unplugged")  # answers 507 (mount_check)
            stats = await c.replicator(prim[0]).run_once()
            assert stats.partitions_in_sync == 0 and stats.errors >= 1
            h = handoffs[0]
            assert (await c.get(h, part, "o11"))[:2] == (200, b"kept safe")
            # The handoff keeps the partition while a primary cannot take it...
            stats = await c.replicator(h).run_once()
            assert stats.handoffs_removed == 0 and part in local_partitions(h.layout)
            # ...and hands it over once the device is back.
            (prim[2].devices_dir / "unplugged").rename(gone)
            stats = await c.replicator(h).run_once()
            assert stats.handoffs_removed == 1 and part not in local_partitions(h.layout)
            assert (await c.get(prim[2], part, "o11"))[:2] == (200, b"kept safe")

    run(go())


def test_expirer_tells_the_container_listing(tmp_path):
    from aiohttp import web

    from common.server import running_app
    from objectd.expirer import ExpirerConf, ObjectExpirer
    from ring import NewDevice, Ring, RingBuilder, write_ring

    clock = ManualClock()
    seen: list[tuple[str, str, str]] = []

    async def container(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, request.headers["X-Timestamp"]))
        return web.Response(status=204)

    capp = web.Application()
    capp.router.add_route("*", "/{tail:.*}", container)

    async def go():
        async with running_app(capp) as curl, cluster(tmp_path, clock) as c:
            cport = int(curl.rsplit(":", 1)[1])
            b = RingBuilder(2, 3, 0)
            for z in range(3):
                b.add(NewDevice(1, z + 1, "127.0.0.1", cport, "127.0.0.1", cport, f"c{z}", 1.0))
            b.rebalance(seed=1)
            cring_path = tmp_path / "rings" / "container.ring"
            write_ring(cring_path, b.ring_data())
            cring = Ring(cring_path, "pre", "suf", clock=clock)
            part, prim, _ = c.placement("o12")
            at = int(clock.time()) + 5
            for n in prim:
                await c.put(n, part, "o12", b"x", _ts(clock), **{"X-Delete-At": str(at)})
            clock.advance(6)
            conf = ExpirerConf(prim[0].devices_dir, node_timeout_s=5.0)
            exp = ObjectExpirer(conf, c.ring(), cring, c.session, clock)
            assert (await exp.run_once()).expired == 1
            cpart, cnodes = cring.get_nodes("AUTH_a", "c")
            want_ts = Timestamp.from_float(at).internal
            assert sorted(seen) == sorted(
                ("DELETE", f"/{d.device}/{cpart}/AUTH_a/c/o12", want_ts) for d in cnodes
            )

    run(go())


def test_replication_holds_the_device_rate_limit(tmp_path):
    clock = ManualClock()
    body = os.urandom(400_000)

    async def go():
        async with cluster(tmp_path, clock) as c:
            part, prim, _ = c.placement("o13")
            assert await c.put(prim[0], part, "o13", body, _ts(clock)) == 201
            rep = c.replicator(prim[0])
            rep.conf = dataclasses.replace(rep.conf, bytes_per_s=100_000)
            before = clock.monotonic()
            stats = await rep.run_once()
            assert stats.bytes_synced == 2 * len(body)
            # 800 kB at 100 kB/s on the injected clock: at least 7 s (1 s of burst allowed).
            assert clock.monotonic() - before >= 7.0

    run(go())
