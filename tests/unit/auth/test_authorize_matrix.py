"""The tempauth authorization matrix: who may do what, under which ACL.

Each row is (actor, ACLs, expected), where `expected` gives one code per operation in OPS:
  O = allowed as the account's owner (swift_owner), A = allowed (not owner),
  3 = 403 (authenticated but not permitted), 4 = 401 (anonymous).
The expectations are Swift tempauth's behaviour, written out by hand from its rules
(docs/auth.md), not computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from proxy.auth import AccountAcl, Decision, Identity, PathParts, TempAuth, Verdict

from .conftest import login

OPS = [
    (level, method)
    for level in ("acct", "cont", "obj")
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE")
]


def parts_for(account: str, level: str) -> PathParts:
    if level == "acct":
        return PathParts("v1", account)
    if level == "cont":
        return PathParts("v1", account, "c")
    return PathParts("v1", account, "c", "o")


def code(decision: Decision) -> str:
    if decision.verdict is Verdict.ALLOW:
        return "O" if decision.swift_owner else "A"
    return {Verdict.DENY_401: "4", Verdict.DENY_403: "3"}[decision.verdict]


def acl(**levels: list[str]) -> AccountAcl:
    return AccountAcl(
        admin=frozenset(levels.get("admin", [])),
        read_write=frozenset(levels.get("rw", [])),
        read_only=frozenset(levels.get("ro", [])),
    )


NO_ACL = AccountAcl()


@dataclass(frozen=True)
class Row:
    actor: str | None  # "account:user", or None for anonymous
    expected: str  # one code per OPS entry: "acct cont obj", five each
    read: str | None = None  # the container's X-Container-Read
    write: str | None = None  # the container's X-Container-Write
    account: AccountAcl = NO_ACL
    referrer: str | None = None


def R(rid: str, actor: str | None, expected: str, **kw: object) -> object:
    return pytest.param(Row(actor, expected, **kw), id=rid)  # type: ignore[arg-type]


# fmt: off
MATRIX = [
    # -- no ACLs at all: only owners and reseller admins ------------------------------------
    R("owner", "test:tester", "OOO33 OOOOO OOOOO"),
    R("second-admin", "test:tester2", "OOO33 OOOOO OOOOO"),
    R("reseller-admin", "admin:admin", "OOOOO OOOOO OOOOO"),
    R("non-admin", "test:tester3", "33333 33333 33333"),
    R("other-account", "test2:tester2", "33333 33333 33333"),
    R("service-user", "test5:tester5", "33333 33333 33333"),
    R("anonymous", None, "44444 44444 44444"),
    # -- container read ACL naming a user, an account, or someone else ----------------------
    R("read-user", "test:tester3", "33333 AA333 AA333", read="test:tester3"),
    R("read-acct", "test:tester3", "33333 AA333 AA333", read="test"),
    R("read-xacct", "test2:tester2", "33333 AA333 AA333", read="test2"),
    R("read-other", "test:tester3", "33333 33333 33333", read="test2"),
    R("read-anon", None, "44444 44444 44444", read="test:tester3"),
    R("read-owner", "test:tester", "OOO33 OOOOO OOOOO", read="test2"),
    # -- referrer ACLs: objects only; listings need .rlistings -------------------------------
    R("ref-anon", None, "44444 44444 AA444", read=".r:*"),
    R("ref-list-anon", None, "44444 AA444 AA444", read=".r:*,.rlistings"),
    R("ref-user", "test:tester3", "33333 33333 AA333", read=".r:*"),
    R("ref-xacct", "test2:tester2", "33333 AA333 AA333", read=".r:*,.rlistings"),
    R("ref-host-ok", None, "44444 44444 AA444", read=".r:example.com",
      referrer="http://example.com/x"),
    R("ref-host-no", None, "44444 44444 44444", read=".r:example.com",
      referrer="http://evil.com/x"),
    R("ref-none-given", None, "44444 44444 44444", read=".r:example.com"),
    R("ref-domain", None, "44444 44444 AA444", read=".r:.example.com",
      referrer="https://www.example.com/"),
    R("ref-denied", None, "44444 44444 44444", read=".r:*,.r:-bad.com",
      referrer="http://bad.com/"),
    R("ref-not-denied", None, "44444 44444 AA444", read=".r:*,.r:-bad.com",
      referrer="http://ok.com/"),
    # a referrer smuggled into a stored write ACL opens nothing
    R("ref-in-write", None, "44444 44444 44444", write=".r:*"),
    # -- container write ACL: object writes only, never container writes --------------------
    R("write-user", "test:tester3", "33333 33333 33AAA", write="test:tester3"),
    R("write-xacct", "test2:tester2", "33333 33333 33AAA", write="test2:tester2"),
    R("write-other", "test:tester3", "33333 33333 33333", write="test2:tester2"),
    R("write-anon", None, "44444 44444 44444", write="test"),
    R("read-write", "test:tester3", "33333 AA333 AAAAA", read="test", write="test"),
    # -- account ACLs -----------------------------------------------------------------------
    R("acct-ro", "test:tester3", "AA333 AA333 AA333", account=acl(ro=["test:tester3"])),
    R("acct-rw", "test:tester3", "AA333 AAAAA AAAAA", account=acl(rw=["test:tester3"])),
    R("acct-admin", "test:tester3", "OOO33 OOOOO OOOOO", account=acl(admin=["test:tester3"])),
    R("acct-ro-xacct", "test2:tester2", "AA333 AA333 AA333", account=acl(ro=["test2"])),
    R("acct-rw-xacct", "test2:tester2", "AA333 AAAAA AAAAA",
      account=acl(rw=["test2:tester2"])),
    R("acct-other-user", "test:tester3", "33333 33333 33333",
      account=acl(admin=["test2:tester2"])),
    R("acct-anon", None, "44444 44444 44444", account=acl(admin=["test:tester3"], ro=["*"])),
    R("acct-ro+write", "test:tester3", "AA333 AA333 AAAAA", write="test:tester3",
      account=acl(ro=["test"])),
]
# fmt: on


def run_ops(auth: TempAuth, identity: Identity | None, account: str, row: Row) -> str:
    codes = [
        code(
            auth.authorize(
                identity,
                method,
                parts_for(account, level),
                container_read_acl=row.read,
                container_write_acl=row.write,
                account_acl=row.account,
                referrer=row.referrer,
            )
        )
        for level, method in OPS
    ]
    return " ".join("".join(codes[i : i + 5]) for i in range(0, 15, 5))


@pytest.mark.parametrize("row", MATRIX)
def test_matrix_on_auth_test(auth: TempAuth, row: Row) -> None:
    identity = login(auth, row.actor) if row.actor else None
    assert run_ops(auth, identity, "AUTH_test", row) == row.expected


# Accounts under SERVICE_ also need a service token from a user in group "service".
# (id, X-Auth-Token user, X-Service-Token user, expected)
SERVICE_MATRIX = [
    ("user-only", "test:tester", None, "33333 33333 33333"),
    ("user+service", "test:tester", "test5:tester5", "OOO33 OOOOO OOOOO"),
    ("user+non-service", "test:tester", "test2:tester2", "33333 33333 33333"),
    ("non-admin+service", "test:tester3", "test5:tester5", "33333 33333 33333"),
    ("service-only-as-user", "test5:tester5", None, "33333 33333 33333"),
    # Swift merges both tokens' groups, so swapping the headers works as well.
    ("swapped", "test5:tester5", "test:tester", "OOO33 OOOOO OOOOO"),
    ("reseller-admin", "admin:admin", None, "OOOOO OOOOO OOOOO"),
    ("other-admin+service", "test2:tester2", "test5:tester5", "33333 33333 33333"),
]


def _row_id(row: tuple[object, ...]) -> str:
    return str(row[0])


@pytest.mark.parametrize("row", SERVICE_MATRIX, ids=_row_id)
def test_service_prefix_needs_service_group(
    auth: TempAuth, row: tuple[str, str, str | None, str]
) -> None:
    _id, actor, service, expected = row
    identity = login(auth, actor, service)
    assert run_ops(auth, identity, "SERVICE_test", Row(actor, expected)) == expected


def test_service_token_alone_is_anonymous(auth: TempAuth) -> None:
    token, _ = auth.issue_token("test5", "tester5")
    assert auth.authenticate({"X-Service-Token": token}) is None
    decision = auth.authorize(None, "GET", PathParts("v1", "SERVICE_test"))
    assert decision.verdict is Verdict.DENY_401


def test_invalid_service_token_is_ignored(auth: TempAuth) -> None:
    user, _ = auth.issue_token("test", "tester")
    identity = auth.authenticate({"X-Auth-Token": user, "X-Service-Token": "AUTH_tkjunk.junk"})
    assert identity is not None and identity.service_groups == ()
    decision = auth.authorize(identity, "GET", PathParts("v1", "SERVICE_test"), account_acl=NO_ACL)
    assert decision.verdict is Verdict.DENY_403


@pytest.mark.parametrize(
    ("actor", "account", "expected"),
    [
        ("admin:admin", "AUTH_.hidden", Verdict.DENY_403),  # dot accounts are internal
        ("admin:admin", "AUTH_", Verdict.DENY_403),  # the bare prefix is no account
        ("admin:admin", "OTHER_test", Verdict.DENY_403),  # not our prefix
        ("test:tester", "OTHER_test", Verdict.DENY_403),
        ("test:tester", "test", Verdict.DENY_403),  # an account name without prefix
        (None, "OTHER_test", Verdict.DENY_401),
        ("admin:admin", "SERVICE_anything", Verdict.ALLOW),
        ("test:tester", "AUTH_test2", Verdict.DENY_403),
        ("test2:tester2", "AUTH_test2", Verdict.ALLOW),
    ],
)
def test_accounts_outside_the_users_reach(auth: TempAuth, actor, account, expected) -> None:
    identity = login(auth, actor) if actor else None
    decision = auth.authorize(identity, "GET", PathParts("v1", account), account_acl=NO_ACL)
    assert decision.verdict is expected


def test_reseller_admin_is_owner_and_reseller_request(auth: TempAuth) -> None:
    d = auth.authorize(login(auth, "admin:admin"), "PUT", PathParts("v1", "AUTH_new"))
    assert d.allowed and d.swift_owner and d.reseller_request


@pytest.mark.parametrize("actor", [None, "test:tester3", "test2:tester2"])
def test_options_is_always_allowed_for_cors(auth: TempAuth, actor) -> None:
    identity = login(auth, actor) if actor else None
    d = auth.authorize(identity, "OPTIONS", PathParts("v1", "AUTH_test", "c", "o"))
    assert d.allowed and not d.swift_owner


def test_reseller_reader_group_reads_any_account(deployment, clock) -> None:
    from dataclasses import replace

    from common.deploy import TempAuthUser

    reader = TempAuthUser("ops", "reader", "k", groups=[".reseller_reader"])
    users = [*deployment.tempauth.users, reader]
    auth = TempAuth.from_deployment(
        replace(deployment, tempauth=replace(deployment.tempauth, users=users)), clock
    )
    identity = login(auth, "ops:reader")
    assert run_ops(auth, identity, "AUTH_test", Row("ops:reader", "")) == "AA333 AA333 AA333"


class TestAccountAclFetch:
    """authorize() asks for the account ACL only when it could change the answer."""

    def test_owner_never_needs_it(self, auth: TempAuth) -> None:
        d = auth.authorize(login(auth, "test:tester"), "GET", PathParts("v1", "AUTH_test"))
        assert d.allowed and not d.needs_account_acl

    def test_container_acl_grant_does_not_need_it(self, auth: TempAuth) -> None:
        d = auth.authorize(
            login(auth, "test:tester3"),
            "GET",
            PathParts("v1", "AUTH_test", "c"),
            container_read_acl="test",
        )
        assert d.allowed and not d.needs_account_acl

    def test_non_owner_denied_without_it_is_asked_to_fetch(self, auth: TempAuth) -> None:
        d = auth.authorize(login(auth, "test:tester3"), "GET", PathParts("v1", "AUTH_test"))
        assert d.verdict is Verdict.DENY_403 and d.needs_account_acl

    def test_anonymous_is_not_asked(self, auth: TempAuth) -> None:
        d = auth.authorize(None, "GET", PathParts("v1", "AUTH_test"))
        assert d.verdict is Verdict.DENY_401 and not d.needs_account_acl

    def test_second_call_with_acl_decides(self, auth: TempAuth) -> None:
        me = login(auth, "test:tester3")
        d = auth.authorize(
            me, "GET", PathParts("v1", "AUTH_test"), account_acl=acl(ro=["test:tester3"])
        )
        assert d.allowed and not d.needs_account_acl


class TestDenialResponses:
    def test_401_carries_a_swift_challenge(self, auth: TempAuth) -> None:
        d = auth.authorize(None, "GET", PathParts("v1", "AUTH_test", "c"))
        r = d.response()
        assert r.status == 401 == d.status
        assert r.headers["Www-Authenticate"] == 'Swift realm="AUTH_test"'

    def test_403(self, auth: TempAuth) -> None:
        d = auth.authorize(
            login(auth, "test2:tester2"), "GET", PathParts("v1", "AUTH_test"), account_acl=NO_ACL
        )
        assert d.response().status == 403 == d.status

    def test_allowed_has_no_response(self, auth: TempAuth) -> None:
        d = auth.authorize(login(auth, "test:tester"), "GET", PathParts("v1", "AUTH_test"))
        assert d.status == 200
        with pytest.raises(AssertionError):
            d.response()

    def test_method_case_does_not_matter(self, auth: TempAuth) -> None:
        me = login(auth, "test:tester")
        assert not auth.authorize(me, "put", PathParts("v1", "AUTH_test")).allowed
        assert auth.authorize(me, "put", PathParts("v1", "AUTH_test", "c")).allowed
