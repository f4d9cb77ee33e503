"""Swift tempauth's authorization rules as a pure function of identity, request and ACLs.

The order of the checks is Swift's (see docs/auth.md, "Authorization rules"):
reseller admin, reseller reader, account owner (with the prefix's required group),
OPTIONS, container ACL (referrers, then groups), account ACL; otherwise 403 for an
authenticated identity and 401 for an anonymous one.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.auth._acl import AccountAcl, parse_container_acl, referrer_allowed
from proxy.auth._model import Decision, Identity, PathParts, Verdict

__all__ = ["Policy", "authorize"]

_READ_METHODS = frozenset({"GET", "HEAD"})
RESELLER_ADMIN = ".reseller_admin"
RESELLER_READER = ".reseller_reader"


@dataclass(frozen=True)
class Policy:
    """The parts of the tempauth configuration that authorization needs."""

    reseller_prefixes: tuple[str, ...]
    require_group: dict[str, str]

    def account_prefix(self, account: str) -> str | None:
        """The reseller prefix `account` lives under, or None if it is not ours."""
        for prefix in self.reseller_prefixes:
            if account.startswith(prefix):
                return prefix
        return None

    def is_reseller_account(self, account: str) -> bool:
        """An account a reseller admin may manage: not a bare prefix, not a ".hidden" one."""
        prefix = self.account_prefix(account)
        return prefix is not None and len(account) > len(prefix) and account[len(prefix)] != "."


def _allow(reason: str, *, owner: bool = False, reseller: bool = False) -> Decision:
    return Decision(Verdict.ALLOW, swift_owner=owner, reseller_request=reseller, reason=reason)


def _deny(identity: Identity | None, realm: str | None, reason: str, **kw: bool) -> Decision:
    verdict = Verdict.DENY_403 if identity is not None else Verdict.DENY_401
    return Decision(verdict, realm=realm, reason=reason, **kw)


def _privileged(
    policy: Policy, groups: frozenset[str], method: str, parts: PathParts, prefix: str
) -> Decision | None:
    account = parts.account
    assert account is not None
    reseller_account = policy.is_reseller_account(account)
    if RESELLER_ADMIN in groups and reseller_account:
        return _allow("reseller admin", owner=True, reseller=True)
    if RESELLER_READER in groups and reseller_account and method in _READ_METHODS:
        return _allow("reseller reader")
    # Owners may do anything inside their account but not create or delete the account.
    if account in groups and (method not in ("PUT", "DELETE") or parts.container is not None):
        required = policy.require_group.get(prefix)
        if not required or required in groups:
            return _allow("account owner", owner=True)
    return None


def _container_acl_for(
    method: str, parts: PathParts, read_acl: str | None, write_acl: str | None
) -> str | None:
    """Which container ACL governs the request, as Swift's proxy controllers choose it."""
    if parts.container is None:
        return None  # account requests: container ACLs do not apply
    if method in _READ_METHODS:
        return read_acl  # listing/HEAD of the container, or GET/HEAD of an object
    if parts.obj is None:
        return None  # PUT/POST/DELETE of the container itself: owners (or account ACL) only
    return write_acl  # PUT/POST/DELETE/COPY of an object


def _account_acl_grants(
    acl: AccountAcl, groups: frozenset[str], method: str, parts: PathParts
) -> Decision | None:
    # Swift lets an ACL admin through even for account PUT/DELETE (and relies on the proxy
    # refusing account management); we refuse it here, as for owners.
    if groups & acl.admin and (method not in ("PUT", "DELETE") or parts.container is not None):
        return _allow("account ACL admin", owner=True)
    # read-write may do anything to containers and objects but only read the account itself.
    if groups & acl.read_write and (parts.container is not None or method in _READ_METHODS):
        return _allow("account ACL read-write")
    if groups & acl.read_only and method in _READ_METHODS:
        return _allow("account ACL read-only")
    return None


def authorize(
    policy: Policy,
    identity: Identity | None,
    method: str,
    parts: PathParts,
    *,
    container_read_acl: str | None = None,
    container_write_acl: str | None = None,
    account_acl: AccountAcl | None = None,
    referrer: str | None = None,
) -> Decision:
    """Decide one request. See TempAuth.authorize for the meaning of the arguments."""
    method = method.upper()
    realm = parts.account
    prefix = policy.account_prefix(parts.account) if parts.account else None
    if prefix is None:
        return _deny(identity, realm, "account is not under a reseller prefix")
    groups = identity.all_groups if identity is not None else frozenset()
    decision = _privileged(policy, groups, method, parts, prefix)
    if decision is not None:
        return decision
    if method == "OPTIONS":
        return _allow("OPTIONS (CORS preflight)")
    acl = parse_container_acl(
        _container_acl_for(method, parts, container_read_acl, container_write_acl)
    )
    # Referrers only ever grant reads: clean_container_acl refuses them in write ACLs, and a
    # write ACL that holds one anyway (stored by something else) must not open writes.
    referrers = acl.referrers if method in _READ_METHODS else ()
    if referrer_allowed(referrer, referrers) and (parts.obj is not None or acl.rlistings):
        return _allow("container ACL referrer")
    if identity is None:
        return _deny(identity, realm, "anonymous request not allowed by a referrer ACL")
    if groups & frozenset(acl.groups):
        return _allow("container ACL group")
    if account_acl is None:
        return _deny(identity, realm, "account ACL not supplied", needs_account_acl=True)
    decision = _account_acl_grants(account_acl, groups, method, parts)
    return decision or _deny(identity, realm, "no ACL grants this request")
