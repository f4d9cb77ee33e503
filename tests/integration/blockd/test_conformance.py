"""libiscsi's conformance program against a blockd volume on the running test cluster.

blockd runs in-process over the real ring store; `iscsi-test-cu` is the real initiator. The
data-path suites run by default; the whole SCSI family (several minutes on a loaded machine)
runs when CAIRN_FULL_CONFORMANCE=1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil

import pytest

from blockd.ringstore import open_ring_store
from blockd.server import make_block_service
from common.clock import SystemClock
from common.deploy import load_deployment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("iscsi-test-cu") is None, reason="needs libiscsi-bin"),
]

SUITES = (
    "SCSI.Read16",
    "SCSI.Write16",
    "SCSI.Unmap",
    "SCSI.WriteSame16",
    "SCSI.GetLBAStatus",
    "SCSI.CompareAndWrite",
)
FULL = os.environ.get("CAIRN_FULL_CONFORMANCE") == "1"
RUN_TIMEOUT_S = 900


async def project(_headers):
    return "AUTH_test"


def summary(text: str) -> tuple[int, int, int, int]:
    m = re.search(r"tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\d+", text)
    assert m, text[-2000:]
    total, ran, passed, failed = map(int, m.groups())
    return total, ran, passed, failed


async def conformance(
    cluster, tests: list[str]
) -> list[tuple[str, tuple[int, int, int, int], str]]:
    cfg = load_deployment(cluster.config_path, cluster.data_dir)
    conf = dataclasses.replace(cfg.block, api_port=0, iscsi_port=0, lease_settle_s=0.05)
    results = []
    async with open_ring_store(cfg, SystemClock()) as store:
        svc = await make_block_service(conf, store, authenticate=project)
        try:
            rec = await svc.manager.create("AUTH_test", f"conf-{os.getpid()}", 16 << 20)
            url = svc.manager.export_info(rec).url
            for test in tests:
                proc = await asyncio.create_subprocess_exec(
                    "iscsi-test-cu",
                    "--dataloss",
                    "--test",
                    test,
                    url,
                    url,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
                text = out.decode(errors="replace")
                results.append((test, summary(text), text))
            await svc.manager.delete("AUTH_test", rec.id)
            await svc.manager.wait_idle()
        finally:
            await svc.stop()
    return results


def test_scsi_conformance_on_a_cluster_volume(cluster):
    tests = ["SCSI"] if FULL else list(SUITES)
    for test, (total, ran, passed, failed), text in asyncio.run(conformance(cluster, tests)):
        assert failed == 0, f"{test}: {failed} failed\n{text[-4000:]}"
        assert ran == total == passed > 0, f"{test}: {total} {ran} {passed}"
