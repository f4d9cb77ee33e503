"""The object server's typed configuration and the per-app state its handlers share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from common.clock import Clock
from common.deploy import DeploymentConfig, StorageNodeConfig
from objectd.devices import Devices
from objectd.groupsync import GroupSyncs
from objectd.update_batcher import UpdateBatcher

__all__ = ["STATE", "ObjectMetrics", "ObjectServerConf", "ServerState"]


@dataclass(frozen=True)
class ObjectServerConf:
    devices_dir: Path
    hash_path_prefix: str
    hash_path_suffix: str
    mount_check: bool = True
    fallocate_reserve_bytes: int = 0
    threads_per_device: int = 4
    # Longest wait for the next piece of a request body before answering 408.
    node_timeout_s: float = 10.0
    # Longest wait for a container server to accept an update before saving an async pending.
    container_update_timeout_s: float = 1.0
    # Container updates queued while a request to that container server is out go together
    # in one request (objectd/update_batcher.py): rows per request, requests out per host.
    container_update_batching: bool = True
    container_update_batch_rows_max: int = 256
    container_update_batches_in_flight: int = 1
    # A batch about to leave waits this long for the rows of small PUTs still writing in this
    # process (never when none is): fewer, fuller requests at high PUT rates. 0: never waits.
    container_update_linger_s: float = 0.002
    object_bytes_max: int = 5 * 1024**3 + 2  # Swift's default 5 GiB, plus its slack of 2
    # Body bytes buffered before one write to disk (a thread-pool round trip).
    write_chunk_bytes: int = 1024 * 1024
    # Bytes verified (and then sent) per step when serving a GET.
    read_chunk_bytes: int = 1024 * 1024
    # Disk operations queued per device before requests get 503, and the longest one step
    # (a read, a 1 MiB write, an fsync+rename) may take before the request gives up (503).
    ops_queued_max: int = 256
    disk_timeout_s: float = 60.0
    # Send verified ranges with sendfile (zero copy to the socket) instead of write().
    use_sendfile: bool = True
    # Small PUTs made durable by a shared syncfs of the file system instead of their own
    # fsyncs (objectd/groupsync.py); used only where syncfs reports errors (Linux >= 5.8).
    group_sync: bool = False
    # A PUT's fsyncs run by the kernel through io_uring from the event loop, where the kernel
    # allows it (common/syncring.py), instead of a step in the device's thread pool.
    io_uring: bool = True
    # Tombstones older than this are removed when suffixes are rehashed (cluster setting).
    reclaim_age_s: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.threads_per_device < 1:
            raise ValueError("threads_per_device must be at least 1")
        if self.fallocate_reserve_bytes < 0:
            raise ValueError("fallocate_reserve_bytes must not be negative")
        if min(self.node_timeout_s, self.container_update_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")
        if not 1 <= self.container_update_batch_rows_max <= 256:
            raise ValueError("container_update_batch_rows_max must be 1..256")
        if not 0 <= self.container_update_linger_s <= 0.1:
            raise ValueError("container_update_linger_s must be 0..0.1")
        if self.container_update_batches_in_flight < 1:
            raise ValueError("container_update_batches_in_flight must be at least 1")
        if self.write_chunk_bytes < 4096 or self.read_chunk_bytes < 4096:
            raise ValueError("chunk sizes must be at least 4096 bytes")

    @classmethod
    def from_deployment(cls, deploy: DeploymentConfig, node: StorageNodeConfig) -> ObjectServerConf:
        return cls(
            devices_dir=deploy.devices_dir(node),
            hash_path_prefix=deploy.cluster.hash_path_prefix,
            hash_path_suffix=deploy.cluster.hash_path_suffix,
            mount_check=node.mount_check,
            fallocate_reserve_bytes=node.fallocate_reserve_bytes,
            threads_per_device=node.threads_per_device,
            group_sync=node.group_sync,
            io_uring=node.io_uring,
            node_timeout_s=deploy.proxy.node_timeout_s,
            reclaim_age_s=float(deploy.cluster.reclaim_age_s),
        )


@dataclass
class ObjectMetrics:
    bytes_in: Counter
    bytes_out: Counter
    quarantines: Counter
    async_pendings: Counter
    update_batch_rows: Histogram
    group_syncs: Counter
    group_sync_waits: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ObjectMetrics:
        return cls(
            Counter("cairn_object_bytes_in", "Object body bytes received", registry=registry),
            Counter("cairn_object_bytes_out", "Object body bytes sent", registry=registry),
            Counter("cairn_object_quarantines", "Files quarantined", registry=registry),
            Counter("cairn_object_async_pendings", "Async pendings written", registry=registry),
            Histogram(
                "cairn_object_container_update_batch_rows",
                "Container updates sent per batched request (objectd/update_batcher.py)",
                registry=registry,
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            ),
            Counter(
                "cairn_object_group_syncs",
                "syncfs calls made for small PUTs (objectd/groupsync.py)",
                registry=registry,
            ),
            Counter(
                "cairn_object_group_sync_waits",
                "Small PUTs that waited for a group syncfs (waits / syncs = writes per call)",
                registry=registry,
            ),
        )


@dataclass
class ServerState:
    conf: ObjectServerConf
    clock: Clock
    devices: Devices
    metrics: ObjectMetrics
    session: aiohttp.ClientSession | None = None  # for container updates; set on startup
    batcher: UpdateBatcher | None = None  # batched container updates; set on startup
    syncs: GroupSyncs | None = None  # group commit of small PUTs; made on first use

    def client(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the app has not started"
        return self.session


STATE = web.AppKey("object_state", ServerState)
