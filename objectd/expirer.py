"""Object expiry: a per-device queue of (delete_at, object), and the daemon that empties it.

On a PUT or POST carrying X-Delete-At, the object server records the object in
``<device>/expiring/<hour bucket>/<delete_at>-<hash>-<timestamp>`` (msgpack version 1,
written atomically). The expirer takes each due entry and DELETEs the object on every
primary with ``X-If-Delete-At`` (so an object re-POSTed with another time, or overwritten,
is left alone) and ``X-Timestamp = delete_at``, sending the container update too. Once every
replica answered with a final status the entry is removed. See docs/object-replication.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import msgpack

from common.clock import Clock
from common.fsutil import atomic_write_bytes, fsync_dir, makedirs_durable
from common.log import get_logger
from common.timestamps import Timestamp
from objectd.client import direct_delete_object
from objectd.replicator import local_device_names
from ring import Ring

__all__ = [
    "BUCKET_S",
    "ExpirerStats",
    "ExpiryEntry",
    "ObjectExpirer",
    "decode_entry",
    "encode_entry",
    "write_entry",
]

log = get_logger("cairn.object-expirer")
ENTRY_VERSION = 1
BUCKET_S = 3600
ENTRY_BYTES_MAX = 8 * 1024
FINAL_STATUSES = frozenset({404, 409, 412})  # plus any 2xx


@dataclass(frozen=True)
class ExpiryEntry:
    delete_at: int
    account: str
    container: str
    obj: str
    hash_hex: str
    timestamp: Timestamp  # of the PUT/POST that set X-Delete-At

    def file_name(self) -> str:
        return f"{self.delete_at:010d}-{self.hash_hex}-{self.timestamp.internal}"


def encode_entry(e: ExpiryEntry) -> bytes:
    rec = {
        "v": ENTRY_VERSION,
        "delete_at": e.delete_at,
        "account": e.account,
        "container": e.container,
        "obj": e.obj,
        "hash": e.hash_hex,
        "timestamp": e.timestamp.internal,
    }
    data: bytes = msgpack.packb(rec, use_bin_type=True)
    return data


def decode_entry(data: bytes) -> ExpiryEntry:
    if len(data) > ENTRY_BYTES_MAX:
        raise ValueError("expiry entry too large")
    try:
        rec = msgpack.unpackb(data, raw=False)
        if not isinstance(rec, dict) or rec.get("v") != ENTRY_VERSION:
            raise ValueError("not a version 1 expiry entry")
        e = ExpiryEntry(
            int(rec["delete_at"]),
            str(rec["account"]),
            str(rec["container"]),
            str(rec["obj"]),
            str(rec["hash"]),
            Timestamp.parse(str(rec["timestamp"])),
        )
    except (KeyError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"bad expiry entry: {exc}") from None
    return e


def write_entry(device_root: Path, e: ExpiryEntry) -> None:
    """Queue `e` durably (blocking; the object server calls it after a PUT/POST)."""
    bucket = device_root / "expiring" / str(e.delete_at - e.delete_at % BUCKET_S)
    makedirs_durable(bucket)
    atomic_write_bytes(bucket / e.file_name(), encode_entry(e))


def _due_entries(device_root: Path, now_s: float, limit: int) -> list[Path]:
    base = device_root / "expiring"
    out: list[Path] = []
    try:
        buckets = sorted(b for b in os.listdir(base) if b.isdigit())
    except FileNotFoundError:
        return out
    for b in buckets:
        if int(b) > now_s:
            break
        try:
            names = sorted(os.listdir(base / b))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if not names:
            with contextlib.suppress(OSError):
                os.rmdir(base / b)
            continue
        for n in names:
            head = n.split("-", 1)[0]
            if n.startswith(".") or not head.isdigit():
                continue
            if int(head) <= now_s:
                out.append(base / b / n)
            if len(out) >= limit:
                return out
    return out


def _read(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(ENTRY_BYTES_MAX + 1)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)


def _delete_timestamp(e: ExpiryEntry) -> Timestamp:
    """The tombstone's time: delete_at, or just after the write that set it if that is later.

    (A PUT at 12.3 s may set X-Delete-At: 12; a tombstone at 12.0 would lose to it.)
    """
    t = Timestamp.from_float(float(e.delete_at))
    if t <= e.timestamp:
        t = e.timestamp.with_offset(e.timestamp.offset + 1)
    return t


@dataclass
class ExpirerStats:
    due: int = 0
    expired: int = 0  # entries whose object every replica has now dealt with
    retried: int = 0  # entries kept for the next pass (a replica failed)
    bad: int = 0
    errors: int = 0


@dataclass(frozen=True)
class ExpirerConf:
    devices_dir: Path
    concurrency: int = 8
    entries_per_pass_max: int = 100_000
    conn_timeout_s: float = 0.5
    node_timeout_s: float = 10.0


class ObjectExpirer:
    def __init__(
        self,
        conf: ExpirerConf,
        object_ring: Ring,
        container_ring: Ring | None,
        session: aiohttp.ClientSession,
        clock: Clock,
    ) -> None:
        self.conf = conf
        self.object_ring = object_ring
        self.container_ring = container_ring
        self.session = session
        self.clock = clock
        self.stats = ExpirerStats()

    async def run_once(self) -> ExpirerStats:
        self.stats = ExpirerStats()
        sem = asyncio.Semaphore(self.conf.concurrency)
        now = self.clock.time()
        for device in await asyncio.to_thread(local_device_names, self.conf.devices_dir):
            root = self.conf.devices_dir / device
            due = await asyncio.to_thread(_due_entries, root, now, self.conf.entries_per_pass_max)
            self.stats.due += len(due)
            await asyncio.gather(*(self._one(sem, p) for p in due))
        log.info("expirer pass", extra={"fields": asdict(self.stats)})
        return self.stats

    async def _one(self, sem: asyncio.Semaphore, path: Path) -> None:
        async with sem:
            try:
                entry = decode_entry(await asyncio.to_thread(_read, path))
            except FileNotFoundError:
                return
            except ValueError:
                self.stats.bad += 1
                await asyncio.to_thread(_remove, path)
                return
            if await self._expire(entry):
                await asyncio.to_thread(_remove, path)
                self.stats.expired += 1
            else:
                self.stats.retried += 1

    def _container_headers(self, e: ExpiryEntry, index: int) -> dict[str, str]:
        if self.container_ring is None:
            return {}
        part, nodes = self.container_ring.get_nodes(e.account, e.container)
        if not nodes:
            return {}
        node = nodes[index % len(nodes)]
        ip = f"[{node.ip}]" if ":" in node.ip else node.ip
        return {
            "X-Container-Host": f"{ip}:{node.port}",
            "X-Container-Device": node.device,
            "X-Container-Partition": str(part),
        }

    async def _expire(self, e: ExpiryEntry) -> bool:
        """DELETE on every primary; True once each gave a final answer."""
        part, nodes = self.object_ring.get_nodes(e.account, e.container, e.obj)
        results = await asyncio.gather(
            *(self._delete(e, part, i, node) for i, node in enumerate(nodes))
        )
        return all(results)

    async def _delete(self, e: ExpiryEntry, part: int, index: int, node: object) -> bool:
        from ring import Device

        assert isinstance(node, Device)
        headers = {
            "X-Timestamp": _delete_timestamp(e).internal,
            "X-If-Delete-At": str(e.delete_at),
            "User-Agent": "cairn-object-expirer",
            **self._container_headers(e, index),
        }
        ip = f"[{node.ip}]" if ":" in node.ip else node.ip
        try:
            status, _ = await direct_delete_object(
                self.session,
                f"http://{ip}:{node.port}",
                node.device,
                part,
                e.account,
                e.container,
                e.obj,
                headers,
                conn_timeout_s=self.conf.conn_timeout_s,
                node_timeout_s=self.conf.node_timeout_s,
            )
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.stats.errors += 1
            return False
        return 200 <= status < 300 or status in FINAL_STATUSES
