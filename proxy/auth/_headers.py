"""What the proxy does with headers once authorize() has decided, and account autocreate.

Swift hides some headers from everyone but the account's owners ("swift_owner"): container
ACLs, sync keys, temp-URL keys and the account ACL. A non-owner who may write (say through
a read-write account ACL) can still POST metadata; the owner-only headers are then dropped
silently, exactly as Swift does (its functional tests expect the 204).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from proxy.auth._acl import (
    AclError,
    account_acl_from_sysmeta,
    clean_account_acl,
    clean_container_acl,
    format_account_acl,
)
from proxy.auth._model import AuthResponse, Decision, PathParts

__all__ = [
    "ACCOUNT_ACL_HEADER",
    "ACCOUNT_ACL_SYSMETA",
    "OWNER_ONLY_HEADERS",
    "MissingAccount",
    "backend_request_headers",
    "client_response_headers",
    "missing_account_action",
]

ACCOUNT_ACL_HEADER = "X-Account-Access-Control"
# Where the account ACL is stored: account system metadata, never shown to clients as is.
ACCOUNT_ACL_SYSMETA = "X-Account-Sysmeta-Core-Access-Control"
OWNER_ONLY_HEADERS = frozenset(
    {
        "x-container-read",
        "x-container-write",
        "x-container-sync-key",
        "x-container-sync-to",
        "x-account-meta-temp-url-key",
        "x-account-meta-temp-url-key-2",
        "x-container-meta-temp-url-key",
        "x-container-meta-temp-url-key-2",
        "x-account-access-control",
    }
)
_CONTAINER_ACL_HEADERS = ("X-Container-Read", "X-Container-Write")


def _bad_request(message: str) -> AuthResponse:
    body = f"400 Bad Request: {message}\n".encode()
    return AuthResponse(400, {"Content-Type": "text/plain; charset=UTF-8"}, body)


def _clean_acl_headers(
    parts: PathParts, headers: Mapping[str, str]
) -> dict[str, str] | AuthResponse:
    out = dict(headers)
    wanted = {n.lower(): n for n in (*_CONTAINER_ACL_HEADERS, ACCOUNT_ACL_HEADER)}
    for name, value in headers.items():
        canonical = wanted.get(name.lower())
        if canonical is None:
            continue
        try:
            if canonical == ACCOUNT_ACL_HEADER:
                if parts.container is None:  # meaningless below the account: left as is
                    out[name] = clean_account_acl(value, canonical)
            elif parts.container is not None and parts.obj is None:
                out[name] = clean_container_acl(canonical, value)
        except AclError as e:
            return _bad_request(str(e))
    return out


def backend_request_headers(
    parts: PathParts, headers: Mapping[str, str], decision: Decision
) -> dict[str, str] | AuthResponse:
    """The client's headers as they should go to the storage servers, or a 400.

    Validates and cleans X-Container-Read/Write (container requests) and
    X-Account-Access-Control (account requests); drops owner-only headers unless the
    decision says swift_owner; moves an owner's account ACL into account sysmeta
    (an empty value removes it). Call after authorize() allowed the request, for PUT/POST.
    """
    cleaned = _clean_acl_headers(parts, headers)
    if isinstance(cleaned, AuthResponse):
        return cleaned
    out: dict[str, str] = {}
    for name, value in cleaned.items():
        lname = name.lower()
        if lname in OWNER_ONLY_HEADERS and not decision.swift_owner:
            continue
        if lname == ACCOUNT_ACL_HEADER.lower() and parts.container is None:
            out[ACCOUNT_ACL_SYSMETA] = value
            continue
        out[name] = value
    return out


def client_response_headers(
    parts: PathParts, headers: Mapping[str, str], decision: Decision
) -> dict[str, str]:
    """Backend response headers as the client may see them.

    Non-owners lose the owner-only headers; owners of an account see its ACL as
    X-Account-Access-Control (canonical JSON). Stripping the remaining sysmeta is the
    gatekeeper's job, not this function's.
    """
    out = {
        name: value
        for name, value in headers.items()
        if decision.swift_owner or name.lower() not in OWNER_ONLY_HEADERS
    }
    if decision.swift_owner and parts.container is None:
        stored = next(
            (v for n, v in headers.items() if n.lower() == ACCOUNT_ACL_SYSMETA.lower()), None
        )
        acl = account_acl_from_sysmeta(stored)
        if acl:
            out[ACCOUNT_ACL_HEADER] = format_account_acl(acl)
    return out


class MissingAccount(enum.Enum):
    """What to do when the account of an allowed request does not exist."""

    AUTOCREATE = "autocreate"  # create it, then carry on with the request
    FAKE_LISTING = "fake-listing"  # answer as for an empty account, without creating it
    NOT_FOUND = "not-found"  # 404


def missing_account_action(
    decision: Decision, method: str, parts: PathParts, *, autocreate: bool = True
) -> MissingAccount:
    """Swift's account autocreate: only for allowed requests, and only where it helps.

    With `autocreate` (ProxyConfig.account_autocreate) a container PUT or an account POST
    creates the account first; an account GET/HEAD answers as an empty account (so clients
    can list a fresh account); everything else is a 404 (object requests fail on their
    missing container anyway).
    """
    method = method.upper()
    if not (autocreate and decision.allowed) or parts.account is None:
        return MissingAccount.NOT_FOUND
    # Reseller prefixes hold exactly one "_", at their end (TempAuth enforces it), so what
    # follows the first "_" is the account's own name.
    if parts.account.partition("_")[2].startswith("."):
        return MissingAccount.NOT_FOUND  # ".hidden" accounts are internal, never autocreated
    if parts.container is None:
        if method in ("GET", "HEAD"):
            return MissingAccount.FAKE_LISTING
        if method == "POST":
            return MissingAccount.AUTOCREATE
        return MissingAccount.NOT_FOUND
    if parts.obj is None and method == "PUT":
        return MissingAccount.AUTOCREATE
    return MissingAccount.NOT_FOUND
