"""Fixtures for the tempauth tests: the functest users on a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.clock import ManualClock
from common.deploy import DeploymentConfig, load_deployment
from proxy.auth import Identity, TempAuth

EXAMPLE = Path(__file__).resolve().parents[3] / "docs" / "examples" / "swift-functest.toml"


@pytest.fixture
def deployment(tmp_path: Path) -> DeploymentConfig:
    return load_deployment(EXAMPLE, data_dir=tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def auth(deployment: DeploymentConfig, clock: ManualClock) -> TempAuth:
    return TempAuth.from_deployment(deployment, clock)


def login(auth: TempAuth, account_user: str, service: str | None = None) -> Identity:
    """The identity a real token for `account_user` (and optional service user) yields."""
    headers = {"X-Auth-Token": auth.issue_token(*account_user.split(":"))[0]}
    if service is not None:
        headers["X-Service-Token"] = auth.issue_token(*service.split(":"))[0]
    identity = auth.authenticate(headers)
    assert identity is not None
    return identity
