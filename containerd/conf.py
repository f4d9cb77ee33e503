"""The container server's typed configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.deploy import DeploymentConfig, StorageNodeConfig
from common.listingdb.conf import ListingServerConf, listing_conf_kwargs

__all__ = ["ContainerServerConf"]


@dataclass(frozen=True)
class ContainerServerConf(ListingServerConf):
    # Longest wait for an account server to take a stats report; on failure the container
    # updater re-sends it later.
    account_update_timeout_s: float = 3.0
    # At most one stats report per container per interval after object changes.
    account_update_interval_s: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.account_update_timeout_s <= 0 or self.account_update_interval_s < 0:
            raise ValueError("account update timeout must be positive, interval not negative")

    @classmethod
    def from_deployment(
        cls, deploy: DeploymentConfig, node: StorageNodeConfig, **overrides: Any
    ) -> ContainerServerConf:
        kwargs: dict[str, Any] = listing_conf_kwargs(deploy, node, node.container_port)
        kwargs.update(overrides)
        return cls(**kwargs)
