"""`cairn nodes ACCOUNT [CONTAINER [OBJECT]]`: where a name lives (like swift-get-nodes).

Prints the partition, the primary devices and the handoffs in order, each with the backend URL
of the item; with `--check`, HEADs the item on every listed device (direct storage-server
calls, no proxy) and shows whether it is there, its timestamp and size/etag.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from common.deploy import DeploymentConfig
from ring import Ring
from ring.device import Device
from tools.locate import load_cfg

__all__ = ["check_item", "cmd_nodes", "locate"]

_CONN_TIMEOUT_S = 1.0
_NODE_TIMEOUT_S = 5.0


def _kind(container: str | None, obj: str | None) -> str:
    return "object" if obj is not None else "container" if container is not None else "account"


def open_ring(cfg: DeploymentConfig, kind: str) -> Ring:
    c = cfg.cluster
    return Ring(cfg.ring_dir() / f"{kind}.ring", c.hash_path_prefix, c.hash_path_suffix)


def _server(dev: Device) -> str:
    host = f"[{dev.ip}]" if ":" in dev.ip else dev.ip
    return f"http://{host}:{dev.port}"


def _entry(dev: Device, part: int, names: list[str]) -> dict[str, Any]:
    # as the storage clients build it: an object name keeps its slashes
    parts = [quote(p, safe="") for p in (dev.device, str(part), *names[:2])]
    parts += [quote(n, safe="/") for n in names[2:]]
    path = "/".join(parts)
    return {
        "url": f"{_server(dev)}/{path}",
        "server": _server(dev),
        "device": dev.device,
        "zone": dev.zone,
        "region": dev.region,
    }


def locate(
    cfg: DeploymentConfig,
    account: str,
    container: str | None = None,
    obj: str | None = None,
    handoffs_max: int | None = None,
) -> tuple[int, list[tuple[Device, dict[str, Any]]], list[tuple[Device, dict[str, Any]]]]:
    """The partition, primaries and handoffs (device + JSON entry) of a name."""
    if obj is not None and container is None:
        raise ValueError("an object needs a container")
    ring = open_ring(cfg, _kind(container, obj))
    names = [n for n in (account, container, obj) if n is not None]
    part, primaries = ring.get_nodes(account, container, obj)
    more = ring.get_more_nodes(part)
    handoffs = list(more if handoffs_max is None else itertools.islice(more, handoffs_max))
    return (
        part,
        [(d, _entry(d, part, names)) for d in primaries],
        [(d, _entry(d, part, names)) for d in handoffs],
    )


async def check_item(
    session: aiohttp.ClientSession,
    dev: Device,
    part: int,
    account: str,
    container: str | None,
    obj: str | None,
) -> dict[str, Any]:
    """HEAD the item on one device: present, timestamp, and size/etag or counts."""
    from accountd.client import direct_head_account
    from containerd.client import direct_head_container
    from objectd.client import direct_head_object

    server = _server(dev)
    try:
        if obj is not None and container is not None:
            status, h = await direct_head_object(
                session,
                server,
                dev.device,
                part,
                account,
                container,
                obj,
                conn_timeout_s=_CONN_TIMEOUT_S,
                node_timeout_s=_NODE_TIMEOUT_S,
            )
        elif container is not None:
            status, h = await direct_head_container(
                session,
                server,
                dev.device,
                part,
                account,
                container,
                conn_timeout_s=_CONN_TIMEOUT_S,
                node_timeout_s=_NODE_TIMEOUT_S,
            )
        else:
            status, h = await direct_head_account(
                session,
                server,
                dev.device,
                part,
                account,
                conn_timeout_s=_CONN_TIMEOUT_S,
                node_timeout_s=_NODE_TIMEOUT_S,
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return {"present": None, "status": None, "timestamp": None, "error": str(e) or repr(e)}
    out: dict[str, Any] = {
        "present": 200 <= status < 300,
        "status": status,
        "timestamp": h.get("X-Backend-Timestamp") or h.get("X-Timestamp") or None,
    }
    if obj is not None:
        out["size"] = int(h["Content-Length"]) if out["present"] else None
        out["etag"] = h.get("ETag", "").strip('"') or None
    elif container is not None:
        out["object_count"] = _int(h.get("X-Container-Object-Count"))
        out["bytes_used"] = _int(h.get("X-Container-Bytes-Used"))
    else:
        out["container_count"] = _int(h.get("X-Account-Container-Count"))
        out["bytes_used"] = _int(h.get("X-Account-Bytes-Used"))
    return out


def _int(v: str | None) -> int | None:
    return int(v) if v is not None and v.isdigit() else None


async def _check_all(
    devs: list[Device], part: int, account: str, container: str | None, obj: str | None
) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        return list(
            await asyncio.gather(
                *(check_item(session, d, part, account, container, obj) for d in devs)
            )
        )


def nodes_doc(
    cfg: DeploymentConfig,
    account: str,
    container: str | None = None,
    obj: str | None = None,
    *,
    check: bool = False,
    handoffs_max: int | None = None,
) -> dict[str, Any]:
    """What `cairn nodes --json` prints."""
    part, prim, hand = locate(cfg, account, container, obj, handoffs_max)
    if check:
        devs = [d for d, _ in prim] + [d for d, _ in hand]
        results = asyncio.run(_check_all(devs, part, account, container, obj))
        for (_d, entry), res in zip(prim + hand, results, strict=True):
            entry.update(res)
    return {
        "kind": _kind(container, obj),
        "partition": part,
        "path": "/".join(n for n in (account, container, obj) if n is not None),
        "primaries": [e for _, e in prim],
        "handoffs": [e for _, e in hand],
    }


def _line(e: dict[str, Any]) -> str:
    text = f"    {e['url']}  (zone {e['zone']})"
    if "present" not in e:
        return text
    if e["present"] is None:
        return f"{text}  UNREACHABLE ({e.get('error')})"
    if not e["present"]:
        stamp = f" tombstone/older at {e['timestamp']}" if e.get("timestamp") else ""
        return f"{text}  missing ({e['status']}){stamp}"
    extra = ""
    if "etag" in e:
        extra = f" size {e['size']} etag {e['etag']}"
    elif "object_count" in e:
        extra = f" objects {e['object_count']} bytes {e['bytes_used']}"
    elif "container_count" in e:
        extra = f" containers {e['container_count']} bytes {e['bytes_used']}"
    return f"{text}  present ts {e['timestamp']}{extra}"


def cmd_nodes(
    data_dir: Path,
    account: str,
    container: str | None,
    obj: str | None,
    *,
    check: bool = False,
    as_json: bool = False,
    handoffs_max: int | None = None,
) -> int:
    cfg = load_cfg(data_dir)
    try:
        doc = nodes_doc(cfg, account, container, obj, check=check, handoffs_max=handoffs_max)
    except ValueError as e:
        print(f"cairn nodes: {e}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(doc, indent=1))
        return 0
    print(f"{doc['kind']} /{doc['path']}")
    print(f"  partition {doc['partition']}")
    print("  primaries:")
    for entry in doc["primaries"]:
        print(_line(entry))
    print("  handoffs:")
    for entry in doc["handoffs"]:
        print(_line(entry))
    if not check:
        print("  (add --check to ask each device whether it holds the item)")
    return 0
