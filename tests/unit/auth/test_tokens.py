"""Tokens: valid across workers, and nothing else gets through (forgery, tampering, expiry)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.authtoken import TOKEN_BYTES_MAX, TokenClaims, TokenCodec
from common.clock import ManualClock
from common.deploy import DeploymentConfig, TempAuthUser
from proxy.auth import InvalidToken, TempAuth, derive_secret


def rebuilt(deployment: DeploymentConfig, clock: ManualClock, **tempauth_changes) -> TempAuth:
    """Another proxy worker: its own TempAuth built from (possibly changed) configuration."""
    ta = replace(deployment.tempauth, **tempauth_changes)
    return TempAuth.from_deployment(replace(deployment, tempauth=ta), clock)


def rejected(auth: TempAuth, token: str) -> bool:
    try:
        return auth.authenticate({"X-Auth-Token": token}) is None
    except InvalidToken as e:
        assert e.response.status == 401
        return True


def test_token_from_one_worker_is_valid_on_another(auth, deployment, clock) -> None:
    token, _ = auth.issue_token("test", "tester")
    other = rebuilt(deployment, clock)
    identity = other.authenticate({"X-Auth-Token": token})
    assert identity is not None and identity.user == "test:tester"


def test_storage_token_header_is_accepted(auth) -> None:
    token, _ = auth.issue_token("test", "tester3")
    identity = auth.authenticate({"x-storage-token": token})
    assert identity is not None and identity.user == "test:tester3"


@pytest.mark.parametrize(
    ("user", "groups", "admin", "reseller"),
    [
        ("test:tester", ("test", "test:tester", "AUTH_test", "SERVICE_test"), True, False),
        ("test:tester3", ("test", "test:tester3"), False, False),
        ("test5:tester5", ("test5", "test5:tester5", "service"), False, False),
        (
            "admin:admin",
            ("admin", "admin:admin", ".reseller_admin", "AUTH_admin", "SERVICE_admin"),
            True,
            True,
        ),
    ],
)
def test_identity_groups_follow_swift(auth, user, groups, admin, reseller) -> None:
    identity = auth.authenticate({"X-Auth-Token": auth.issue_token(*user.split(":"))[0]})
    assert identity is not None
    assert identity.groups == groups
    assert (identity.admin, identity.reseller_admin) == (admin, reseller)
    assert identity.account == user.split(":")[0]


def test_expiry_uses_the_injected_clock(auth, clock) -> None:
    token, expires = auth.issue_token("test", "tester")
    assert expires == clock.time() + auth.token_life_s
    clock.advance(auth.token_life_s - 1)
    assert auth.authenticate({"X-Auth-Token": token}) is not None
    clock.advance(1)
    with pytest.raises(InvalidToken):
        auth.authenticate({"X-Auth-Token": token})


def test_other_secret_rejects(auth, deployment, clock) -> None:
    token, _ = auth.issue_token("test", "tester")
    assert rejected(rebuilt(deployment, clock, secret="another secret"), token)


def test_changing_a_users_key_revokes_their_tokens(auth, deployment, clock) -> None:
    token, _ = auth.issue_token("test", "tester")
    users = [
        replace(u, key="new key") if (u.account, u.user) == ("test", "tester") else u
        for u in deployment.tempauth.users
    ]
    assert rejected(rebuilt(deployment, clock, users=users), token)
    unchanged, _ = auth.issue_token("test", "tester3")
    assert not rejected(rebuilt(deployment, clock, users=users), unchanged)


def test_removing_a_user_revokes_their_tokens(auth, deployment, clock) -> None:
    token, _ = auth.issue_token("test", "tester3")
    users = [u for u in deployment.tempauth.users if u.user != "tester3"]
    assert rejected(rebuilt(deployment, clock, users=users), token)


def test_every_single_character_change_is_rejected(auth) -> None:
    token, _ = auth.issue_token("test", "tester3")
    for i, ch in enumerate(token):
        for replacement in {"A", "a", "0", "-", "_", "."} - {ch}:
            tampered = token[:i] + replacement + token[i + 1 :]
            assert rejected(auth, tampered), (i, replacement)
    for cut in range(len(token)):
        assert rejected(auth, token[:cut])
    assert rejected(auth, token + "A")


def _sign(key_material: bytes, signed: str) -> str:
    key = hmac.new(key_material, b"cairn tempauth token key v1", hashlib.sha256).digest()
    tag = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(tag).rstrip(b"=").decode()


def _payload(body: object) -> str:
    return base64.urlsafe_b64encode(msgpack.packb(body)).rstrip(b"=").decode()


def test_forged_claims_for_the_reseller_admin_are_rejected(auth) -> None:
    genuine, _ = auth.issue_token("test", "tester3")
    tag = genuine.rpartition(".")[2]
    body = {"v": 1, "account": "admin", "user": "admin", "expires": 2**40, "kf": b"\0" * 8}
    signed = "AUTH_tk" + _payload(body)
    assert rejected(auth, signed + "." + tag)  # someone else's tag
    assert rejected(auth, signed + "." + _sign(b"guessed secret", signed))
    assert rejected(auth, signed)  # no tag at all


def test_correctly_signed_but_wrong_key_fingerprint_is_rejected(deployment, clock) -> None:
    # Even a holder of the signing secret cannot mint a token without knowing the user's key.
    secret = derive_secret(deployment.tempauth.secret, "", "")
    auth = TempAuth.from_deployment(deployment, clock)
    body = {"v": 1, "account": "admin", "user": "admin", "expires": 2**40, "kf": b"\0" * 8}
    signed = "AUTH_tk" + _payload(body)
    assert rejected(auth, signed + "." + _sign(secret, signed))


@pytest.mark.parametrize(
    "body",
    [
        {"v": 2, "account": "test", "user": "tester", "expires": 2**40},
        {"v": 1, "account": "test", "user": "tester", "expires": "later"},
        {"v": 1, "account": "test", "user": "tester", "expires": True},
        {"v": 1, "account": b"test", "user": "tester", "expires": 2**40},
        {"v": 1, "account": "test", "expires": 2**40},
        ["not", "a", "map"],
    ],
    ids=["future-version", "expires-str", "expires-bool", "account-bytes", "no-user", "list"],
)
def test_signed_but_malformed_payloads_are_rejected(deployment, clock, body) -> None:
    """Validate what we read even when the tag is right (paired checks across the boundary)."""
    auth = TempAuth.from_deployment(deployment, clock)
    secret = derive_secret(deployment.tempauth.secret, "", "")
    if isinstance(body, dict) and "kf" not in body:
        body["kf"] = TokenCodec(secret, "AUTH_").key_fingerprint("test:tester", "testing")
    signed = "AUTH_tk" + _payload(body)
    assert rejected(auth, signed + "." + _sign(secret, signed))


def test_tokens_outside_our_prefix_are_anonymous_not_errors(auth) -> None:
    assert auth.authenticate({"X-Auth-Token": "gAAAAABkeystone-ish"}) is None
    assert auth.authenticate({}) is None
    assert auth.authenticate({"X-Auth-Token": ""}) is None


@pytest.mark.parametrize(
    "token",
    [
        "AUTH_tk",
        "AUTH_tk.",
        "AUTH_tk" + "A" * (TOKEN_BYTES_MAX + 10),
        "AUTH_tké.é",
        "AUTH_tk!!!.???",
        "AUTH_junk",
    ],
)
def test_garbage_in_our_namespace_is_a_clean_401(auth, token) -> None:
    with pytest.raises(InvalidToken) as info:
        auth.authenticate({"X-Auth-Token": token})
    response = info.value.response
    assert response.status == 401 and "Www-Authenticate" in response.headers
    assert token not in str(info.value)


@settings(deadline=None, max_examples=200)
@given(st.text(max_size=300))
def test_verify_never_raises_on_arbitrary_text(text: str) -> None:
    codec = TokenCodec(b"s3cret", "AUTH_")
    assert codec.verify("AUTH_tk" + text, 0.0) is None


def test_minted_claims_round_trip() -> None:
    codec = TokenCodec(b"s3cret", "AUTH_")
    claims = TokenClaims("acct é", "user:x", 12345, b"12345678")
    assert codec.verify(codec.mint(claims), 12344.0) == claims
    assert codec.verify(codec.mint(claims), 12345.0) is None


def test_derived_secret_depends_on_both_salts_and_explicit_wins() -> None:
    a = derive_secret("", "p", "s")
    assert a != derive_secret("", "p", "s2") and a != derive_secret("", "p2", "s")
    assert a == derive_secret("", "p", "s")
    assert derive_secret("explicit", "p", "s") == b"explicit"
    assert b"p" not in a.split(b"\0")


def test_no_secret_or_key_in_reprs(auth, deployment) -> None:
    token, _ = auth.issue_token("test", "tester")
    identity = auth.authenticate({"X-Auth-Token": token})
    creds = auth.s3_credentials("test:tester")
    assert creds is not None and creds.secret_key == "testing"
    texts = [repr(auth), repr(identity), repr(creds), repr(deployment), repr(auth._codec)]
    for text in texts:
        assert "cairn-functest-token-secret" not in text
        assert "testing" not in text  # every functest key starts with "testing"
        assert token not in text


def test_users_added_by_groups_dot_admin_are_admins(deployment, clock) -> None:
    users = [TempAuthUser("legacy", "u", "k", groups=[".admin", "extra"])]
    auth = rebuilt(deployment, clock, users=users)
    identity = auth.authenticate({"X-Auth-Token": auth.issue_token("legacy", "u")[0]})
    assert identity is not None and identity.admin
    assert identity.groups == ("legacy", "legacy:u", "extra", "AUTH_legacy", "SERVICE_legacy")


def test_derived_secret_is_used_when_none_is_configured(deployment, clock) -> None:
    salted = rebuilt(deployment, clock, secret="")
    token, _ = salted.issue_token("test", "tester")
    assert salted.authenticate({"X-Auth-Token": token}) is not None
    assert rejected(auth_with_salt(deployment, clock, "other-suffix"), token)
    assert rejected(rebuilt(deployment, clock), token)  # the explicit secret differs


def auth_with_salt(deployment: DeploymentConfig, clock: ManualClock, suffix: str) -> TempAuth:
    cluster = replace(deployment.cluster, hash_path_suffix=suffix)
    tempauth = replace(deployment.tempauth, secret="")
    return TempAuth.from_deployment(replace(deployment, cluster=cluster, tempauth=tempauth), clock)
