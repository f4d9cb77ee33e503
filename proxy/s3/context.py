"""The per-request state S3 handlers share, and the small response helpers they use."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from common.clock import Clock
from proxy.s3.authtypes import VerifiedAuth
from proxy.s3.request import S3Request
from proxy.s3.xml import Owner

if TYPE_CHECKING:
    from proxy.auth import Identity, TempAuth
    from proxy.ops import Ops

__all__ = ["S3Context", "S3Settings", "empty_response", "xml_response"]


@dataclass(frozen=True, slots=True)
class S3Settings:
    """The S3 front's configuration (from DeploymentConfig.proxy)."""

    domains: tuple[str, ...] = ()
    skew_s_max: float = 900.0
    region: str | None = None  # None: accept any region the client signs with
    strict_bucket_names: bool = True
    xml_body_bytes_max: int = 2 * 1024 * 1024
    copy_source_bytes_max: int = 5 * 1024**3
    put_bytes_max: int = 5 * 1024**3


@dataclass(slots=True)
class S3Context:
    request: web.Request
    ops: Ops
    auth: TempAuth
    clock: Clock
    rng: random.Random
    settings: S3Settings
    s3: S3Request
    request_id: str
    verified: VerifiedAuth | None = None
    identity: Identity | None = None
    account: str | None = None  # the requester's storage account (e.g. AUTH_test)
    response_headers: CIMultiDict[str] = field(default_factory=CIMultiDict)

    @property
    def bucket(self) -> str:
        assert self.s3.bucket is not None
        return self.s3.bucket

    @property
    def key(self) -> str:
        assert self.s3.key is not None
        return self.s3.key

    def owner_of(self, account: str) -> Owner:
        """The S3 owner of an account: its tempauth name (the reseller prefix removed)."""
        name = self.auth.reseller_prefix
        short = account[len(name) :] if account.startswith(name) else account
        return Owner(short, short)

    def requester_owner(self) -> Owner:
        if self.account is None:
            return Owner("anonymous", "anonymous")
        return self.owner_of(self.account)


def xml_response(
    body: bytes, status: int = 200, headers: Iterable[tuple[str, str]] = ()
) -> web.Response:
    h: CIMultiDict[str] = CIMultiDict(headers)
    h["Content-Type"] = "application/xml"
    return web.Response(status=status, body=body, headers=h)


def empty_response(status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> web.Response:
    return web.Response(status=status, headers=CIMultiDict(headers))
