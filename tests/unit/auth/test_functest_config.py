"""docs/examples/swift-functest.toml loads and carries what Swift's functional tests need."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.auth import PathParts, TempAuth, Verdict

from .conftest import EXAMPLE


def test_loads_with_the_shape_the_issue_asks_for(deployment, tmp_path: Path) -> None:
    assert deployment.cluster.replicas == 3
    assert deployment.proxy.port == 8080
    assert len(deployment.nodes) >= 2
    devices = [d.name for n in deployment.nodes for d in n.devices]
    assert len(devices) >= 4 and len(set(devices)) == len(devices)
    for node in deployment.nodes:
        assert not Path(node.devices_dir).is_absolute()
        assert deployment.devices_dir(node).is_relative_to(tmp_path)
    ports = [p for n in deployment.nodes for p in (n.object_port, n.container_port, n.account_port)]
    assert len(set(ports)) == len(ports)  # all nodes share 127.0.0.1
    ta = deployment.tempauth
    assert ta.reseller_prefixes == ["AUTH_", "SERVICE_"]
    assert ta.require_group == {"SERVICE_": "service"}


# account:user, key, admin, reseller admin, groups
USERS = [
    ("test:tester", "testing", True, False, []),
    ("test:tester2", "testing2", True, False, []),
    ("test:tester3", "testing3", False, False, []),
    ("test2:tester2", "testing2", True, False, []),
    ("test5:tester5", "testing5", False, False, ["service"]),
    ("admin:admin", "admin", True, True, []),
]


def test_has_exactly_the_functest_users(deployment) -> None:
    got = sorted(
        (f"{u.account}:{u.user}", u.key, u.admin, u.reseller_admin, u.groups)
        for u in deployment.tempauth.users
    )
    assert got == sorted(USERS)


@pytest.mark.parametrize(("user", "key", "admin", "reseller", "_groups"), USERS)
def test_every_user_can_log_in_and_reach_their_account(
    auth: TempAuth, user, key, admin, reseller, _groups
):
    account = user.split(":")[0]
    r = auth.handle_auth_get({"X-Auth-User": user, "X-Auth-Key": key}, "http://127.0.0.1:8080")
    assert r.status == 200
    assert r.headers["X-Storage-Url"] == f"http://127.0.0.1:8080/v1/AUTH_{account}"
    identity = auth.authenticate({"X-Auth-Token": r.headers["X-Auth-Token"]})
    decision = auth.authorize(identity, "GET", PathParts("v1", f"AUTH_{account}"), account_acl=None)
    assert decision.allowed is admin
    if not admin:
        assert decision.verdict is Verdict.DENY_403


def test_the_example_is_the_file_the_docs_name() -> None:
    doc = (EXAMPLE.parents[1] / "auth.md").read_text()
    assert "cairn up --config docs/examples/swift-functest.toml --data-dir" in doc
