"""The real ObjectStore: objectd's ring-aware cluster client, straight to the object servers.

``ObjectCluster.put`` returns only after a quorum of replicas fsynced the object, and ``get``
reads every primary and returns the newest answer, which is what the chunk cache and the
leases rely on. Quorum failures become :class:`StoreUnavailable`. The store holds keep-alive
connections to the object servers: ``close`` it (or use it as ``async with``) when done.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import TracebackType

from blockd.store import StoreNotFound, StoreUnavailable
from common.clock import Clock
from common.deploy import DeploymentConfig
from objectd.cluster_client import ObjectCluster, QuorumError

__all__ = ["RingObjectStore", "open_ring_store"]

_TOTAL_RE = re.compile(r"/(\d+)\Z")  # Content-Range: bytes 0-511/524288, or bytes */524288


class RingObjectStore:
    def __init__(self, cluster: ObjectCluster) -> None:
        self.cluster = cluster

    async def close(self) -> None:
        await self.cluster.close()

    async def __aenter__(self) -> RingObjectStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def put(
        self,
        account: str,
        container: str,
        obj: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str | None:
        try:
            _, version = await self.cluster.put_versioned(account, container, obj, data, headers)
        except QuorumError as e:
            raise StoreUnavailable(str(e)) from e
        return version

    async def get(
        self, account: str, container: str, obj: str, *, version: str | None = None
    ) -> bytes | None:
        try:
            found = await self.cluster.get(account, container, obj, known_version=version)
        except QuorumError as e:
            raise StoreUnavailable(str(e)) from e
        return None if found is None else found[1]

    async def get_range(
        self,
        account: str,
        container: str,
        obj: str,
        start: int,
        length: int,
        *,
        version: str | None = None,
    ) -> tuple[bytes, int] | None:
        if start < 0 or length <= 0:
            raise ValueError(f"bad range: start {start}, length {length}")
        try:
            found = await self.cluster.get(
                account,
                container,
                obj,
                byte_range=(start, start + length - 1),
                known_version=version,
            )
        except QuorumError as e:
            raise StoreUnavailable(str(e)) from e
        if found is None:
            return None
        headers, body = found
        content_range = headers.get("Content-Range")
        if content_range is None:  # a whole-object answer (the Range was not applied)
            return body[start : start + length], len(body)
        match = _TOTAL_RE.search(content_range)
        if match is None or len(body) > length:
            raise StoreUnavailable(f"bad range answer for {container}/{obj}: {content_range!r}")
        return body, int(match.group(1))

    async def delete(self, account: str, container: str, obj: str) -> None:
        try:
            await self.cluster.delete(account, container, obj)
        except QuorumError as e:
            raise StoreUnavailable(str(e)) from e

    async def head(self, account: str, container: str, obj: str) -> Mapping[str, str] | None:
        try:
            return await self.cluster.head(account, container, obj)
        except QuorumError as e:
            raise StoreUnavailable(str(e)) from e

    async def post(
        self, account: str, container: str, obj: str, headers: Mapping[str, str]
    ) -> None:
        try:
            found = await self.cluster.post(account, container, obj, headers)
        except QuorumError as e:
            raise StoreUnavailable(str(e)) from e
        if not found:
            raise StoreNotFound(f"{account}/{container}/{obj}")


def open_ring_store(cfg: DeploymentConfig, clock: Clock) -> RingObjectStore:
    """A store over the deployment's object ring (``<data_dir>/rings/object.ring``); close it
    when done (``async with open_ring_store(cfg, clock) as store:``)."""
    from ring import Ring

    ring = Ring(
        cfg.ring_dir() / "object.ring",
        cfg.cluster.hash_path_prefix,
        cfg.cluster.hash_path_suffix,
    )
    cluster = ObjectCluster(
        ring,
        clock,
        conn_timeout_s=cfg.proxy.conn_timeout_s,
        node_timeout_s=cfg.proxy.node_timeout_s,
        # Chunk objects, journal records and maps are never served to users: with [block]
        # etag_xxh3 their ETag is the xxh3-128 (when every primary takes it), which spares
        # blockd an MD5 of every MiB it writes (~37% of its CPU on 1 MiB writes,
        # docs/iscsi.md "Eighth pass: writes"). Off by default: nodes rolled back to a
        # version that does not read format 2 files would refuse them.
        etag_xxh3=cfg.block.etag_xxh3,
    )
    return RingObjectStore(cluster)
