"""Owner-only headers, the account ACL's trip into sysmeta and back, account autocreate."""

from __future__ import annotations

import pytest

from proxy.auth import (
    ACCOUNT_ACL_SYSMETA,
    AuthResponse,
    Decision,
    MissingAccount,
    PathParts,
    Verdict,
    backend_request_headers,
    client_response_headers,
    missing_account_action,
)

OWNER = Decision(Verdict.ALLOW, swift_owner=True)
WRITER = Decision(Verdict.ALLOW)  # e.g. via a read-write account ACL
DENIED = Decision(Verdict.DENY_403)
ACCOUNT = PathParts("v1", "AUTH_test")
CONTAINER = PathParts("v1", "AUTH_test", "c")
OBJECT = PathParts("v1", "AUTH_test", "c", "o")


def test_owner_container_acls_are_cleaned_and_kept() -> None:
    out = backend_request_headers(
        CONTAINER,
        {"x-container-read": ".ref:*, .rlistings", "X-Container-Write": " test3 ", "X-A": "1"},
        OWNER,
    )
    assert out == {"x-container-read": ".r:*,.rlistings", "X-Container-Write": "test3", "X-A": "1"}


def test_non_owner_owner_headers_are_dropped_silently() -> None:
    sent = {
        "X-Container-Read": "frank",
        "X-Container-Write": "frank",
        "X-Container-Sync-Key": "s",
        "X-Container-Meta-Temp-URL-Key": "k",
        "X-Container-Meta-Color": "blue",
    }
    assert backend_request_headers(CONTAINER, sent, WRITER) == {"X-Container-Meta-Color": "blue"}


@pytest.mark.parametrize(
    ("parts", "headers", "message"),
    [
        (CONTAINER, {"X-Container-Read": ".r:"}, b"No host/domain value"),
        (CONTAINER, {"X-Container-Write": ".r:*"}, b"Referrers not allowed in write ACL"),
        (ACCOUNT, {"X-Account-Access-Control": "{nope"}, b"Syntax error in input"),
        (ACCOUNT, {"X-Account-Access-Control": '{"bad":[]}'}, b'Key "bad" not recognized'),
    ],
)
@pytest.mark.parametrize("decision", [OWNER, WRITER])
def test_bad_acls_are_400_for_everyone(parts, headers, message, decision) -> None:
    out = backend_request_headers(parts, headers, decision)
    assert isinstance(out, AuthResponse) and out.status == 400
    assert message in out.body


def test_owner_account_acl_goes_to_sysmeta_in_canonical_form() -> None:
    sent = {"X-Account-Access-Control": '{ "read-only": ["test2"] }', "X-Account-Meta-A": "1"}
    out = backend_request_headers(ACCOUNT, sent, OWNER)
    assert out == {ACCOUNT_ACL_SYSMETA: '{"read-only":["test2"]}', "X-Account-Meta-A": "1"}


def test_empty_account_acl_removes_it() -> None:
    out = backend_request_headers(ACCOUNT, {"X-Account-Access-Control": ""}, OWNER)
    assert out == {ACCOUNT_ACL_SYSMETA: ""}


def test_non_owner_account_acl_is_dropped() -> None:
    out = backend_request_headers(ACCOUNT, {"X-Account-Access-Control": '{"admin":["me"]}'}, WRITER)
    assert out == {}


def test_object_requests_pass_container_acl_names_through_untouched() -> None:
    # Object metadata may not look like an ACL; only container requests are cleaned.
    out = backend_request_headers(OBJECT, {"X-Object-Meta-X": ".r:"}, WRITER)
    assert out == {"X-Object-Meta-X": ".r:"}


def test_response_headers_for_non_owners_hide_owner_headers() -> None:
    backend = {"X-Container-Read": "jdoe", "X-Container-Sync-Key": "s", "X-Container-Meta-T": "v"}
    assert client_response_headers(CONTAINER, backend, WRITER) == {"X-Container-Meta-T": "v"}
    assert client_response_headers(CONTAINER, backend, OWNER) == backend


def test_owner_sees_account_acl_from_sysmeta() -> None:
    backend = {ACCOUNT_ACL_SYSMETA.lower(): '{"admin":["a"]}', "X-Account-Object-Count": "0"}
    out = client_response_headers(ACCOUNT, backend, OWNER)
    assert out["X-Account-Access-Control"] == '{"admin":["a"]}'
    assert "X-Account-Access-Control" not in client_response_headers(ACCOUNT, backend, WRITER)


@pytest.mark.parametrize("stored", ["", "{}", '{"admin":[]}', "{broken"])
def test_owner_sees_no_account_acl_when_none_is_effective(stored) -> None:
    out = client_response_headers(ACCOUNT, {ACCOUNT_ACL_SYSMETA: stored}, OWNER)
    assert "X-Account-Access-Control" not in out


@pytest.mark.parametrize(
    ("decision", "method", "parts", "autocreate", "expected"),
    [
        (OWNER, "PUT", CONTAINER, True, MissingAccount.AUTOCREATE),
        (WRITER, "PUT", CONTAINER, True, MissingAccount.AUTOCREATE),
        (OWNER, "POST", ACCOUNT, True, MissingAccount.AUTOCREATE),
        (OWNER, "GET", ACCOUNT, True, MissingAccount.FAKE_LISTING),
        (OWNER, "head", ACCOUNT, True, MissingAccount.FAKE_LISTING),
        (OWNER, "PUT", CONTAINER, False, MissingAccount.NOT_FOUND),
        (OWNER, "GET", ACCOUNT, False, MissingAccount.NOT_FOUND),
        (DENIED, "PUT", CONTAINER, True, MissingAccount.NOT_FOUND),
        (OWNER, "POST", CONTAINER, True, MissingAccount.NOT_FOUND),
        (OWNER, "DELETE", CONTAINER, True, MissingAccount.NOT_FOUND),
        (OWNER, "DELETE", ACCOUNT, True, MissingAccount.NOT_FOUND),
        (OWNER, "PUT", OBJECT, True, MissingAccount.NOT_FOUND),
        (OWNER, "GET", OBJECT, True, MissingAccount.NOT_FOUND),
        (OWNER, "PUT", PathParts("v1", "AUTH_.internal", "c"), True, MissingAccount.NOT_FOUND),
    ],
)
def test_missing_account_action(decision, method, parts, autocreate, expected) -> None:
    assert missing_account_action(decision, method, parts, autocreate=autocreate) is expected
