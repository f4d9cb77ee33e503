"""GET /auth/v1.0 and friends: Swift's credential headers, paths and error statuses."""

from __future__ import annotations

import pytest

from common.deploy import TempAuthConfig, TempAuthUser
from proxy.auth import TempAuth, is_auth_path

BASE = "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("path", "headers", "account"),
    [
        ("/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}, "test"),
        ("/auth/v1.0/", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}, "test"),
        ("/v1.0", {"X-Auth-User": "test:tester3", "X-Auth-Key": "testing3"}, "test"),
        ("/auth/auth", {"X-Auth-User": "test2:tester2", "X-Auth-Key": "testing2"}, "test2"),
        ("/auth/v1/", {"X-Auth-User": "test:tester2", "X-Auth-Key": "testing2"}, "test"),
        (
            "/auth/v1.0",
            {"X-Storage-User": "admin:admin", "X-Storage-Pass": "admin"},
            "admin",
        ),
        ("/auth/v1.0", {"x-auth-user": "test5:tester5", "x-auth-key": "testing5"}, "test5"),
        (
            "/auth/v1/test/auth",
            {"X-Storage-User": "tester", "X-Storage-Pass": "testing"},
            "test",
        ),
        (
            "/auth/v1/test/auth",
            {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"},
            "test",
        ),
    ],
)
def test_good_credentials_get_a_token_and_storage_url(auth, clock, path, headers, account):
    r = auth.handle_auth_get(headers, BASE + "/", path=path)
    assert r.status == 200
    assert r.headers["X-Storage-Url"] == f"{BASE}/v1/AUTH_{account}"
    assert r.headers["X-Auth-Token"] == r.headers["X-Storage-Token"]
    assert r.headers["X-Auth-Token"].startswith("AUTH_tk")
    assert r.headers["X-Auth-Token-Expires"] == str(auth.token_life_s)
    identity = auth.authenticate({"X-Auth-Token": r.headers["X-Auth-Token"]})
    assert identity is not None and identity.expires == clock.time() + auth.token_life_s


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "wrong"}),
        ("/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing2"}),  # other's key
        ("/auth/v1.0", {"X-Auth-User": "test:nobody", "X-Auth-Key": "testing"}),
        ("/auth/v1.0", {"X-Auth-User": "test:tester"}),
        ("/auth/v1.0", {"X-Auth-Key": "testing"}),
        ("/auth/v1.0", {}),
        ("/auth/v1.0", {"X-Auth-User": "tester", "X-Auth-Key": "testing"}),  # no account
        ("/auth/v1.0", {"X-Auth-User": ":tester", "X-Auth-Key": "testing"}),
        ("/auth/v1.0", {"X-Auth-User": "test:", "X-Auth-Key": "testing"}),
        ("/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": ""}),
        ("/auth/v1.0", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing" * 1000}),
        ("/auth/v1.0", {"X-Auth-User": "TEST:tester", "X-Auth-Key": "testing"}),
        ("/auth/v1/test2/auth", {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}),
        ("/auth/v1/test/auth", {"X-Auth-User": "tester", "X-Auth-Key": "testing"}),
        ("/auth/v1/test/auth", {"X-Storage-User": "tester", "X-Storage-Pass": "nope"}),
    ],
)
def test_bad_or_missing_credentials_are_401(auth, path, headers) -> None:
    r = auth.handle_auth_get(headers, BASE, path=path)
    assert r.status == 401
    assert r.headers["Www-Authenticate"].startswith("Swift realm=")
    assert "X-Auth-Token" not in r.headers
    assert b"testing" not in r.body


@pytest.mark.parametrize("path", ["/auth/", "/auth/v2.0", "/auth/v1/test", "/auth/v1/a/b/c"])
def test_unknown_auth_paths_are_400(auth, path) -> None:
    r = auth.handle_auth_get({"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}, BASE, path)
    assert r.status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_other_methods_are_405(auth, method) -> None:
    r = auth.handle_auth_get({}, BASE, "/auth/v1.0", method=method)
    assert r.status == 405 and r.headers["Allow"] == "GET"


def test_each_request_gets_a_fresh_token_and_all_stay_valid(auth, clock) -> None:
    creds = {"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}
    first = auth.handle_auth_get(creds, BASE).headers["X-Auth-Token"]
    clock.advance(5)
    second = auth.handle_auth_get(creds, BASE).headers["X-Auth-Token"]
    assert first != second
    for token in (first, second):
        assert auth.authenticate({"X-Auth-Token": token}) is not None


def test_storage_url_quotes_the_account(deployment, clock) -> None:
    users = [TempAuthUser("my acct", "u", "k", admin=True)]
    config = TempAuthConfig(reseller_prefixes=["AUTH"], users=users)
    auth = TempAuth(config, b"secret", clock)
    r = auth.handle_auth_get({"X-Auth-User": "my acct:u", "X-Auth-Key": "k"}, BASE)
    assert r.headers["X-Storage-Url"] == BASE + "/v1/AUTH_my%20acct"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/auth/v1.0", True),
        ("/auth/v1/test/auth", True),
        ("/auth", True),
        ("/v1.0", True),
        ("/v1.0/", True),
        ("/v1/AUTH_test", False),
        ("/v1", False),
        ("/authx", False),
        ("/info", False),
    ],
)
def test_is_auth_path(path, expected) -> None:
    assert is_auth_path(path) is expected


class TestConfigValidation:
    def make(self, clock, **kw) -> TempAuth:
        return TempAuth(TempAuthConfig(**kw), b"secret", clock)

    @pytest.mark.parametrize(
        ("kw", "message"),
        [
            ({"reseller_prefixes": []}, "at least one reseller prefix"),
            ({"reseller_prefixes": [""]}, "reseller prefix ''"),
            ({"reseller_prefixes": ["AU/TH_"]}, "reseller prefix"),
            ({"reseller_prefixes": ["AUTH", "AUTH_"]}, "unique"),
            ({"require_group": {"OTHER_": "g"}}, "unknown prefix 'OTHER_'"),
            ({"token_life_s": 0}, "token_life_s"),
            ({"users": [TempAuthUser("a:b", "u", "hunter2")]}, "may not contain ':'"),
            ({"users": [TempAuthUser("", "u", "hunter2")]}, "must not be empty"),
            ({"users": [TempAuthUser("a", "u", "")]}, "key must not be empty"),
            ({"users": [TempAuthUser("a", "u", "hunter2")] * 2}, "listed twice"),
            ({"users": [TempAuthUser("a", "u" * 300, "hunter2")]}, "limited to 256 bytes"),
        ],
    )
    def test_bad_config_is_refused_without_showing_keys(self, clock, kw, message) -> None:
        with pytest.raises(ValueError, match=message) as info:
            self.make(clock, **kw)
        assert "hunter2" not in str(info.value)

    def test_prefixes_without_underscore_are_normalised(self, clock) -> None:
        auth = self.make(
            clock,
            reseller_prefixes=["AUTH", "SERVICE"],
            require_group={"SERVICE": "service"},
        )
        assert auth.policy.reseller_prefixes == ("AUTH_", "SERVICE_")
        assert auth.policy.require_group == {"SERVICE_": "service"}

    def test_empty_secret_is_refused(self, clock) -> None:
        with pytest.raises(ValueError, match="secret"):
            TempAuth(TempAuthConfig(), b"", clock)


def test_s3_credentials(auth) -> None:
    creds = auth.s3_credentials("test:tester")
    assert creds is not None
    assert creds.storage_account == "AUTH_test" and creds.secret_key == "testing"
    assert "AUTH_test" in creds.identity.groups
    assert auth.s3_credentials("test:nobody") is None


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Auth-User": "te\udcffst:tester", "X-Auth-Key": "testing"},
        {"X-Auth-User": "test:tester", "X-Auth-Key": "test\udcffing"},
        {"X-Auth-User": "test:tester", "X-Auth-Key": "tésting"},
    ],
    ids=["bad-utf8-user", "bad-utf8-key", "non-ascii-key"],
)
def test_undecodable_or_non_ascii_credentials_are_401_not_a_crash(auth, headers) -> None:
    assert auth.handle_auth_get(headers, BASE).status == 401
