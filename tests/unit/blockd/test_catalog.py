"""Volume records, the index, and the manager's lifecycle over the memory store."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from blockd.catalog import (
    INDEX_OBJECT,
    RECORDS_CONTAINER,
    Catalog,
    CatalogCorrupt,
    VolumeRecord,
    decode_record,
    encode_record,
)
from blockd.chunkstore import RESERVED_ACCOUNT, chunk_container
from blockd.lease import LeaseHeld
from blockd.manager import NameInUse, VolumeManager, VolumeNotFound
from blockd.store import MemoryObjectStore
from common.clock import ManualClock
from common.deploy import BlockConfig
from tests.unit.blockd.helpers import VOLUME_ID

RECORD = VolumeRecord(
    id=VOLUME_ID,
    name="vol",
    project="AUTH_a",
    size_bytes=1 << 20,
    chunk_bytes=64 << 10,
    block_size=512,
    created_at="2026-11-21T07:00:00.000000",
    chap_user="u",
    chap_secret="s",
)
CONF = BlockConfig(lease_settle_s=0.0, default_chunk_bytes=64 << 10, cache_bytes_max=1 << 20)


def test_record_round_trips_and_is_versioned():
    body = encode_record(RECORD)
    assert json.loads(body)["format_version"] == 1
    assert decode_record(body) == RECORD


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"format_version": 2}, "format_version"),
        ({"id": "xyz"}, "id"),
        ({"block_size": 1000}, "block_size"),
        ({"chunk_bytes": 1000}, "chunk_bytes"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"status": "weird"}, "status"),
        ({"size_bytes": "1"}, "not int"),
        ({"extra": 1}, "keys"),
    ],
)
def test_bad_records_are_refused(change, words):
    raw = {**dataclasses.asdict(RECORD), **change}
    with pytest.raises(CatalogCorrupt, match=words):
        decode_record(json.dumps(raw).encode())


def test_garbage_record_body_is_refused():
    for body in (b"\xff\xfe", b"[1]", b"{"):
        with pytest.raises(CatalogCorrupt):
            decode_record(body)


def test_catalog_create_list_update_remove():
    async def run():
        store = MemoryObjectStore()
        cat = Catalog(store)
        assert await cat.records() == []
        await cat.create(RECORD)
        assert await cat.records() == [RECORD]
        newer = await cat.update(RECORD, status="deleting")
        assert newer.record_version == 2
        assert await cat.get(VOLUME_ID) == newer
        await cat.remove(VOLUME_ID)
        assert await cat.records() == []
        assert await cat.get(VOLUME_ID) is None
        assert await cat.get("../../etc") is None

    asyncio.run(run())


def test_corrupt_index_is_an_error_not_an_empty_list():
    async def run():
        store = MemoryObjectStore()
        await store.put(RESERVED_ACCOUNT, RECORDS_CONTAINER, INDEX_OBJECT, b'{"volumes": 3}')
        with pytest.raises(CatalogCorrupt):
            await Catalog(store).records()

    asyncio.run(run())


def manager(store, clock, holder="blockd-a"):
    return VolumeManager(store, CONF, holder_id=holder, clock=clock)


def test_manager_create_write_restart_delete():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        m = manager(store, clock)
        await m.start(timers=False)
        rec = await m.create("AUTH_a", "data", 1 << 20)
        with pytest.raises(NameInUse):
            await m.create("AUTH_a", "data", 1 << 20)
        other = await m.create("AUTH_b", "data", 1 << 20)  # names are per project
        await m.attached[rec.id].volume.write(0, b"\x11" * 512)
        await m.stop()  # flushes and releases the leases

        m2 = manager(store, clock, holder="blockd-b")
        await m2.start(timers=False)
        assert set(m2.attached) == {rec.id, other.id}
        assert await m2.attached[rec.id].volume.read(0, 1) == b"\x11" * 512
        with pytest.raises(VolumeNotFound):
            await m2.get("AUTH_b", rec.id)
        await m2.attached[rec.id].volume.write(8, b"\x22" * 512)
        await m2.attached[rec.id].volume.flush()  # a live journal record: deleted with the rest
        assert ".journal.0000000000000001" in store.object_names(
            RESERVED_ACCOUNT, chunk_container(rec.id)
        )
        await m2.delete("AUTH_a", rec.id)
        await m2.wait_idle()
        assert store.object_names(RESERVED_ACCOUNT, chunk_container(rec.id)) == []
        assert [r.id for r in await m2.catalog.records()] == [other.id]
        with pytest.raises(VolumeNotFound):
            await m2.delete("AUTH_a", rec.id)
        await m2.stop()

    asyncio.run(run())


def test_manager_refuses_to_export_or_delete_a_volume_another_holds():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        a = manager(store, clock)
        await a.start(timers=False)
        rec = await a.create("AUTH_a", "v", 1 << 20)
        b = manager(store, clock, holder="blockd-b")
        await b.start(timers=False)
        assert rec.id not in b.attached
        assert not b.export_info(rec).exported
        with pytest.raises(LeaseHeld):
            await b.delete("AUTH_a", rec.id)
        await a.stop()
        await b.stop()

    asyncio.run(run())


def test_interrupted_delete_is_finished_at_start():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        m = manager(store, clock)
        await m.start(timers=False)
        rec = await m.create("AUTH_a", "v", 1 << 20)
        await m.attached[rec.id].volume.write(0, b"\x22" * 512, fua=True)
        await m.stop()
        await m.catalog.update(rec, status="deleting")  # as if blockd died mid-delete
        m2 = manager(store, clock)
        await m2.start(timers=False)
        await m2.wait_idle()
        assert await m2.catalog.records() == []
        assert store.object_names(RESERVED_ACCOUNT, chunk_container(rec.id)) == []
        await m2.stop()

    asyncio.run(run())


def test_flush_timer_writes_dirty_chunks_without_a_sync():
    """A small write goes out as a journal record on the next tick; once the journal has been
    idle for journal_idle_s a checkpoint puts the chunk and retires the record."""

    async def run():
        store = MemoryObjectStore()
        conf = dataclasses.replace(CONF, flush_interval_s=0.01, journal_idle_s=0.3)
        m = VolumeManager(store, conf, holder_id="blockd-a")
        await m.start()
        rec = await m.create("AUTH_a", "v", 1 << 20)
        await m.attached[rec.id].volume.write(8, b"\x33" * 512)
        for _ in range(500):
            if m.cache.dirty_count() == 0:
                break
            await asyncio.sleep(0.01)
        names = store.object_names(RESERVED_ACCOUNT, chunk_container(rec.id))
        assert names == [".alloc", ".journal.0000000000000000"]  # the map and one record
        for _ in range(500):
            if m.cache.stats.checkpoints:
                break
            await asyncio.sleep(0.01)
        names = store.object_names(RESERVED_ACCOUNT, chunk_container(rec.id))
        assert names == [".alloc", ".journal", "000000000000"]  # the state and the chunk
        await m.stop()

    asyncio.run(run())


def test_create_validates_sizes_and_names():
    async def run():
        m = manager(MemoryObjectStore(), ManualClock())
        for args in (("", 1 << 20), ("v", 1000), ("v", 0), ("x\n", 1 << 20)):
            with pytest.raises(ValueError):
                await m.create("AUTH_a", *args)
        with pytest.raises(ValueError):
            await m.create("AUTH_a", "v", 1 << 20, chunk_bytes=1000)

    asyncio.run(run())


def test_adopt_exports_volumes_created_elsewhere_and_those_whose_lease_expired():
    async def run():
        store, clock = MemoryObjectStore(), ManualClock()
        a = manager(store, clock)
        b = manager(store, clock, holder="blockd-b")
        await a.start(timers=False)
        await b.start(timers=False)
        rec = await a.create("AUTH_a", "v", 1 << 20)
        assert await b.adopt() == 0  # a holds it
        clock.advance(CONF.lease_ttl_s + 1)  # a died without renewing
        assert await b.adopt() == 1
        assert rec.id in b.attached
        assert await b.adopt() == 0  # nothing new
        await b.stop()

    asyncio.run(run())
