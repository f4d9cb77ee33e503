"""The store contract against the real ring store on the shared test cluster."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from blockd.ringstore import open_ring_store
from common.clock import SystemClock
from common.deploy import load_deployment
from tests.unit.blockd.store_contract import check_store_contract

pytestmark = pytest.mark.integration


def test_ring_store_keeps_the_contract(cluster):
    cfg = load_deployment(cluster.config_path, cluster.data_dir)

    async def run():
        async with open_ring_store(cfg, SystemClock()) as store:
            await check_store_contract(store)

    asyncio.run(run())


@pytest.mark.parametrize("stale_first", [True, False])
def test_get_finds_a_newer_version_that_only_one_replica_has(cluster, stale_first):
    """One node sends the body, the others only headers: a newer version on any one replica
    (the body node or a header node) is still what a get returns, whole or as a range."""
    from common.timestamps import Timestamp
    from objectd.client import direct_put_object

    cfg = load_deployment(cluster.config_path, cluster.data_dir)

    async def run():
        async with (
            aiohttp.ClientSession() as session,
            open_ring_store(cfg, SystemClock()) as store,
        ):
            ring = store.cluster.ring
            c, o = "stale-test", f"obj-{stale_first}"
            await store.put(".cairn_block_test", c, o, b"old" * 100)
            part = ring.get_part(".cairn_block_test", c, o)
            node = ring.get_part_nodes(part)[1 if stale_first else 0]
            newer = Timestamp.from_float(SystemClock().time() + 5).internal
            status, _ = await direct_put_object(
                session, f"http://{node.ip}:{node.port}", node.device, part,
                ".cairn_block_test", c, o, b"new!" * 100,
                {"X-Timestamp": newer, "Content-Type": "application/octet-stream"},
            )  # fmt: skip
            assert status == 201
            assert await store.get(".cairn_block_test", c, o) == b"new!" * 100
            assert await store.get_range(".cairn_block_test", c, o, 4, 4) == (b"new!", 400)

    asyncio.run(run())


def test_put_answers_the_md5_every_replica_computed(cluster):
    import hashlib

    cfg = load_deployment(cluster.config_path, cluster.data_dir)
    body = bytes(range(256)) * 2048

    async def run():
        async with open_ring_store(cfg, SystemClock()) as store:
            etag = await store.cluster.put(".cairn_block_test", "etag-test", "o", body)
            assert etag == hashlib.md5(body).hexdigest()
            assert await store.get(".cairn_block_test", "etag-test", "o") == body

    asyncio.run(run())


def test_a_known_version_is_read_from_one_replica_and_anything_else_from_a_quorum(cluster):
    from common.timestamps import Timestamp
    from objectd.client import direct_put_object

    cfg = load_deployment(cluster.config_path, cluster.data_dir)
    a, c, o = ".cairn_block_test", "version-test", "o"

    async def run():
        async with (
            aiohttp.ClientSession() as session,
            open_ring_store(cfg, SystemClock()) as store,
        ):
            store.cluster.shuffle_reads = False  # the first primary is the replica asked
            version = await store.put(a, c, o, b"mine" * 64)
            assert version is not None
            assert await store.get(a, c, o, version=version) == b"mine" * 64
            assert await store.get_range(a, c, o, 4, 4, version=version) == (b"mine", 256)
            # a newer version on the replica asked first: not the known one, so a quorum read
            part = store.cluster.ring.get_part(a, c, o)
            node = store.cluster.ring.get_part_nodes(part)[0]
            newer = Timestamp.from_float(SystemClock().time() + 5).internal
            status, _ = await direct_put_object(
                session, f"http://{node.ip}:{node.port}", node.device, part, a, c, o,
                b"else" * 64,
                {"X-Timestamp": newer, "Content-Type": "application/octet-stream"},
            )  # fmt: skip
            assert status == 201
            assert await store.get(a, c, o, version=version) == b"else" * 64
            assert await store.get_range(a, c, o, 0, 4, version=version) == (b"else", 256)

    asyncio.run(run())


def test_a_get_driven_outside_a_task_can_open_a_connection(cluster):
    """blockd's target starts a SCSI command as a plain coroutine (no Task until it first
    suspends): a store read made there, on a store with no idle connection to reuse, must
    still connect (the connect timeout needs a task) rather than fail the command."""
    from blockd.targetconn import _finish

    cfg = load_deployment(cluster.config_path, cluster.data_dir)
    a, c, o = ".cairn_block_test", "eager-test", "o"
    body = bytes(range(256)) * 512

    async def run():
        async with open_ring_store(cfg, SystemClock()) as writer:
            version = await writer.put(a, c, o, body)
        async with open_ring_store(cfg, SystemClock()) as store:  # no connections yet
            loop = asyncio.get_running_loop()
            done: asyncio.Future[bytes | None] = loop.create_future()

            def settle(task: asyncio.Task[bytes | None]) -> None:
                err = task.exception()
                if err is not None:
                    done.set_exception(err)
                else:
                    done.set_result(task.result())

            def start() -> None:  # a loop callback: no current task, as in the target
                assert asyncio.current_task() is None
                coro = store.get(a, c, o, version=version)  # one node asked, not gathered
                try:
                    waiting = coro.send(None)
                except BaseException as e:  # handed to the test's future
                    done.set_exception(e)
                    return
                loop.create_task(_finish(coro, waiting)).add_done_callback(settle)

            loop.call_soon(start)
            assert await done == body

    asyncio.run(run())


@pytest.mark.parametrize("etag_xxh3", [False, True])
def test_chunk_objects_get_an_xxh3_etag_only_when_block_etag_xxh3_is_on(cluster, etag_xxh3):
    """[block] etag_xxh3 (off by default: docs/config.md) decides the ETag of blockd's large
    objects: off, an MD5 and version 1 object files; on (and every primary taking version
    2), the xxh3-128 and version 2 files."""
    import dataclasses
    import hashlib

    import xxhash

    from objectd.diskfile import load_metadata, verify_file

    loaded = load_deployment(cluster.config_path, cluster.data_dir)
    cfg = dataclasses.replace(loaded, block=dataclasses.replace(loaded.block, etag_xxh3=etag_xxh3))
    body = bytes(range(256)) * 1024 + bytes([etag_xxh3])
    a, c, o = ".cairn_block_test", "etag-alg-test", f"o-{etag_xxh3}"

    async def run():
        async with open_ring_store(cfg, SystemClock()) as store:
            await store.put(a, c, "learn-the-servers", b"x" * 100)
            return await store.cluster.put(a, c, o, body), store.cluster.ring.get_part(a, c, o)

    etag, part = asyncio.run(run())
    want_alg, want = (
        ("xxh3-128", xxhash.xxh3_128_hexdigest(body))
        if etag_xxh3
        else ("md5", hashlib.md5(body).hexdigest())
    )
    assert etag == want
    files = [
        p
        for node in cfg.nodes
        for p in cfg.devices_dir(node).glob(f"*/objects/{part}/*/*/*.data")
        if load_metadata(p).name == f"/{a}/{c}/{o}"
    ]
    assert len(files) == cfg.cluster.replicas
    for path in files:
        md = load_metadata(path)
        assert (md.etag_alg, md.format_version, md.etag) == (
            want_alg,
            2 if etag_xxh3 else 1,
            want,
        )
        assert list(verify_file(path))[-1] == len(body)
