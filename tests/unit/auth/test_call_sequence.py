"""The call sequence of docs/auth.md, run end to end over plain dicts.

`MiniProxy` is the documented sequence and nothing more: the "storage" is two dicts holding
what the account and container servers would (container ACL headers, account sysmeta). The
stories follow Swift's functional tests for ACLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.auth import (
    ACCOUNT_ACL_SYSMETA,
    AccountAcl,
    AuthResponse,
    Decision,
    InvalidToken,
    PathParts,
    TempAuth,
    account_acl_from_sysmeta,
    backend_request_headers,
    client_response_headers,
)


@dataclass
class MiniProxy:
    auth: TempAuth
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    containers: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    account_fetches: int = 0

    def login(self, user: str, key: str) -> str:
        r = self.auth.handle_auth_get({"X-Auth-User": user, "X-Auth-Key": key}, "http://p")
        assert r.status == 200
        return r.headers["X-Auth-Token"]

    def _authorize(
        self, headers: dict[str, str], method: str, parts: PathParts
    ) -> Decision | AuthResponse:
        try:
            identity = self.auth.authenticate(headers)
        except InvalidToken as e:
            return e.response
        stored = self.containers.get((parts.account or "", parts.container or ""), {})

        def decide(acl: AccountAcl | None) -> Decision:
            return self.auth.authorize(
                identity,
                method,
                parts,
                container_read_acl=stored.get("X-Container-Read"),
                container_write_acl=stored.get("X-Container-Write"),
                account_acl=acl,
                referrer=headers.get("Referer"),
            )

        decision = decide(None)
        if decision.needs_account_acl:
            self.account_fetches += 1
            sysmeta = self.accounts.get(parts.account or "", {}).get(ACCOUNT_ACL_SYSMETA)
            decision = decide(account_acl_from_sysmeta(sysmeta))
        return decision if decision.allowed else decision.response()

    def request(
        self, token: str | None, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str]]:
        segments = path.strip("/").split("/", 3)[1:]
        parts = PathParts("v1", *segments)
        sent = dict(headers or {})
        if token:
            sent["X-Auth-Token"] = token
        decision = self._authorize(sent, method, parts)
        if isinstance(decision, AuthResponse):
            return decision.status, decision.headers
        key = (parts.account or "", parts.container or "")
        store = self.accounts.setdefault(key[0], {}) if not parts.container else None
        if store is None:
            store = self.containers.setdefault(key, {})
        if method in ("PUT", "POST"):
            out = backend_request_headers(parts, sent, decision)
            if isinstance(out, AuthResponse):
                return out.status, out.headers
            store.update(
                {k: v for k, v in out.items() if k.startswith(("X-Container-", "X-Account-"))}
            )
            return 204, {}
        return 200, client_response_headers(parts, store, decision)


def test_protected_container_acl_story(auth: TempAuth) -> None:
    proxy = MiniProxy(auth)
    owner = proxy.login("test:tester", "testing")
    tester3 = proxy.login("test:tester3", "testing3")
    acls = {"X-Container-Read": "jdoe", "X-Container-Write": "jdoe", "X-Container-Meta-T": "1"}
    assert proxy.request(owner, "POST", "/v1/AUTH_test/c", acls)[0] == 204
    assert proxy.request(tester3, "GET", "/v1/AUTH_test/c")[0] == 403

    # The owner grants read-only through the account ACL.
    grant = {"X-Account-Access-Control": '{"read-only":["test:tester3"]}'}
    assert proxy.request(owner, "POST", "/v1/AUTH_test", grant)[0] == 204
    status, headers = proxy.request(owner, "HEAD", "/v1/AUTH_test")
    assert headers["X-Account-Access-Control"] == '{"read-only":["test:tester3"]}'
    status, headers = proxy.request(tester3, "HEAD", "/v1/AUTH_test/c")
    assert status == 200 and headers == {"X-Container-Meta-T": "1"}  # no ACLs shown
    assert proxy.request(tester3, "POST", "/v1/AUTH_test/c", {"X-Container-Read": "x"})[0] == 403

    # Read-write may POST, but the container ACLs it sends are dropped silently.
    grant = {"X-Account-Access-Control": '{"read-write":["test:tester3"]}'}
    assert proxy.request(owner, "POST", "/v1/AUTH_test", grant)[0] == 204
    change = {"X-Container-Read": "frank", "X-Container-Meta-T": "2"}
    assert proxy.request(tester3, "POST", "/v1/AUTH_test/c", change)[0] == 204
    _, headers = proxy.request(owner, "HEAD", "/v1/AUTH_test/c")
    assert headers["X-Container-Read"] == "jdoe" and headers["X-Container-Meta-T"] == "2"

    # Admin through the account ACL is an owner: it sees and sets the ACLs.
    grant = {"X-Account-Access-Control": '{"admin":["test:tester3"]}'}
    assert proxy.request(owner, "POST", "/v1/AUTH_test", grant)[0] == 204
    assert (
        proxy.request(tester3, "POST", "/v1/AUTH_test/c", {"X-Container-Read": "frank"})[0] == 204
    )
    _, headers = proxy.request(tester3, "HEAD", "/v1/AUTH_test/c")
    assert headers["X-Container-Read"] == "frank"


def test_public_container_story(auth: TempAuth) -> None:
    proxy = MiniProxy(auth)
    owner = proxy.login("test:tester", "testing")
    assert proxy.request(None, "GET", "/v1/AUTH_test/pub/o")[0] == 401
    assert proxy.request(owner, "POST", "/v1/AUTH_test/pub", {"X-Container-Read": ".r:*"})[0] == 204
    assert proxy.request(None, "GET", "/v1/AUTH_test/pub/o")[0] == 200
    assert proxy.request(None, "GET", "/v1/AUTH_test/pub")[0] == 401  # no .rlistings yet
    assert proxy.request(None, "PUT", "/v1/AUTH_test/pub/o")[0] == 401
    listing = {"X-Container-Read": ".r:*,.rlistings"}
    assert proxy.request(owner, "POST", "/v1/AUTH_test/pub", listing)[0] == 204
    status, headers = proxy.request(None, "GET", "/v1/AUTH_test/pub")
    assert status == 200 and "X-Container-Read" not in headers
    # A bad token is refused outright, even where anonymous access would work.
    status, headers = proxy.request("AUTH_tkforged.tag", "GET", "/v1/AUTH_test/pub/o")
    assert status == 401 and "Www-Authenticate" in headers


def test_bad_acl_is_400_and_owner_requests_skip_the_account_lookup(auth: TempAuth) -> None:
    proxy = MiniProxy(auth)
    owner = proxy.login("test:tester", "testing")
    assert proxy.request(owner, "POST", "/v1/AUTH_test/c", {"X-Container-Read": ".r:"})[0] == 400
    bad = {"X-Account-Access-Control": "{nope"}
    assert proxy.request(owner, "POST", "/v1/AUTH_test", bad)[0] == 400
    assert proxy.account_fetches == 0
    other = proxy.login("test2:tester2", "testing2")
    assert proxy.request(other, "GET", "/v1/AUTH_test")[0] == 403
    assert proxy.account_fetches == 1
