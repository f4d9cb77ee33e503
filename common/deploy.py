"""The deployment file: one TOML describing every service of a cairn cluster.

Each service reads its own typed section. See docs/config.md for the keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.config import ConfigError, from_dict, load_toml

__all__ = [
    "AccountDaemonsConfig",
    "BlockConfig",
    "ClusterConfig",
    "ContainerDaemonsConfig",
    "DeploymentConfig",
    "DeviceConfig",
    "LogConfig",
    "ObjectDaemonsConfig",
    "ProxyConfig",
    "StorageNodeConfig",
    "TempAuthConfig",
    "TempAuthUser",
    "load_deployment",
]

CONFIG_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ClusterConfig:
    # Secret salt mixed into every partition hash; must be identical on every node and never
    # change once data is written (it decides where everything lives).
    hash_path_prefix: str
    hash_path_suffix: str
    replicas: int = 3
    part_power: int = 10
    min_part_hours: int = 1
    # Tombstones and old rows are kept this long so every replica sees a delete.
    reclaim_age_s: int = 7 * 24 * 3600

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= 10:
            raise ValueError("replicas must be between 1 and 10")
        if not 1 <= self.part_power <= 24:
            raise ValueError("part_power must be between 1 and 24")


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    weight: float = 100.0
    region: int = 1
    zone: int = 1

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad device name {self.name!r}")


@dataclass(frozen=True)
class StorageNodeConfig:
    name: str
    devices: list[DeviceConfig]
    host: str = "127.0.0.1"
    object_port: int = 6200
    container_port: int = 6201
    account_port: int = 6202
    # Directory holding one sub-directory per device; relative paths are under data_dir.
    devices_dir: str = ""
    # Require each device directory to exist (a mount point in production); a missing device
    # answers 507 instead of writing into the parent file system.
    mount_check: bool = True
    # Refuse writes that would leave less than this many free bytes on a device (answers 507).
    fallocate_reserve_bytes: int = 0
    workers: int = 1
    # Device-local thread pool size for blocking disk I/O.
    threads_per_device: int = 4
    # Serve the small requests between cairn's servers (small object PUTs, container row
    # batches) on the lean HTTP server in front of aiohttp (docs/lean-http-server.md).
    fast_lane: bool = True
    # Small object PUTs made durable together by syncfs(2) of the device's file system
    # instead of their own fsyncs (objectd/groupsync.py; Linux >= 5.8, else per-file fsync).
    # Off by default: measured slower where the file system is shared (docs/group-commit.md).
    group_sync: bool = False
    # Object PUTs' fsyncs run by the kernel through io_uring from the object server's event
    # loop (common/syncring.py) where the kernel allows it; false: in the device thread pools.
    io_uring: bool = True

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"bad node name {self.name!r}")
        if not self.devices:
            raise ValueError(f"node {self.name} has no devices")


@dataclass(frozen=True)
class ProxyConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    conn_timeout_s: float = 0.5
    node_timeout_s: float = 10.0
    # A node that fails this many times within the interval is skipped for the interval.
    error_suppression_limit: int = 10
    error_suppression_interval_s: float = 60.0
    account_autocreate: bool = True
    # Public URL prefix used in X-Storage-Url; empty means http://host:port.
    public_url: str = ""
    # Domain for S3 virtual-hosted-style addressing (bucket.domain); empty disables it.
    s3_domain: str = ""
    # Accepted clock skew for S3 signatures.
    s3_max_skew_s: int = 900
    # The order in which reads try an object's primaries: "shuffle" (a random one first, as
    # Swift's default sorting_method: reads spread over the servers) or "ring" (replica order).
    read_order: str = "shuffle"
    # Most rows one container / account listing returns (Swift's container_listing_limit and
    # account_listing_limit): a larger client limit gets 412, a GET without one gets this many.
    container_listing_limit: int = 10000
    account_listing_limit: int = 10000

    def __post_init__(self) -> None:
        # Imported here: common.listingdb's modules import this one.
        from common.listingdb.listing import LISTING_LIMIT_MAX

        if self.read_order not in ("shuffle", "ring"):
            raise ValueError(f'read_order must be "shuffle" or "ring", not {self.read_order!r}')
        for key in ("container_listing_limit", "account_listing_limit"):
            value = getattr(self, key)
            if not 1 <= value <= LISTING_LIMIT_MAX:
                raise ValueError(f"{key} must be between 1 and {LISTING_LIMIT_MAX}, not {value}")


@dataclass(frozen=True)
class TempAuthUser:
    account: str
    user: str
    # The user's password; repr=False keeps it out of logged config dumps.
    key: str = field(repr=False)
    admin: bool = False
    reseller_admin: bool = False
    groups: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TempAuthConfig:
    reseller_prefixes: list[str] = field(default_factory=lambda: ["AUTH_"])
    # Groups a service token's user must be in, per reseller prefix (Swift's
    # <prefix>_require_group), e.g. {"SERVICE_" = "service"}.
    require_group: dict[str, str] = field(default_factory=dict)
    token_life_s: int = 86400
    users: list[TempAuthUser] = field(default_factory=list)
    # Key material for signing tokens (see docs/auth.md). Empty means: derive it from the
    # cluster's hash_path_prefix/suffix. Changing it invalidates every issued token.
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class BlockConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    iscsi_port: int = 3260
    api_port: int = 8776
    target_prefix: str = "iqn.2026-11.org.cairn"
    # Measured choice, see docs/block.md ("Chunk size"); volumes keep the size they were made with.
    default_chunk_bytes: int = 1 << 20
    flush_interval_s: float = 1.0
    cache_bytes_max: int = 256 << 20
    # Small writes are made durable as journal records, merged into their chunks by a
    # checkpoint once the journal holds journal_bytes_max (at most half the cache) or has been
    # idle journal_idle_s (docs/block.md, "Journal").
    journal: bool = True
    journal_bytes_max: int = 128 << 20
    journal_idle_s: float = 30.0
    # A writer waits at most this long for cache space before the write fails (store down).
    backpressure_timeout_s: float = 30.0
    # Export leases (one blockd per volume): lifetime, and the pause between writing the lease
    # and the verify read, which must exceed a competitor's read-check-write (docs/block.md).
    lease_ttl_s: float = 30.0
    lease_settle_s: float = 2.0
    # Lease holder identity, unique per blockd process; empty means "<hostname>:<host>:<iscsi
    # port>", stable across restarts so a restarted blockd takes its own leases back at once.
    holder_id: str = ""
    # Store chunk objects, journal records and maps with the body's xxh3-128 as their ETag
    # (object file format version 2, no MD5 hashed: docs/object-format.md, "ETag
    # algorithms") when every primary takes it. Turn on only once every node runs a version
    # that reads format 2; once on, rolling a node back is not supported (its reader would
    # refuse those files). `cairn up` sets it for a new deployment.
    etag_xxh3: bool = False


@dataclass(frozen=True)
class ObjectDaemonsConfig:
    """The object background daemons of each storage node (see docs/object-replication.md)."""

    replicator_interval_s: float = 30.0
    # Partitions replicated at once per node, and the bytes/s each device may send.
    replicator_concurrency: int = 4
    replicator_bytes_per_s: int = 50 * 1024 * 1024
    auditor_interval_s: float = 30.0
    # Body bytes per second the auditor reads per device (0 = unlimited).
    auditor_bytes_per_s: int = 10 * 1024 * 1024
    updater_interval_s: float = 30.0
    expirer_interval_s: float = 30.0
    # Timeouts for node-to-node calls made by the daemons.
    conn_timeout_s: float = 0.5
    node_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        intervals = (
            self.replicator_interval_s,
            self.auditor_interval_s,
            self.updater_interval_s,
            self.expirer_interval_s,
        )
        if min(intervals) <= 0:
            raise ValueError("daemon intervals must be positive")
        if self.replicator_concurrency < 1:
            raise ValueError("replicator_concurrency must be at least 1")
        if min(self.replicator_bytes_per_s, self.auditor_bytes_per_s) < 0:
            raise ValueError("bytes_per_s limits must not be negative")
        if min(self.conn_timeout_s, self.node_timeout_s) <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"
    # "json" for machine-read logs, "text" for people.
    format: str = "json"


def _check_daemon_limits(interval_s: float, concurrency: int, batch_rows: int) -> None:
    if interval_s <= 0 or concurrency < 1 or batch_rows < 1:
        raise ValueError("daemon intervals must be positive, concurrency and batch sizes >= 1")


@dataclass(frozen=True)
class ContainerDaemonsConfig:
    """`[container_daemons]`: the container replicator and updater on every storage node."""

    replicator_interval_s: float = 30.0
    # Databases replicated at the same time (each talks to its peers one after another).
    replicator_concurrency: int = 4
    # Rows per REPLICATE request (docs/db-replication.md).
    replicator_batch_rows: int = 1000
    updater_interval_s: float = 30.0
    updater_concurrency: int = 8
    # Per-request limits when talking to peers and account servers.
    conn_timeout_s: float = 0.5
    node_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_daemon_limits(
            self.replicator_interval_s, self.replicator_concurrency, self.replicator_batch_rows
        )
        _check_daemon_limits(self.updater_interval_s, self.updater_concurrency, 1)
        if self.conn_timeout_s <= 0 or self.node_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class AccountDaemonsConfig:
    """`[account_daemons]`: the account replicator on every storage node."""

    replicator_interval_s: float = 30.0
    replicator_concurrency: int = 4
    replicator_batch_rows: int = 1000
    conn_timeout_s: float = 0.5
    node_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_daemon_limits(
            self.replicator_interval_s, self.replicator_concurrency, self.replicator_batch_rows
        )
        if self.conn_timeout_s <= 0 or self.node_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


@dataclass(frozen=True)
class DeploymentConfig:
    cluster: ClusterConfig
    nodes: list[StorageNodeConfig]
    version: int = CONFIG_VERSION
    data_dir: str = ""
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    tempauth: TempAuthConfig = field(default_factory=TempAuthConfig)
    block: BlockConfig = field(default_factory=BlockConfig)
    log: LogConfig = field(default_factory=LogConfig)
    container_daemons: ContainerDaemonsConfig = field(default_factory=ContainerDaemonsConfig)
    account_daemons: AccountDaemonsConfig = field(default_factory=AccountDaemonsConfig)
    object_daemons: ObjectDaemonsConfig = field(default_factory=ObjectDaemonsConfig)

    def __post_init__(self) -> None:
        if self.version != CONFIG_VERSION:
            raise ValueError(f"config version {self.version} is not supported (want 1)")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError("node names must be unique")

    def node(self, name: str) -> StorageNodeConfig:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def devices_dir(self, node: StorageNodeConfig) -> Path:
        base = Path(node.devices_dir or f"nodes/{node.name}")
        return base if base.is_absolute() else Path(self.data_dir) / base

    def ring_dir(self) -> Path:
        return Path(self.data_dir) / "rings"


def load_deployment(path: str | Path, data_dir: str | Path | None = None) -> DeploymentConfig:
    """Load and validate a deployment file; `data_dir` overrides the file's own."""
    raw: dict[str, Any] = load_toml(path)
    if data_dir is not None:
        raw["data_dir"] = str(data_dir)
    if not raw.get("data_dir"):
        raw["data_dir"] = str(Path(path).resolve().parent)
    raw["data_dir"] = str(Path(raw["data_dir"]).resolve())
    cfg = from_dict(DeploymentConfig, raw, where=str(path))
    if not cfg.nodes:
        raise ConfigError(f"{path}: at least one [[nodes]] entry is required")
    return cfg
