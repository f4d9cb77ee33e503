"""S3 ACLs mapped onto Swift container ACLs, both ways (sans-IO).

A bucket is a container, so bucket ACLs are stored as X-Container-Read / X-Container-Write:

  canned ACL          X-Container-Read             X-Container-Write
  private             (empty)                      (empty)
  public-read         .r:*,.rlistings              (empty)
  public-read-write   .r:*,.rlistings              .r:*
  authenticated-read  .authenticated               (empty)

`.r:*` in the read ACL is Swift's "any referrer", i.e. anonymous reads and listings. A
write ACL never grants anything through a referrer on the Swift side; `.r:*` there is
read by the S3 front alone (anonymous S3 writes to a public-read-write bucket). The group
`.authenticated` stands for every authenticated user (S3's AuthenticatedUsers group).
Explicit grants to a user name (`account` or `account:user`) become that name in the read
or write list; FULL_CONTROL to a non-owner puts it in both. The owner always has
FULL_CONTROL and is never listed. READ_ACP / WRITE_ACP cannot be stored and are refused.

Objects carry no ACLs of their own in Swift: an object ACL may be private or one of the
bucket-owner-* kinds (all equivalent here, the bucket owner owns every object); any other
object ACL is NotImplemented rather than silently not enforced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.s3.errors import S3Error
from proxy.s3.headers import HeaderMap, HeadersLike
from proxy.s3.xml import Grant, Owner
from proxy.s3.xmlparse import AclBody

__all__ = [
    "ALL_USERS",
    "AUTHENTICATED_GROUP",
    "AUTHENTICATED_USERS",
    "CANNED_ACLS",
    "ContainerAcls",
    "acl_from_grants",
    "canned_to_container",
    "check_object_acl",
    "container_to_grants",
    "grants_from_headers",
    "request_bucket_acl",
]

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
AUTHENTICATED_GROUP = ".authenticated"
PUBLIC_READ = ".r:*,.rlistings"
ANY_REFERRER = ".r:*"

CANNED_ACLS = frozenset(
    {
        "private", "public-read", "public-read-write", "authenticated-read",
        "bucket-owner-read", "bucket-owner-full-control", "aws-exec-read", "log-delivery-write",
    }
)  # fmt: skip
_OBJECT_OK = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
_GRANT_HEADERS = {
    "x-amz-grant-read": ("READ",),
    "x-amz-grant-write": ("WRITE",),
    "x-amz-grant-full-control": ("READ", "WRITE"),
    "x-amz-grant-read-acp": ("READ_ACP",),
    "x-amz-grant-write-acp": ("WRITE_ACP",),
}
_USER_RE = re.compile(r"[^,\s:][^,\s]{0,255}")
_GRANTEE_RE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"([^"]*)"\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class ContainerAcls:
    """The two Swift container ACL header values (empty string: nobody beyond the owner)."""

    read: str
    write: str


def _invalid(message: str) -> S3Error:
    return S3Error("InvalidArgument", message)


def canned_to_container(canned: str) -> ContainerAcls:
    """A bucket's canned ACL (x-amz-acl) -> container ACLs."""
    if canned not in CANNED_ACLS:
        raise S3Error("InvalidArgument", extra=[("ArgumentName", "x-amz-acl")])
    if canned == "public-read":
        return ContainerAcls(PUBLIC_READ, "")
    if canned == "public-read-write":
        return ContainerAcls(PUBLIC_READ, ANY_REFERRER)
    if canned == "authenticated-read":
        return ContainerAcls(AUTHENTICATED_GROUP, "")
    if canned in ("private", "bucket-owner-read", "bucket-owner-full-control"):
        return ContainerAcls("", "")
    raise S3Error("NotImplemented", f"The canned ACL {canned} is not supported on buckets.")


def check_object_acl(headers: HeadersLike) -> None:
    """Refuse object ACLs that Swift cannot enforce (see the module docstring)."""
    hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
    canned = hmap.get("x-amz-acl")
    if canned is not None:
        if canned not in CANNED_ACLS:
            raise S3Error("InvalidArgument", extra=[("ArgumentName", "x-amz-acl")])
        if canned not in _OBJECT_OK:
            raise S3Error(
                "NotImplemented",
                f"Objects cannot have their own ACL here; '{canned}' must be set on the bucket.",
            )
    if any(name in hmap for name in _GRANT_HEADERS):
        raise S3Error("NotImplemented", "Objects cannot have their own ACL grants here.")


def _parse_grantees(value: str) -> list[tuple[str, str]]:
    found, pos = [], 0
    value = value.strip()
    while pos < len(value):
        match = _GRANTEE_RE.match(value, pos)
        if match is None:
            raise _invalid("Invalid x-amz-grant-* header value")
        found.append((match.group(1), match.group(2)))
        pos = match.end()
    return found


def grants_from_headers(headers: HeadersLike) -> list[tuple[str, str, str]] | None:
    """x-amz-grant-* headers -> [(grantee type, id or uri, permission)], None if absent."""
    hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
    present = [name for name in _GRANT_HEADERS if name in hmap]
    if not present:
        return None
    grants: list[tuple[str, str, str]] = []
    for name in present:
        for value in hmap.get_all(name):
            for kind, ident in _parse_grantees(value):
                if kind == "emailAddress":
                    raise S3Error("NotImplemented", "Grants by e-mail address are not supported.")
                grantee_type = "CanonicalUser" if kind == "id" else "Group"
                grants.extend((grantee_type, ident, p) for p in _GRANT_HEADERS[name])
    return grants


def acl_from_grants(owner_id: str, grants: Iterable[tuple[str, str, str]]) -> ContainerAcls:
    """Grants (from a PutBucketAcl body or x-amz-grant-* headers) -> container ACLs."""
    read: list[str] = []
    write: list[str] = []
    for grantee_type, ident, permission in grants:
        targets = _targets(permission, read, write)  # refuses *_ACP and unknown permissions
        if grantee_type == "Group":
            _group_grant(ident, permission, read, write)
            continue
        if ident == owner_id:
            continue  # the owner's FULL_CONTROL is implicit
        if not _USER_RE.fullmatch(ident):
            raise _invalid(f"Invalid grantee id '{ident[:64]}'")
        for target in targets:
            _add_once(target, [ident])
    return ContainerAcls(",".join(read), ",".join(write))


def _targets(permission: str, read: list[str], write: list[str]) -> list[list[str]]:
    if permission == "READ":
        return [read]
    if permission == "WRITE":
        return [write]
    if permission == "FULL_CONTROL":
        return [read, write]
    if permission in ("READ_ACP", "WRITE_ACP"):
        raise S3Error("NotImplemented", f"{permission} grants cannot be stored here.")
    raise S3Error("MalformedACLError")


def _add_once(target: list[str], items: Iterable[str]) -> None:
    for item in items:
        if item not in target:
            target.append(item)


def _group_grant(uri: str, permission: str, read: list[str], write: list[str]) -> None:
    if uri not in (ALL_USERS, AUTHENTICATED_USERS):
        raise S3Error("NotImplemented", f"Grants to the group {uri[:100]} are not supported.")
    reads = permission in ("READ", "FULL_CONTROL")
    writes = permission in ("WRITE", "FULL_CONTROL")
    if uri == ALL_USERS:
        _add_once(read, PUBLIC_READ.split(",") if reads else ())
        _add_once(write, [ANY_REFERRER] if writes else ())
    else:
        _add_once(read, [AUTHENTICATED_GROUP] if reads else ())
        _add_once(write, [AUTHENTICATED_GROUP] if writes else ())


def request_bucket_acl(
    headers: HeadersLike, body: AclBody | None, owner_id: str
) -> ContainerAcls | None:
    """The container ACLs a CreateBucket/PutBucketAcl asks for (None: not asked)."""
    hmap = headers if isinstance(headers, HeaderMap) else HeaderMap(headers)
    canned = hmap.get("x-amz-acl")
    header_grants = grants_from_headers(hmap)
    asked = [x for x in (canned, header_grants, body) if x is not None]
    if len(asked) > 1:
        raise S3Error(
            "InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed"
        )
    if canned is not None:
        return canned_to_container(canned)
    if header_grants is not None:
        return acl_from_grants(owner_id, header_grants)
    if body is not None:
        return acl_from_grants(owner_id, body.grants)
    return None


def container_to_grants(owner: Owner, read_acl: str, write_acl: str) -> list[Grant]:
    """Container ACLs -> the grants GetBucketAcl reports (owner's FULL_CONTROL first)."""
    grants = [Grant("CanonicalUser", "FULL_CONTROL", id=owner.id, display_name=owner.display_name)]
    read = [x.strip() for x in read_acl.split(",") if x.strip()]
    write = [x.strip() for x in write_acl.split(",") if x.strip()]
    if any(x.startswith(".r:") and not x.startswith(".r:-") for x in read):
        grants.append(Grant("Group", "READ", uri=ALL_USERS))
    if ANY_REFERRER in write:
        grants.append(Grant("Group", "WRITE", uri=ALL_USERS))
    if AUTHENTICATED_GROUP in read:
        grants.append(Grant("Group", "READ", uri=AUTHENTICATED_USERS))
    if AUTHENTICATED_GROUP in write:
        grants.append(Grant("Group", "WRITE", uri=AUTHENTICATED_USERS))
    for name, permission in [(r, "READ") for r in read] + [(w, "WRITE") for w in write]:
        if not name.startswith(".") and name != owner.id:
            grants.append(Grant("CanonicalUser", permission, id=name, display_name=name))
    return grants
