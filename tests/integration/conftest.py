from __future__ import annotations

from typing import Any

import pytest

from tests.cluster import Cluster, start_cluster

USERS: list[dict[str, Any]] = [
    {"account": "test", "user": "tester", "key": "testing", "admin": True},
    {"account": "test", "user": "tester3", "key": "testing3"},
    {"account": "test2", "user": "tester2", "key": "testing2", "admin": True},
]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c: Cluster = start_cluster(tmp_path_factory.mktemp("cluster"), users=USERS, proxy_workers=2)
    try:
        yield c
    finally:
        c.stop()
