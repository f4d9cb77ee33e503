"""The account server's typed configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.deploy import DeploymentConfig, StorageNodeConfig
from common.listingdb.conf import ListingServerConf, listing_conf_kwargs

__all__ = ["AccountServerConf"]


@dataclass(frozen=True)
class AccountServerConf(ListingServerConf):
    @classmethod
    def from_deployment(
        cls, deploy: DeploymentConfig, node: StorageNodeConfig, **overrides: Any
    ) -> AccountServerConf:
        kwargs: dict[str, Any] = listing_conf_kwargs(deploy, node, node.account_port)
        kwargs.update(overrides)
        return cls(**kwargs)
