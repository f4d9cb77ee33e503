"""Fixtures for object server tests: a real server on 127.0.0.1:0 over real device dirs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from common.clock import ManualClock
from common.server import running_app
from common.timestamps import Timestamp
from objectd.faulty import FaultPlan
from objectd.server import ObjectServerConf, make_object_app

PREFIX, SUFFIX = "pre", "suf"


@pytest.fixture
def devices_dir(tmp_path: Path) -> Path:
    d = tmp_path / "devices"
    (d / "sda").mkdir(parents=True)
    return d


@pytest.fixture
def conf(devices_dir: Path) -> ObjectServerConf:
    return ObjectServerConf(
        devices_dir=devices_dir,
        hash_path_prefix=PREFIX,
        hash_path_suffix=SUFFIX,
        mount_check=True,
        threads_per_device=2,
        node_timeout_s=2.0,
        container_update_timeout_s=0.5,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_700_000_000.0)


def ts(clock: ManualClock, delta: float = 0.0) -> str:
    return Timestamp.from_float(clock.time() + delta).internal


@contextlib.asynccontextmanager
async def object_server(
    conf: ObjectServerConf, clock: ManualClock | None = None, fault_plan: FaultPlan | None = None
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    app = await make_object_app(conf, clock, fault_plan=fault_plan)
    async with running_app(app) as url, aiohttp.ClientSession(auto_decompress=False) as session:
        yield url, session


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))
