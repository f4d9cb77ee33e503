"""The volume API and blockd service on loopback, over the in-memory object store."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import pytest

from blockd.chunkstore import RESERVED_ACCOUNT, chunk_container
from blockd.server import make_block_service
from blockd.store import MemoryObjectStore
from common.deploy import BlockConfig

pytestmark = pytest.mark.integration

TOKENS = {"tok-alice": "AUTH_alice", "tok-bob": "AUTH_bob"}
CONF = BlockConfig(api_port=0, iscsi_port=0, lease_settle_s=0.01, default_chunk_bytes=64 << 10)


async def authenticate(headers):
    return TOKENS.get(headers.get("X-Auth-Token", ""))


@contextlib.asynccontextmanager
async def service(store=None, conf=CONF):
    svc = await make_block_service(conf, store or MemoryObjectStore(), authenticate=authenticate)
    try:
        async with aiohttp.ClientSession() as http:
            yield svc, http
    finally:
        await svc.stop()


def url(svc, path, project="AUTH_alice"):
    return f"{svc.api_url}/v3/{project}{path}"


ALICE = {"X-Auth-Token": "tok-alice"}


async def create(svc, http, name="vol1", **extra):
    body = {"volume": {"name": name, "size": 1, **extra}}
    async with http.post(url(svc, "/volumes"), json=body, headers=ALICE) as r:
        assert r.status == 202, await r.text()
        return (await r.json())["volume"]


def test_create_list_show_delete():
    async def run():
        store = MemoryObjectStore()
        async with service(store) as (svc, http):
            vol = await create(svc, http)
            assert vol["name"] == "vol1"
            assert vol["size"] == 1
            assert vol["size_bytes"] == 1 << 30
            assert vol["status"] == "available"
            assert vol["attachments"] == []
            iscsi = vol["cairn_iscsi"]
            assert iscsi["iqn"] == f"iqn.2026-11.org.cairn:volume-{vol['id']}"
            assert iscsi["portal"] == f"127.0.0.1:{svc.iscsi_port}"
            assert iscsi["lun"] == 0
            assert iscsi["exported"] is True
            assert iscsi["url"] == (
                f"iscsi://{iscsi['chap_user']}%{iscsi['chap_secret']}"
                f"@127.0.0.1:{svc.iscsi_port}/{iscsi['iqn']}/0"
            )
            assert svc.target.target_names() == [iscsi["iqn"]]

            async with http.get(url(svc, "/volumes"), headers=ALICE) as r:
                listing = (await r.json())["volumes"]
            assert [(v["id"], v["name"]) for v in listing] == [(vol["id"], "vol1")]
            async with http.get(url(svc, "/volumes/detail?name=vol1"), headers=ALICE) as r:
                assert [v["id"] for v in (await r.json())["volumes"]] == [vol["id"]]
            async with http.get(url(svc, "/volumes/detail?name=other"), headers=ALICE) as r:
                assert (await r.json())["volumes"] == []
            async with http.get(url(svc, f"/volumes/{vol['id']}"), headers=ALICE) as r:
                assert (await r.json())["volume"] == vol

            async with http.delete(url(svc, f"/volumes/{vol['id']}"), headers=ALICE) as r:
                assert r.status == 202
            await svc.manager.wait_idle()
            assert svc.target.target_names() == []
            async with http.get(url(svc, f"/volumes/{vol['id']}"), headers=ALICE) as r:
                assert r.status == 404
                assert (await r.json())["itemNotFound"]["code"] == 404
            async with http.get(url(svc, "/volumes/detail"), headers=ALICE) as r:
                assert (await r.json())["volumes"] == []

    asyncio.run(run())


def test_volume_data_written_through_the_service_survives_a_restart():
    async def run():
        store = MemoryObjectStore()
        async with service(store) as (svc, http):
            vol = await create(svc, http, name="data")
            backend = svc.manager.attached[vol["id"]].volume
            await backend.write(2048, b"\x5a" * 4096)
        # stop() flushed the cache and released the lease; a new blockd exports it again
        async with service(store) as (svc, _http):
            backend = svc.manager.attached[vol["id"]].volume
            assert await backend.read(2048, 8) == b"\x5a" * 4096
            names = store.object_names(RESERVED_ACCOUNT, chunk_container(vol["id"]))
            # the map, the journal state (stop() checkpointed the journal: no records left) and
            # the one chunk, 1 MiB into a 64 KiB-chunk volume
            assert names == [".alloc", ".journal", "000000000016"]

    asyncio.run(run())


def test_second_blockd_does_not_export_a_volume_the_first_holds():
    async def run():
        store = MemoryObjectStore()
        async with service(store) as (first, http):
            vol = await create(first, http, name="shared")
            async with service(store) as (second, http2):
                assert vol["id"] not in second.manager.attached
                assert second.target.target_names() == []
                async with http2.get(url(second, f"/volumes/{vol['id']}"), headers=ALICE) as r:
                    assert (await r.json())["volume"]["cairn_iscsi"]["exported"] is False
                async with http2.delete(url(second, f"/volumes/{vol['id']}"), headers=ALICE) as r:
                    assert r.status == 409
                    assert "conflictingRequest" in await r.json()

    asyncio.run(run())


def test_auth_and_project_isolation():
    async def run():
        async with service() as (svc, http):
            vol = await create(svc, http)
            async with http.get(url(svc, "/volumes")) as r:
                assert r.status == 401
                assert (await r.json())["unauthorized"]["code"] == 401
            async with http.get(url(svc, "/volumes"), headers={"X-Auth-Token": "nope"}) as r:
                assert r.status == 401
            bob = {"X-Auth-Token": "tok-bob"}
            async with http.get(url(svc, "/volumes"), headers=bob) as r:
                assert r.status == 403
                assert "forbidden" in await r.json()
            async with http.get(url(svc, f"/volumes/{vol['id']}", "AUTH_bob"), headers=bob) as r:
                assert r.status == 404
            async with http.get(url(svc, "/volumes", "AUTH_bob"), headers=bob) as r:
                assert (await r.json())["volumes"] == []
            async with http.get(f"{svc.api_url}/v3/") as r:  # discovery needs no token
                assert (await r.json())["versions"][0]["id"] == "v3.0"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("body", "status", "fault", "words"),
    [
        (b"{not json", 400, "badRequest", "not JSON"),
        (b"[]", 400, "badRequest", "'volume'"),
        (json.dumps({"volume": {"size": 1}}).encode(), 400, "badRequest", "'name'"),
        (json.dumps({"volume": {"name": "a"}}).encode(), 400, "badRequest", "'size' is required"),
        (json.dumps({"volume": {"name": "a", "size": -1}}).encode(), 400, "badRequest", "'size'"),
        (json.dumps({"volume": {"name": "a", "size": True}}).encode(), 400, "badRequest", "size"),
        (
            json.dumps({"volume": {"name": "a", "size_bytes": 1000}}).encode(),
            400,
            "badRequest",
            "512-byte",
        ),
        (
            json.dumps({"volume": {"name": "a", "size": 1, "chunk_bytes": 100}}).encode(),
            400,
            "badRequest",
            "chunk size",
        ),
        (json.dumps({"volume": {"name": "", "size": 1}}).encode(), 400, "badRequest", "name"),
        (b"x" * (100 << 10), 413, "overLimit", ""),
    ],
)
def test_bad_create_requests_get_cinder_faults(body, status, fault, words):
    async def run():
        async with (
            service() as (svc, http),
            http.post(url(svc, "/volumes"), data=body, headers=ALICE) as r,
        ):
            assert r.status == status
            answer = await r.json()
            assert answer[fault]["code"] == status
            assert words in answer[fault]["message"]

    asyncio.run(run())


def test_duplicate_name_conflicts_and_unknown_paths_are_json_faults():
    async def run():
        async with service() as (svc, http):
            await create(svc, http, name="dup")
            body = {"volume": {"name": "dup", "size": 1}}
            async with http.post(url(svc, "/volumes"), json=body, headers=ALICE) as r:
                assert r.status == 409
                assert "conflictingRequest" in await r.json()
            async with http.get(url(svc, "/volumes/not-an-id"), headers=ALICE) as r:
                assert r.status == 404
                assert "itemNotFound" in await r.json()
            async with http.get(f"{svc.api_url}/nowhere") as r:
                assert r.status == 404
                assert "itemNotFound" in await r.json()
            async with http.put(url(svc, "/volumes"), headers=ALICE) as r:
                assert r.status == 405
                assert "badMethod" in await r.json()

    asyncio.run(run())


def test_small_volume_with_size_bytes():
    async def run():
        async with service() as (svc, http):
            vol = await create(svc, http, name="small", size=None, size_bytes=10 << 20)
            assert vol["size_bytes"] == 10 << 20
            assert vol["size"] == 1
            assert svc.manager.attached[vol["id"]].volume.num_blocks == (10 << 20) // 512

    asyncio.run(run())


def test_metrics_and_healthcheck():
    async def run():
        async with service() as (svc, http):
            await create(svc, http)
            async with http.get(f"{svc.api_url}/healthcheck") as r:
                assert r.status == 200
            async with http.get(f"{svc.api_url}/metrics") as r:
                text = await r.text()
            assert "cairn_block_exported_volumes 1.0" in text
            assert "cairn_block_dirty_chunks 0.0" in text

    asyncio.run(run())


def test_daemon_main_reports_a_missing_config_cleanly(tmp_path, capsys):
    from blockd.server import main

    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err
