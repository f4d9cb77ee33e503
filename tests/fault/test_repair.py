"""Issue 4, fault tests 1, 2 and 5 on one cluster started the `cairn up` way.

1. kill -9 a node during 1,000 PUTs and restart it 10 s later: nothing acknowledged is lost
   and one replication pass restores every replica.
2. corrupt 5% and delete 5% of one node's object files (behind the object server's back, so
   the cached suffix hashes still claim them): clients never get a wrong byte, and an
   auditor pass (which rehashes every partition it walks) plus a replication pass makes every
   replica whole again.
5. a node misses container updates while down: updater + replicator converge the listing.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import pytest

from ring.hashing import hash_path
from tests.cluster import Cluster, start_cluster
from tests.fault.support import (
    cfg_of,
    check_replicas,
    device_files,
    node_down,
    node_up,
    quiet_daemons,
    require_daemons,
    run_pass,
)
from tools.nodes import locate, open_ring

pytestmark = [pytest.mark.fault, pytest.mark.integration]

ACCOUNT = "AUTH_admin"
PUTS = 1000
PUT_THREADS = 4
KILL_AFTER_ACKS = 150
DOWN_S = 10.0


def _tweak(doc: dict[str, Any]) -> None:
    quiet_daemons(doc)
    # The kill -9 test makes the proxy error-limit node2; with Swift's 60 s the next test's
    # PUTs would land on handoffs (not what the rot test is about), so forget errors fast.
    doc["proxy"]["error_suppression_interval_s"] = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    require_daemons("object", "container", "account")
    c = start_cluster(tmp_path_factory.mktemp("repair"), tweak=_tweak)
    try:
        yield c
    finally:
        c.stop()


def test_kill9_during_1000_puts_loses_nothing(cluster: Cluster) -> None:
    conn = cluster.connection()
    container = "fault-kill9"
    conn.put_container(container)
    names = [f"obj-{i:04d}" for i in range(PUTS)]
    acked: dict[str, bytes] = {}
    killed = threading.Event()

    def killer() -> None:
        # wait for the stream to be well under way, then kill node2 hard for DOWN_S
        deadline = time.monotonic() + 300
        while len(acked) < KILL_AFTER_ACKS and time.monotonic() < deadline:
            time.sleep(0.05)
        node_down(cluster, "node2")
        killed.set()
        time.sleep(DOWN_S)
        for s in cluster.status()["services"]:
            if s["name"].startswith("node2-"):
                cluster.release(s["name"])

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    _put_stream(cluster, container, names, acked)
    t.join(120)
    assert killed.is_set(), "the node was never killed (stream too short?)"
    cluster.wait_healthy(120)
    assert len(acked) >= PUTS * 0.9, f"only {len(acked)} of {PUTS} PUTs acknowledged"

    assert _unreadable(cluster, container, acked) == []

    # Node2 missed writes while down: one replication pass must restore every replica.
    run_pass(cluster, kinds=["object"], only=["replicator"])
    rep = check_replicas(cluster, container, acked)
    assert rep.complete, (
        f"after replication {len(rep.missing)} objects miss replicas "
        f"(e.g. {list(rep.missing.items())[:3]}), {len(rep.wrong)} differ"
    )


def _unreadable(cluster: Cluster, container: str, objects: dict[str, bytes]) -> list[str]:
    """GET every object through the proxy (several client threads); the names that failed
    or came back with other bytes."""
    items = list(objects.items())

    def worker(chunk: list[tuple[str, bytes]]) -> list[str]:
        conn = cluster.connection()
        bad = []
        for name, body in chunk:
            try:
                ok = conn.get_object(container, name)[1] == body
            except Exception as e:
                bad.append(f"{name}: {e}")
                conn = cluster.connection()
                continue
            if not ok:
                bad.append(f"{name}: wrong bytes")
        return bad

    with ThreadPoolExecutor(PUT_THREADS) as pool:
        results = pool.map(worker, [items[i::PUT_THREADS] for i in range(PUT_THREADS)])
    return [b for r in results for b in r]


def _put_stream(
    cluster: Cluster, container: str, names: list[str], acked: dict[str, bytes]
) -> None:
    """PUT every name from several client threads, recording each 2xx into `acked` as it
    happens (the killer thread watches it)."""
    lock = threading.Lock()

    def worker(chunk: list[str]) -> None:
        conn = cluster.connection()
        for name in chunk:
            body = os.urandom(256 + int(name[-4:]) * 7 % 2048)
            try:
                conn.put_object(container, name, body)
            except Exception:
                conn = cluster.connection()
                continue
            with lock:
                acked[name] = body

    chunks = [names[i::PUT_THREADS] for i in range(PUT_THREADS)]
    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(worker, chunks))


ROT_OBJECTS = 120


def _hash_dirs(cluster: Cluster, container: str, names: list[str]) -> dict[str, str]:
    c = cfg_of(cluster).cluster
    return {
        hash_path(c.hash_path_prefix, c.hash_path_suffix, ACCOUNT, container, n): n for n in names
    }


GET_TIMEOUT_S = 5.0


def _get_all_checked(cluster: Cluster, container: str, objects: dict[str, bytes]) -> list[str]:
    """GET every object through the proxy; return the names whose bytes were WRONG.

    A failed GET is allowed while damage is present (it is not a wrong byte); a GET that
    returns must return exactly the stored bytes. The short client timeout bounds a read
    that stalls when a replica turns out corrupt mid-stream.
    """
    import swiftclient

    def connect() -> swiftclient.Connection:
        return swiftclient.Connection(
            authurl=cluster.auth_url,
            user=cluster.user,
            key=cluster.key,
            retries=0,
            timeout=GET_TIMEOUT_S,
        )

    conn = connect()
    wrong = []
    for name, body in objects.items():
        try:
            got = conn.get_object(container, name)[1]
        except Exception:
            conn = connect()
            continue
        if got != body:
            wrong.append(name)
    return wrong


def _recon(cluster: Cluster, node: str, daemon: str) -> dict[str, Any]:
    cfg = cfg_of(cluster)
    path = cfg.devices_dir(cfg.node(node)) / "recon" / f"{daemon}.json"
    stats: dict[str, Any] = json.loads(path.read_text())["stats"]
    return stats


def _direct_bodies_whole(cluster: Cluster, container: str, objects: dict[str, bytes]) -> list[str]:
    """GET every object's full body from each of its primaries; list the bad replicas."""
    cfg = cfg_of(cluster)
    ring = open_ring(cfg, "object")
    from objectd.client import direct_get_object

    async def run() -> list[str]:
        bad: list[str] = []
        sem = asyncio.Semaphore(16)
        async with aiohttp.ClientSession() as s:

            async def one(name: str, body: bytes) -> None:
                part, devs = ring.get_nodes(ACCOUNT, container, name)
                for d in devs:
                    async with sem:
                        try:
                            resp = await direct_get_object(
                                s,
                                f"http://{d.ip}:{d.port}",
                                d.device,
                                part,
                                ACCOUNT,
                                container,
                                name,
                            )
                            try:
                                got = await resp.read() if resp.status == 200 else None
                            finally:
                                resp.release()
                        except aiohttp.ClientError as e:
                            got = None
                            bad.append(f"{name}@{d.device}: {e}")
                            continue
                    if got != body:
                        bad.append(f"{name}@{d.ip}:{d.port}/{d.device}")

            await asyncio.gather(*(one(k, v) for k, v in objects.items()))
        return bad

    return asyncio.run(run())


def test_rot_and_loss_repaired_by_auditor_and_replicator(cluster: Cluster) -> None:
    conn = cluster.connection()
    container = "fault-rot"
    conn.put_container(container)
    objects = {f"rot-{i:04d}": os.urandom(3000 + i * 13) for i in range(ROT_OBJECTS)}
    for name, body in objects.items():
        conn.put_object(container, name, body)
    # Steady state before the damage: one replication pass puts every replica in place and
    # leaves every suffix hash cached with no pending invalidation, so a file deleted by
    # hand below hides behind a cached hash that still claims it (only the auditor's
    # rehash can reveal it).
    run_pass(cluster, kinds=["object"], only=["replicator"])
    pre = check_replicas(cluster, container, objects)
    assert pre.complete, f"replicas not in place before the damage: {pre.missing}"

    by_hash = _hash_dirs(cluster, container, list(objects))
    files = [p for p in device_files(cluster, "node1") if p.parent.name in by_hash]
    assert len(files) >= ROT_OBJECTS // 3, "node1 holds too few of the objects to test"
    n = max(1, round(len(files) * 0.05))
    # spread the choice over the sorted list rather than taking neighbours
    step = max(1, len(files) // (2 * n))
    picks = files[::step][: 2 * n]
    corrupt, delete = picks[:n], picks[n : 2 * n]
    for p in corrupt:
        body_len = len(objects[by_hash[p.parent.name]])
        with open(p, "r+b") as f:
            f.seek(body_len // 2)
            b = f.read(8)
            f.seek(body_len // 2)
            f.write(bytes(x ^ 0xFF for x in b))
            f.flush()
            os.fsync(f.fileno())
    for p in delete:
        p.unlink()

    # clients read half the objects before the auditor runs (the read path meets some of
    # the damage), the rest after it
    names = sorted(objects)
    first = {k: objects[k] for k in names[: len(names) // 2]}
    assert _get_all_checked(cluster, container, first) == [], "a client got corrupted bytes"
    run_pass(cluster, kinds=["object"], only=["auditor"], nodes=["node1"])
    node1 = next(n for n in cluster.status()["nodes"] if n["name"] == "node1")
    assert (node1["quarantined"] or 0) >= len(corrupt), f"not all quarantined: {node1}"
    audit = _recon(cluster, "node1", "object-auditor")
    assert audit["stale_suffixes"] >= 1, f"the deletions were not found stale: {audit}"
    assert _get_all_checked(cluster, container, objects) == [], "a client got corrupted bytes"
    run_pass(cluster, kinds=["object"], only=["replicator"])

    rep = check_replicas(cluster, container, objects)
    assert rep.complete, f"missing {rep.missing}, wrong {rep.wrong}"
    bad = _direct_bodies_whole(cluster, container, objects)
    assert bad == [], f"replicas not whole after auditor + replicator: {bad[:10]}"


async def _listings(cluster: Cluster, container: str) -> list[tuple[str, set[str] | None]]:
    from containerd.client import ListingParams, direct_get_container

    part, prim, _ = locate(cfg_of(cluster), ACCOUNT, container, handoffs_max=0)
    out: list[tuple[str, set[str] | None]] = []
    async with aiohttp.ClientSession() as s:
        for d, e in prim:
            names: set[str] = set()
            marker = ""
            while True:
                params = ListingParams(marker=marker, limit=1000)
                status, _h, rows = await direct_get_container(
                    s, f"http://{d.ip}:{d.port}", d.device, part, ACCOUNT, container, params
                )
                if status != 200 or rows is None:
                    out.append((e["url"], None))
                    break
                batch = [str(r["name"]) for r in rows]
                names.update(batch)
                if len(batch) < 1000:
                    out.append((e["url"], names))
                    break
                marker = batch[-1]
    return out


def _quorum_without(cluster: Cluster, container: str, name: str, node: str) -> bool:
    """At least two of the object's primaries are on other nodes than `node`.

    This cluster has four devices: an object with two primaries on a down node has a single
    handoff, which answers 404 to the DELETE (it never held the object), so the answers are
    204/404/503 with no majority and the proxy says 503, as Swift does. Only objects with
    two reachable primaries can be deleted while the node is down.
    """
    cfg = cfg_of(cluster)
    port = cfg.node(node).object_port
    _part, prim, _ = locate(cfg, ACCOUNT, container, name, handoffs_max=0)
    return sum(1 for d, _e in prim if d.port != port) >= 2


def test_listing_converges_after_node_missed_updates(cluster: Cluster) -> None:
    conn = cluster.connection()
    container = "fault-listing"
    conn.put_container(container)
    before = [f"before-{i:03d}" for i in range(20)]
    for name in before:
        conn.put_object(container, name, name.encode())
    node_down(cluster, "node2")
    try:
        during = [f"during-{i:03d}" for i in range(40)]
        for name in during:
            conn.put_object(container, name, name.encode())
        # deletes of objects whose quorum is reachable without node2 (see _quorum_without)
        gone = [n for n in before if _quorum_without(cluster, container, n, "node2")][:8]
        assert gone, "no object has two primaries off node2"
        for name in gone:
            conn.delete_object(container, name)
    finally:
        node_up(cluster, "node2")
    want = (set(before) - set(gone)) | set(during)

    listings: list[Any] = []
    for _ in range(3):
        run_pass(cluster, kinds=["object"], only=["updater"])
        run_pass(cluster, kinds=["container"])
        listings = asyncio.run(_listings(cluster, container))
        if all(names == want for _url, names in listings):
            break
    for url, names in listings:
        assert names is not None, f"{url} did not answer a listing"
        assert names == want, (
            f"{url}: missing {sorted(want - names)[:5]}, extra {sorted(names - want)[:5]}"
        )
    listed = {o["name"] for o in conn.get_container(container, full_listing=True)[1]}
    assert listed == want
    hdrs = conn.head_container(container)
    assert int(hdrs["x-container-object-count"]) == len(want)
