"""Listing databases on LMDB, shared by the container and account servers.

See docs/db-format.md for the on-disk layout.
"""

from common.listingdb.broker import (
    Broker,
    DeleteOutcome,
    PutOutcome,
    RowRecord,
    list_databases,
    reclaim_all,
)
from common.listingdb.env import EnvOptions, ListingEnv, acquire_env, release_env
from common.listingdb.listing import LISTING_LIMIT_MAX, ListingParams, Subdir, list_rows
from common.listingdb.records import DbInfo, Metadata, live_metadata

__all__ = [
    "LISTING_LIMIT_MAX",
    "Broker",
    "DbInfo",
    "DeleteOutcome",
    "EnvOptions",
    "ListingEnv",
    "ListingParams",
    "Metadata",
    "PutOutcome",
    "RowRecord",
    "Subdir",
    "acquire_env",
    "list_databases",
    "list_rows",
    "live_metadata",
    "reclaim_all",
    "release_env",
]
