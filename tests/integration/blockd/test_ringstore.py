"""The store contract against the real ring store on the shared test cluster."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from blockd.ringstore import open_ring_store
from common.clock import SystemClock
from common.deploy import load_deployment
from tests.unit.blockd.store_contract import check_store_contract

pytestmark = pytest.mark.integration


def test_ring_store_keeps_the_contract(cluster):
    cfg = load_deployment(cluster.config_path, cluster.data_dir)

    async def run():
        async with aiohttp.ClientSession() as session:
            await check_store_contract(open_ring_store(cfg, session, SystemClock()))

    asyncio.run(run())
