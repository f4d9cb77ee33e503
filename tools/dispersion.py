"""`cairn dispersion`: place sample containers and objects across partitions, then report
the share of their replicas that are where the ring says (swift-dispersion-populate + report).

The samples live in the reserved account `.cairn_dispersion` (a leading dot: no tempauth
reseller prefix matches it, so no client can reach it through the proxy). They are written
straight to the storage servers with the direct clients, one copy per primary, so a sample
whose copy failed to land shows up as missing until replication repairs it.

The first run chooses names covering distinct partitions and records them in
`<data-dir>/dispersion.json` (format: docs/operations.md); later runs re-use that manifest
and only report. The report HEADs every sample on its primaries in the *current* ring.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

import aiohttp

from common.clock import Clock, SystemClock
from common.deploy import DeploymentConfig
from common.fsutil import atomic_write_bytes
from common.timestamps import Timestamp
from ring import Ring
from ring.device import Device
from tools.locate import load_cfg
from tools.nodes import open_ring

__all__ = [
    "DISPERSION_ACCOUNT",
    "MANIFEST_VERSION",
    "cmd_dispersion",
    "populate",
    "report",
]

DISPERSION_ACCOUNT = ".cairn_dispersion"
OBJECTS_CONTAINER = "dispersion_objects"
MANIFEST_NAME = "dispersion.json"
MANIFEST_VERSION = 1
DEFAULT_COVERAGE_PCT = 5.0
_ITEMS_MAX = 10_000
_CONCURRENCY = 16
_CONN_TIMEOUT_S = 1.0
_NODE_TIMEOUT_S = 10.0


class _Timeouts(TypedDict):
    conn_timeout_s: float
    node_timeout_s: float


_TIMEOUTS: _Timeouts = {"conn_timeout_s": _CONN_TIMEOUT_S, "node_timeout_s": _NODE_TIMEOUT_S}


def manifest_path(cfg: DeploymentConfig) -> Path:
    return Path(cfg.data_dir) / MANIFEST_NAME


def read_manifest(cfg: DeploymentConfig) -> dict[str, Any] | None:
    try:
        doc = json.loads(manifest_path(cfg).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
        return None
    return doc


def choose_names(
    ring: Ring, prefix: str, count: int, account: str, container: str | None = None
) -> list[str]:
    """`count` names `<prefix><i>` (containers of `account`, or objects of `container`)
    whose partitions are all distinct."""
    seen: set[int] = set()
    out: list[str] = []
    i = 0
    tries_max = count * 64 + ring.partition_count * 8
    while len(out) < count and i < tries_max:
        name = f"{prefix}{i}"
        part = (
            ring.get_part(account, name)
            if container is None
            else ring.get_part(account, container, name)
        )
        if part not in seen:
            seen.add(part)
            out.append(name)
        i += 1
    return out


def _progress(label: str, done: int, total: int) -> None:
    step = max(1, total // 10)
    if done == total or done % step == 0:
        print(f"dispersion: {label} {done}/{total}", file=sys.stderr, flush=True)


async def _bounded(jobs: list[Callable[[], Awaitable[Any]]], label: str, quiet: bool) -> list[Any]:
    sem = asyncio.Semaphore(_CONCURRENCY)
    done = 0

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        nonlocal done
        async with sem:
            result = await job()
        done += 1
        if not quiet:
            _progress(label, done, len(jobs))
        return result

    return list(await asyncio.gather(*(run(j) for j in jobs)))


def _server(dev: Device) -> str:
    host = f"[{dev.ip}]" if ":" in dev.ip else dev.ip
    return f"http://{host}:{dev.port}"


async def _put_all(
    put: Callable[[Device, int], Awaitable[tuple[int, Any]]], devs: list[Device], part: int
) -> int:
    """PUT one item to each of its primaries; the number of copies that landed."""
    landed = 0
    for dev in devs:
        try:
            status, _ = await put(dev, part)
        except (aiohttp.ClientError, TimeoutError, OSError):
            continue
        landed += 1 if 200 <= status < 300 else 0
    return landed


async def _populate(cfg: DeploymentConfig, coverage_pct: float, clock: Clock, quiet: bool) -> None:
    from accountd.client import direct_put_account
    from containerd.client import direct_put_container
    from objectd.client import direct_put_object

    acct_ring, cont_ring, obj_ring = (open_ring(cfg, k) for k in ("account", "container", "object"))
    count_c = _count(cont_ring, coverage_pct)
    count_o = _count(obj_ring, coverage_pct)
    containers = choose_names(cont_ring, "dispersion_", count_c, DISPERSION_ACCOUNT)
    objects = choose_names(obj_ring, "dispersion_", count_o, DISPERSION_ACCOUNT, OBJECTS_CONTAINER)
    ts = Timestamp.from_float(clock.time()).internal
    kw = _TIMEOUTS
    a = DISPERSION_ACCOUNT
    async with aiohttp.ClientSession() as s:
        part, devs = acct_ring.get_nodes(a)
        await _put_all(
            lambda d, p: direct_put_account(
                s, _server(d), d.device, p, a, {"X-Timestamp": ts}, **kw
            ),
            devs,
            part,
        )

        def put_container(name: str) -> Callable[[], Awaitable[int]]:
            part, devs = cont_ring.get_nodes(a, name)
            return lambda: _put_all(
                lambda d, p: direct_put_container(
                    s, _server(d), d.device, p, a, name, {"X-Timestamp": ts}, **kw
                ),
                devs,
                part,
            )

        def put_object(name: str) -> Callable[[], Awaitable[int]]:
            part, devs = obj_ring.get_nodes(a, OBJECTS_CONTAINER, name)
            body = name.encode()
            headers = {
                "X-Timestamp": ts,
                "Content-Type": "text/plain",
                "Content-Length": str(len(body)),
            }
            return lambda: _put_all(
                lambda d, p: direct_put_object(
                    s, _server(d), d.device, p, a, OBJECTS_CONTAINER, name, body, headers, **kw
                ),
                devs,
                part,
            )

        jobs = [put_container(c) for c in [OBJECTS_CONTAINER, *containers]]
        c_landed = await _bounded(jobs, "placing containers", quiet)
        o_landed = await _bounded([put_object(o) for o in objects], "placing objects", quiet)
    if not any(c_landed) or not any(o_landed):
        raise RuntimeError("no dispersion sample could be written (is the cluster up?)")
    doc = {
        "version": MANIFEST_VERSION,
        "account": DISPERSION_ACCOUNT,
        "objects_container": OBJECTS_CONTAINER,
        "timestamp": ts,
        "coverage_pct": coverage_pct,
        "containers": containers,
        "objects": objects,
    }
    atomic_write_bytes(manifest_path(cfg), json.dumps(doc, indent=1).encode())


def _count(ring: Ring, coverage_pct: float) -> int:
    n = round(ring.partition_count * coverage_pct / 100.0)
    return max(1, min(_ITEMS_MAX, n, ring.partition_count))


def populate(
    cfg: DeploymentConfig,
    coverage_pct: float = DEFAULT_COVERAGE_PCT,
    clock: Clock | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Write the samples (once) and return the manifest."""
    existing = read_manifest(cfg)
    if existing is not None:
        return existing
    asyncio.run(_populate(cfg, coverage_pct, clock or SystemClock(), quiet))
    doc = read_manifest(cfg)
    assert doc is not None
    return doc


async def _present(s: aiohttp.ClientSession, dev: Device, part: int, names: list[str]) -> bool:
    from containerd.client import direct_head_container
    from objectd.client import direct_head_object

    url, d = _server(dev), dev.device
    try:
        if len(names) == 3:
            status, _ = await direct_head_object(
                s, url, d, part, names[0], names[1], names[2], **_TIMEOUTS
            )
        else:
            status, _ = await direct_head_container(
                s, url, d, part, names[0], names[1], **_TIMEOUTS
            )
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
    return 200 <= status < 300


def _tally(results: list[tuple[int, int]]) -> dict[str, Any]:
    expected = sum(e for e, _ in results)
    found = sum(f for _, f in results)
    return {
        "expected": expected,
        "found": found,
        "percent": round(100.0 * found / expected, 2) if expected else 100.0,
        "items": len(results),
        "items_whole": sum(1 for e, f in results if f == e),
        "items_missing_some": sum(1 for e, f in results if 0 < f < e),
        "items_missing_all": sum(1 for _e, f in results if f == 0),
    }


async def _report(cfg: DeploymentConfig, manifest: dict[str, Any], quiet: bool) -> dict[str, Any]:
    cont_ring, obj_ring = open_ring(cfg, "container"), open_ring(cfg, "object")
    a = str(manifest["account"])
    oc = str(manifest["objects_container"])
    async with aiohttp.ClientSession() as s:

        def check(ring: Ring, names: list[str]) -> Callable[[], Awaitable[tuple[int, int]]]:
            async def run() -> tuple[int, int]:
                part, devs = ring.get_nodes(*names)
                found = await asyncio.gather(*(_present(s, d, part, names) for d in devs))
                return len(devs), sum(found)

            return run

        cjobs = [check(cont_ring, [a, c]) for c in manifest["containers"]]
        ojobs = [check(obj_ring, [a, oc, o]) for o in manifest["objects"]]
        containers = await _bounded(cjobs, "checking containers", quiet)
        objects = await _bounded(ojobs, "checking objects", quiet)
    return {"containers": _tally(containers), "objects": _tally(objects)}


def report(cfg: DeploymentConfig, manifest: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Copies found on their current primaries, for containers and for objects."""
    return asyncio.run(_report(cfg, manifest, quiet))


def cmd_dispersion(
    data_dir: Path,
    *,
    as_json: bool = False,
    coverage_pct: float | None = None,
    populate_only: bool = False,
) -> int:
    cfg = load_cfg(data_dir)
    pct = DEFAULT_COVERAGE_PCT if coverage_pct is None else coverage_pct
    if not 0 < pct <= 100:
        print("cairn dispersion: --coverage must be in (0, 100]", file=sys.stderr)
        return 2
    try:
        manifest = populate(cfg, pct)
    except RuntimeError as e:
        print(f"cairn dispersion: {e}", file=sys.stderr)
        return 1
    if populate_only:
        return 0
    doc = report(cfg, manifest)
    if as_json:
        print(json.dumps(doc, indent=1))
    else:
        for kind in ("containers", "objects"):
            r = doc[kind]
            print(
                f"{kind}: {r['percent']:.2f}% of copies found ({r['found']} of {r['expected']});"
                f" {r['items_whole']} of {r['items']} whole, {r['items_missing_some']} missing"
                f" some, {r['items_missing_all']} missing all"
            )
    whole = all(doc[k]["found"] == doc[k]["expected"] for k in ("containers", "objects"))
    return 0 if whole else 1
