"""The records the auth layer hands the proxy: identities, decisions and canned responses."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

__all__ = [
    "AuthResponse",
    "Decision",
    "Identity",
    "InvalidToken",
    "PathParts",
    "Verdict",
    "lower_headers",
    "unauthorized",
]


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A plain dict with lower-case names; the first value wins for repeated headers."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        out.setdefault(name.lower(), value)
    return out


@dataclass(frozen=True)
class PathParts:
    """A split Swift path `/v1/{account}[/{container}[/{obj}]]` (names already unquoted)."""

    version: str
    account: str | None = None
    container: str | None = None
    obj: str | None = None


@dataclass(frozen=True)
class AuthResponse:
    """A complete response for the proxy to send as is."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _quote(text: str) -> str:
    return quote(text, safe="", errors="surrogateescape")


def unauthorized(realm: str | None, body: bytes = b"") -> AuthResponse:
    """A 401 with the Www-Authenticate challenge Swift sends."""
    headers = {
        "Www-Authenticate": f'Swift realm="{_quote(realm or "unknown")}"',
        "Content-Type": "text/plain; charset=UTF-8",
    }
    text = body or b"401 Unauthorized: this request needs a valid X-Auth-Token.\n"
    return AuthResponse(401, headers, text)


class InvalidToken(Exception):
    """An X-Auth-Token in our namespace that is forged, damaged or expired: answer 401 now.

    Carries the response to send; the message never contains the token.
    """

    def __init__(self, response: AuthResponse) -> None:
        super().__init__("token rejected")
        self.response = response


@dataclass(frozen=True)
class Identity:
    """An authenticated user (from X-Auth-Token) plus the groups of any X-Service-Token.

    `groups` follows Swift tempauth: the account name, "account:user", the configured groups,
    ".reseller_admin" for reseller admins, and for account admins one "<prefix><account>"
    per reseller prefix (that is what makes them owners of those accounts).
    """

    user: str  # "account:user"
    account: str
    groups: tuple[str, ...]
    expires: float
    admin: bool = False
    reseller_admin: bool = False
    service_groups: tuple[str, ...] = ()
    service_user: str | None = None

    @property
    def all_groups(self) -> frozenset[str]:
        """User and service-token groups together; every ACL check matches against these."""
        return frozenset(self.groups) | frozenset(self.service_groups)


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY_401 = "deny-401"
    DENY_403 = "deny-403"


@dataclass(frozen=True)
class Decision:
    """The outcome of authorize().

    `swift_owner` is Swift's flag of the same name: only owners see and set the owner-only
    headers (container ACLs, sync keys, temp-URL keys, X-Account-Access-Control).
    `needs_account_acl` means "denied so far, but the account ACL could still grant this":
    fetch the account's ACL and call authorize() again with it.
    """

    verdict: Verdict
    swift_owner: bool = False
    reseller_request: bool = False
    needs_account_acl: bool = False
    realm: str | None = None
    # Why, for logs and tests; never contains a token or key.
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW

    @property
    def status(self) -> int:
        return {Verdict.ALLOW: 200, Verdict.DENY_401: 401, Verdict.DENY_403: 403}[self.verdict]

    def response(self) -> AuthResponse:
        """The response for a denial (401 with a challenge, or 403)."""
        assert not self.allowed, "an allowed request has no auth response"
        if self.verdict is Verdict.DENY_401:
            return unauthorized(self.realm)
        body = b"403 Forbidden: access was refused to this resource.\n"
        return AuthResponse(403, {"Content-Type": "text/plain; charset=UTF-8"}, body)
