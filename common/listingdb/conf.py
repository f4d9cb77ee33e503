"""The typed configuration shared by the container and account servers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.deploy import DeploymentConfig, StorageNodeConfig
from common.listingdb.env import EnvOptions

__all__ = ["ListingServerConf", "listing_conf_kwargs"]


@dataclass(frozen=True)
class ListingServerConf:
    devices_dir: Path
    hash_path_prefix: str
    hash_path_suffix: str
    host: str = "127.0.0.1"
    port: int = 0
    mount_check: bool = True
    workers: int = 1
    threads_per_device: int = 4
    reclaim_age_s: int = 7 * 24 * 3600
    # Address space reserved per device environment; the file itself is sparse.
    lmdb_map_bytes: int = 1 << 40
    log_level: str = "INFO"
    log_format: str = "json"

    def __post_init__(self) -> None:
        if self.threads_per_device < 1:
            raise ValueError("threads_per_device must be at least 1")
        if self.lmdb_map_bytes < 1 << 20:
            raise ValueError("lmdb_map_bytes must be at least 1 MiB")

    def env_options(self) -> EnvOptions:
        return EnvOptions(map_bytes=self.lmdb_map_bytes, threads=self.threads_per_device)


def listing_conf_kwargs(
    deploy: DeploymentConfig, node: StorageNodeConfig, port: int
) -> dict[str, object]:
    """The ListingServerConf fields a deployment file decides for one node."""
    return {
        "devices_dir": deploy.devices_dir(node),
        "hash_path_prefix": deploy.cluster.hash_path_prefix,
        "hash_path_suffix": deploy.cluster.hash_path_suffix,
        "host": node.host,
        "port": port,
        "mount_check": node.mount_check,
        "workers": node.workers,
        "threads_per_device": node.threads_per_device,
        "reclaim_age_s": deploy.cluster.reclaim_age_s,
        "log_level": deploy.log.level,
        "log_format": deploy.log.format,
    }
