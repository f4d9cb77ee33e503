"""Swift ACLs: container ACL strings (X-Container-Read/Write) and account ACL JSON.

Container ACLs ("version 1") are comma-separated items. An item is either a group name
(`account`, `account:user`, `.rlistings`, any configured group) or a referrer designation
`.r:[-]host` (`.ref`, `.referer` and `.referrer` are accepted and shortened to `.r`). Account
ACLs ("version 2") are a JSON object with the keys `admin`, `read-write` and `read-only`, each
a list of group names. See docs/auth.md for the rules these parsers enforce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = [
    "ACCOUNT_ACL_KEYS",
    "ACL_BYTES_MAX",
    "AccountAcl",
    "AclError",
    "ContainerAcl",
    "account_acl_from_sysmeta",
    "clean_account_acl",
    "clean_container_acl",
    "format_account_acl",
    "parse_account_acl",
    "parse_container_acl",
    "referrer_allowed",
]

# An ACL travels in one HTTP header; no sane ACL is bigger than a header line.
ACL_BYTES_MAX = 8192
ACCOUNT_ACL_KEYS = ("admin", "read-write", "read-only")
_REFERRER_DESIGNATORS = frozenset({".r", ".ref", ".referer", ".referrer"})


class AclError(ValueError):
    """An ACL header that cannot be stored; the message says why (for a 400 body)."""


def _check_size(header_name: str, value: str) -> None:
    if len(value.encode("utf-8", "surrogateescape")) > ACL_BYTES_MAX:
        raise AclError(f"{header_name} is longer than {ACL_BYTES_MAX} bytes")


def _clean_referrer(header_name: str, item: str, designation: str) -> str:
    if "write" in header_name.lower():
        raise AclError(f"Referrers not allowed in write ACL: {item!r}")
    negate = designation.startswith("-")
    if negate:
        designation = designation[1:].strip()
    # "*.example.com" means the domain, the same as ".example.com"; a bare "*" is any host.
    if designation.startswith("*") and designation != "*":
        designation = designation[1:].strip()
    if not designation or designation == ".":
        raise AclError(f"No host/domain value after referrer designation in ACL: {item!r}")
    return ".r:" + ("-" if negate else "") + designation


def clean_container_acl(header_name: str, value: str) -> str:
    """Validate and normalise an X-Container-Read/X-Container-Write value.

    Drops empty items and whitespace around items, shortens referrer designators to `.r`,
    and raises AclError (a 400) for referrers in a write ACL, a referrer without a host, or
    an unknown `.designator:`.
    """
    _check_size(header_name, value)
    items: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if ":" not in item:
            items.append(item)
            continue
        first, second = (part.strip() for part in item.split(":", 1))
        if not first.startswith("."):
            items.append(item)  # "account:user"
        elif first in _REFERRER_DESIGNATORS:
            items.append(_clean_referrer(header_name, item, second))
        else:
            raise AclError(f"Unknown designator {first!r} in ACL: {item!r}")
    return ",".join(items)


@dataclass(frozen=True)
class ContainerAcl:
    """A parsed container ACL: referrer designations (without `.r:`) and group names."""

    referrers: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    @property
    def rlistings(self) -> bool:
        """Whether referrer-granted readers may also list the container."""
        return ".rlistings" in self.groups


def parse_container_acl(value: str | None) -> ContainerAcl:
    """Parse a stored (already cleaned) container ACL; None or "" is the empty ACL."""
    if not value:
        return ContainerAcl()
    referrers: list[str] = []
    groups: list[str] = []
    for item in value.split(","):
        if item.startswith(".r:"):
            referrers.append(item[3:])
        elif item:
            groups.append(unquote(item))
    return ContainerAcl(tuple(referrers), tuple(groups))


def _referrer_host(referrer: str | None) -> str:
    try:
        host = urlsplit(referrer or "").hostname
    except ValueError:
        host = None
    return host or "unknown"


def _host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.lower()
    return pattern in ("*", host) or (pattern.startswith(".") and host.endswith(pattern))


def referrer_allowed(referrer: str | None, referrers: tuple[str, ...]) -> bool:
    """Apply referrer designations in order: later items override earlier ones.

    `*` allows any referrer (including none), `host` one host, `.domain` every host in the
    domain, and a leading `-` denies instead of allowing.
    """
    host = _referrer_host(referrer)
    allowed = False
    for designation in referrers:
        if designation.startswith("-"):
            if designation[1:] != "*" and _host_matches(designation[1:], host):
                allowed = False
        elif _host_matches(designation, host):
            allowed = True
    return allowed


@dataclass(frozen=True)
class AccountAcl:
    """X-Account-Access-Control: who gets which level of access to a whole account."""

    admin: frozenset[str] = frozenset()
    read_write: frozenset[str] = frozenset()
    read_only: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.admin or self.read_write or self.read_only)


def _decode_account_acl(header_name: str, value: str) -> dict[str, list[str]]:
    _check_size(header_name, value)
    if value == "":
        return {}
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise AclError(f"{header_name} invalid: Syntax error in input ({value!r})")
    for key in data:
        if key not in ACCOUNT_ACL_KEYS:
            raise AclError(f"{header_name} invalid: Key {json.dumps(key)} not recognized")
    for key, members in data.items():
        if not isinstance(members, list):
            raise AclError(f"{header_name} invalid: Value for key {json.dumps(key)} must be a list")
        if not all(isinstance(m, str) for m in members):
            raise AclError(
                f"{header_name} invalid: Elements of {json.dumps(key)} list must be strings"
            )
    return data


def parse_account_acl(value: str, header_name: str = "X-Account-Access-Control") -> AccountAcl:
    """Parse an account ACL; raises AclError (a 400) on anything tempauth cannot use."""
    data = _decode_account_acl(header_name, value)
    return AccountAcl(
        admin=frozenset(data.get("admin", ())),
        read_write=frozenset(data.get("read-write", ())),
        read_only=frozenset(data.get("read-only", ())),
    )


def clean_account_acl(value: str, header_name: str = "X-Account-Access-Control") -> str:
    """Validate an account ACL and return its canonical form (compact JSON, sorted keys).

    The keys the client sent are kept as sent, so the owner reads back what was set. An
    empty string means "no account ACL" (it removes the stored one).
    """
    data = _decode_account_acl(header_name, value)
    return format_account_acl(data) if data else ""


def format_account_acl(acl: AccountAcl | dict[str, list[str]]) -> str:
    """Render an account ACL as Swift does: ASCII-only compact JSON with sorted keys."""
    if isinstance(acl, AccountAcl):
        levels = zip(ACCOUNT_ACL_KEYS, (acl.admin, acl.read_write, acl.read_only), strict=True)
        data = {key: sorted(members) for key, members in levels if members}
    else:
        data = acl
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def account_acl_from_sysmeta(value: str | None) -> AccountAcl:
    """The account ACL stored in account sysmeta; a missing or damaged value grants nothing."""
    if not value:
        return AccountAcl()
    try:
        return parse_account_acl(value)
    except AclError:
        return AccountAcl()
