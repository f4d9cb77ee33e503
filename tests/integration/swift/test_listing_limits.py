"""Configured listing limits (ProxyConfig container_listing_limit / account_listing_limit).

The cluster here has small limits, so paging with markers is exercised with a few hundred
objects instead of the 10,000 the default limit would need. The tests size their data from
the limits `/info` reports.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import swiftclient
from swiftclient import ClientException

from tests.cluster import Cluster, http, start_cluster

pytestmark = pytest.mark.integration

CONTAINER_LIMIT = 500
ACCOUNT_LIMIT = 40
_USERS: list[dict[str, Any]] = [
    {"account": "lister", "user": "tester", "key": "testing", "admin": True},
    {"account": "pager", "user": "tester", "key": "testing", "admin": True},
]


def _small_limits(doc: dict[str, Any]) -> None:
    doc["proxy"]["container_listing_limit"] = CONTAINER_LIMIT
    doc["proxy"]["account_listing_limit"] = ACCOUNT_LIMIT


@pytest.fixture(scope="module")
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp("listing"), users=_USERS, tweak=_small_limits)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def limits(small_cluster: Cluster) -> dict[str, int]:
    status, _, body = http("GET", f"{small_cluster.proxy_url}/info")
    assert status == 200
    swift = json.loads(body)["swift"]
    return {
        "container": swift["container_listing_limit"],
        "account": swift["account_listing_limit"],
    }


def test_info_reports_configured_limits(limits: dict[str, int]) -> None:
    assert limits == {"container": CONTAINER_LIMIT, "account": ACCOUNT_LIMIT}


def _put_all(conn: swiftclient.Connection, put: Any, names: list[str]) -> None:
    """PUT every name over 8 threads, each with its own connection."""
    tls = threading.local()

    def one(n: str) -> None:
        local = getattr(tls, "conn", None)
        if local is None:
            local = tls.conn = swiftclient.Connection(
                preauthurl=conn.url, preauthtoken=conn.token, retries=2
            )
        put(local, n)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))


def test_container_listing_pages_at_configured_limit(
    small_cluster: Cluster, limits: dict[str, int]
) -> None:
    limit = limits["container"]
    conn = small_cluster.connection("lister:tester", "testing")
    conn.get_auth()
    c = "many"
    conn.put_container(c)
    per_prefix = limit + 150  # 2 * limit + 300 objects: full_listing needs three pages
    names = [f"{d}/{i:05d}" for d in ("a", "b") for i in range(per_prefix)]
    _put_all(conn, lambda cn, n: cn.put_object(c, n, b""), names)
    assert conn.head_container(c)["x-container-object-count"] == str(len(names))
    # A GET without a limit is cut at the configured limit ...
    _, first = conn.get_container(c)
    assert [o["name"] for o in first] == sorted(names)[:limit]
    # ... and swiftclient's full listing pages on with markers.
    _, listing = conn.get_container(c, full_listing=True)
    assert [o["name"] for o in listing] == sorted(names)
    _, top = conn.get_container(c, delimiter="/")
    assert top == [{"subdir": "a/"}, {"subdir": "b/"}]
    last = per_prefix - 1
    _, page = conn.get_container(c, prefix="b/", marker=f"b/{last - 9:05d}", limit=100)
    assert [o["name"] for o in page] == [f"b/{i:05d}" for i in range(last - 8, per_prefix)]
    _, page = conn.get_container(c, prefix="a/", limit=3, end_marker="a/00002")
    assert [o["name"] for o in page] == ["a/00000", "a/00001"]
    _, page = conn.get_container(c, limit=limit)
    assert len(page) == limit
    with pytest.raises(ClientException) as e:
        conn.get_container(c, limit=limit + 1)
    assert e.value.http_status == 412
    assert f"Maximum limit is {limit}".encode() in e.value.http_response_content


def test_account_listing_pages_at_configured_limit(
    small_cluster: Cluster, limits: dict[str, int]
) -> None:
    limit = limits["account"]
    conn = small_cluster.connection("pager:tester", "testing")
    conn.get_auth()
    names = [f"c{i:04d}" for i in range(2 * limit + 7)]
    _put_all(conn, lambda cn, n: cn.put_container(n), names)
    _, first = conn.get_account()
    assert [c["name"] for c in first] == names[:limit]
    _, listing = conn.get_account(full_listing=True)
    assert [c["name"] for c in listing] == names
    _, page = conn.get_account(marker=names[-3], limit=limit)
    assert [c["name"] for c in page] == names[-2:]
    with pytest.raises(ClientException) as e:
        conn.get_account(limit=limit + 1)
    assert e.value.http_status == 412
    assert f"Maximum limit is {limit}".encode() in e.value.http_response_content
