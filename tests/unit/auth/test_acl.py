"""ACL parsing, cleaning and referrer matching."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.auth import (
    ACL_BYTES_MAX,
    AccountAcl,
    AclError,
    ContainerAcl,
    account_acl_from_sysmeta,
    clean_account_acl,
    clean_container_acl,
    format_account_acl,
    parse_account_acl,
    parse_container_acl,
    referrer_allowed,
)


@pytest.mark.parametrize(
    ("value", "cleaned"),
    [
        ("bob, sue", "bob,sue"),
        (" bob ,,, sue ,", "bob,sue"),
        ("test:tester3", "test:tester3"),
        (".referrer : *", ".r:*"),
        (".ref:*.example.com", ".r:.example.com"),
        (".referer:example.com", ".r:example.com"),
        (".r:*, .rlistings", ".r:*,.rlistings"),
        (".r:*,.r:-.thief.com", ".r:*,.r:-.thief.com"),
        (".r: - bad.com", ".r:-bad.com"),
        (".r:-*.bad.com", ".r:-.bad.com"),
        ("", ""),
        (" , ", ""),
        ("*", "*"),
    ],
)
def test_clean_read_acl(value, cleaned) -> None:
    assert clean_container_acl("X-Container-Read", value) == cleaned


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("X-Container-Read", ".r:", "No host/domain value after referrer"),
        ("X-Container-Read", ".r:-", "No host/domain value after referrer"),
        ("X-Container-Read", ".r:*.", "No host/domain value after referrer"),
        ("X-Container-Read", ".r:.", "No host/domain value after referrer"),
        ("X-Container-Read", ".bogus:x", "Unknown designator '.bogus'"),
        ("X-Container-Write", ".r:*", "Referrers not allowed in write ACL"),
        ("x-container-write", "bob,.ref:example.com", "Referrers not allowed in write ACL"),
        ("X-Container-Read", "a," * ACL_BYTES_MAX, f"longer than {ACL_BYTES_MAX} bytes"),
    ],
)
def test_clean_rejects_bad_acls_with_a_reason(header, value, message) -> None:
    with pytest.raises(AclError, match=message):
        clean_container_acl(header, value)


def test_write_acl_keeps_groups() -> None:
    assert clean_container_acl("X-Container-Write", "test2:tester2, test") == "test2:tester2,test"


@settings(deadline=None, max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("ab.:*-, r%")), max_size=40))
def test_clean_is_idempotent_or_refuses(value: str) -> None:
    try:
        once = clean_container_acl("X-Container-Read", value)
    except AclError:
        return
    assert clean_container_acl("X-Container-Read", once) == once


@pytest.mark.parametrize(
    ("stored", "parsed"),
    [
        (None, ContainerAcl()),
        ("", ContainerAcl()),
        (".r:*,.rlistings", ContainerAcl(("*",), (".rlistings",))),
        ("test:tester3,.r:-bad.com,test2", ContainerAcl(("-bad.com",), ("test:tester3", "test2"))),
        ("caf%C3%A9", ContainerAcl((), ("café",))),
    ],
)
def test_parse_container_acl(stored, parsed) -> None:
    assert parse_container_acl(stored) == parsed


def test_rlistings_flag() -> None:
    assert parse_container_acl(".r:*,.rlistings").rlistings
    assert not parse_container_acl(".r:*").rlistings


@pytest.mark.parametrize(
    ("referrer", "designations", "allowed"),
    [
        (None, ("*",), True),  # no Referer at all still matches "*"
        ("http://any.where/", ("*",), True),
        (None, (), False),
        ("http://example.com/page", ("example.com",), True),
        ("http://EXAMPLE.com/page", ("example.com",), True),
        ("http://example.com:8080/", ("example.com",), True),
        ("http://www.example.com/", ("example.com",), False),
        ("http://www.example.com/", (".example.com",), True),
        ("http://example.com/", (".example.com",), False),
        ("http://notexample.com/", (".example.com",), False),
        ("http://bad.com/", ("*", "-bad.com"), False),
        ("http://good.com/", ("*", "-bad.com"), True),
        ("http://x.thief.com/", ("*", "-.thief.com"), False),
        ("http://thief.com/", ("-thief.com", "*"), True),  # order matters: last match wins
        ("http://a.com/", ("*", "-*"), True),  # "-*" denies nothing, as in Swift
        ("not a url", ("example.com",), False),
        ("http://[::1/", ("*",), True),  # malformed URL: host "unknown", still matches "*"
        ("http://[::1/", ("unknown",), True),
    ],
)
def test_referrer_allowed(referrer, designations, allowed) -> None:
    assert referrer_allowed(referrer, designations) is allowed


GOOD_ACCOUNT_ACL = '{"admin":["test:tester3"],"read-only":["test2"],"read-write":[]}'


def test_parse_account_acl() -> None:
    acl = parse_account_acl(GOOD_ACCOUNT_ACL)
    assert acl == AccountAcl(admin=frozenset({"test:tester3"}), read_only=frozenset({"test2"}))
    assert acl
    assert not parse_account_acl("")
    assert not parse_account_acl("{}")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", "Syntax error in input"),
        ("[]", "Syntax error in input"),
        ('"admin"', "Syntax error in input"),
        ('{"owner": ["x"]}', 'Key "owner" not recognized'),
        ('{"admin": "x"}', 'Value for key "admin" must be a list'),
        ('{"read-only": [1]}', 'Elements of "read-only" list must be strings'),
        ('{"read-write": [null]}', 'Elements of "read-write" list must be strings'),
        (json.dumps({"admin": ["x" * ACL_BYTES_MAX]}), "longer than"),
    ],
)
def test_bad_account_acls_are_refused_with_a_reason(value, message) -> None:
    with pytest.raises(AclError, match=message) as info:
        parse_account_acl(value)
    assert str(info.value).startswith("X-Account-Access-Control")
    with pytest.raises(AclError):
        clean_account_acl(value)


def test_clean_account_acl_is_canonical_and_keeps_the_keys_sent() -> None:
    sent = '{ "read-write": [], "admin": ["b", "a"] }'
    assert clean_account_acl(sent) == '{"admin":["b","a"],"read-write":[]}'
    assert clean_account_acl("") == ""
    assert clean_account_acl('{"admin":["caf\u00e9"]}') == '{"admin":["caf\\u00e9"]}'


def test_format_account_acl_from_record_drops_empty_levels() -> None:
    acl = AccountAcl(admin=frozenset({"b", "a"}), read_only=frozenset({"c"}))
    assert format_account_acl(acl) == '{"admin":["a","b"],"read-only":["c"]}'
    assert format_account_acl(AccountAcl()) == "{}"


@pytest.mark.parametrize("stored", [None, "", "{broken", '{"admin": 5}'])
def test_missing_or_damaged_stored_acl_grants_nothing(stored) -> None:
    assert account_acl_from_sysmeta(stored) == AccountAcl()


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=200))
def test_account_acl_parser_only_raises_acl_error(value: str) -> None:
    with contextlib.suppress(AclError):
        parse_account_acl(value)
