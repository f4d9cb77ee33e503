"""Container and account ACLs, tenancy, through python-swiftclient against `cairn up`."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from swiftclient import ClientException

from tests.cluster import http

pytestmark = pytest.mark.integration


def _name() -> str:
    return f"acl-{uuid.uuid4().hex[:10]}"


def _status(fn, *a, **kw) -> int:
    try:
        fn(*a, **kw)
    except ClientException as e:
        return int(e.http_status)
    return 200


def _eventually(fn, *a, want: int, **kw) -> int:
    """ACL changes reach other proxy workers' caches within a few seconds (like Swift)."""
    deadline = time.monotonic() + 8
    while True:
        got = _status(fn, *a, **kw)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


@pytest.fixture
def owner(cluster):
    return cluster.connection("test:tester", "testing")


@pytest.fixture
def other_account(cluster):
    return cluster.connection("test2:tester2", "testing2")


@pytest.fixture
def nonadmin(cluster):
    return cluster.connection("test:tester3", "testing3")


def test_other_account_cannot_see_or_write(owner, other_account):
    c = _name()
    owner.put_container(c)
    owner.put_object(c, "secret", b"s3cr3t")
    url = owner.get_auth()[0]
    other_account.get_auth()
    token = other_account.token
    status, _, _ = http("GET", f"{url}/{c}/secret", {"X-Auth-Token": token})
    assert status == 403
    status, _, _ = http("GET", url, {"X-Auth-Token": token})
    assert status == 403
    status, _, _ = http("PUT", f"{url}/{c}/x", {"X-Auth-Token": token, "Content-Length": "0"}, b"")
    assert status == 403


def test_nonadmin_needs_container_acl(owner, nonadmin):
    c = _name()
    owner.put_container(c)
    owner.put_object(c, "o", b"data")
    assert _status(nonadmin.get_object, c, "o") == 403
    assert _status(nonadmin.put_object, c, "n", b"x") == 403
    owner.post_container(c, {"X-Container-Read": "test:tester3"})
    assert _eventually(nonadmin.get_object, c, "o", want=200) == 200
    assert _status(nonadmin.put_object, c, "n", b"x") == 403
    owner.post_container(c, {"X-Container-Write": "test:tester3"})
    assert _eventually(nonadmin.put_object, c, "n", b"x", want=200) == 200


def test_nonadmin_cannot_set_acls_or_see_them(owner, nonadmin):
    c = _name()
    owner.put_container(c, headers={"X-Container-Read": "test:tester3"})
    assert owner.head_container(c)["x-container-read"] == "test:tester3"
    _eventually(nonadmin.head_container, c, want=200)
    assert "x-container-read" not in nonadmin.head_container(c)
    assert _status(nonadmin.post_container, c, {"X-Container-Read": ".r:*"}) == 403


def test_public_read_referrer_acl_and_rlistings(owner):
    c = _name()
    owner.put_container(c)
    owner.put_object(c, "pub", b"public data")
    url = owner.get_auth()[0]
    assert http("GET", f"{url}/{c}/pub")[0] == 401
    owner.post_container(c, {"X-Container-Read": ".r:*"})
    deadline = time.monotonic() + 8
    while http("GET", f"{url}/{c}/pub")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    status, _, body = http("GET", f"{url}/{c}/pub")
    assert (status, body) == (200, b"public data")
    # No listing without .rlistings
    assert http("GET", f"{url}/{c}")[0] in (401, 403)
    owner.post_container(c, {"X-Container-Read": ".r:*,.rlistings"})
    deadline = time.monotonic() + 8
    while http("GET", f"{url}/{c}")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    status, _, body = http("GET", f"{url}/{c}")
    assert status == 200 and body.decode().split() == ["pub"]
    # Anonymous writes never work with a read ACL.
    assert http("PUT", f"{url}/{c}/w", {"Content-Length": "0"}, b"")[0] == 401


def test_bad_acl_rejected(owner):
    c = _name()
    owner.put_container(c)
    assert _status(owner.post_container, c, {"X-Container-Read": ".r:"}) == 400


def test_account_acl_read_only(owner, other_account):
    c = _name()
    owner.put_container(c)
    owner.put_object(c, "o", b"shared")
    acl = json.dumps({"read-only": ["test2:tester2"]})
    owner.post_account({"X-Account-Access-Control": acl})
    url = owner.get_auth()[0]
    other_account.get_auth()
    token = other_account.token
    deadline = time.monotonic() + 8
    while (
        http("GET", f"{url}/{c}/o", {"X-Auth-Token": token})[0] != 200
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    status, _, body = http("GET", f"{url}/{c}/o", {"X-Auth-Token": token})
    assert (status, body) == (200, b"shared")
    assert (
        http("PUT", f"{url}/{c}/n", {"X-Auth-Token": token, "Content-Length": "0"}, b"")[0] == 403
    )
    owner.post_account({"X-Account-Access-Control": "{}"})
