"""Real initiators (QEMU's iSCSI driver, libiscsi tools) against a blockd volume.

blockd runs in-process over the memory object store; the initiators are real processes.
"""

from __future__ import annotations

import asyncio
import random
import shutil

import pytest

from blockd.cache import ChunkCache
from blockd.chunkstore import ChunkStore
from blockd.store import MemoryObjectStore
from blockd.volume import Volume
from tests.integration.blockd.test_api import create, service

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("qemu-img") is None or shutil.which("iscsi-inq") is None,
        reason="needs qemu-utils, qemu-block-extra and libiscsi-bin (Debian packages)",
    ),
]

SIZE = 8 << 20
RUN_TIMEOUT_S = 120


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def test_qemu_writes_a_volume_flushes_it_to_the_store_and_reads_it_back(tmp_path):
    rng = random.Random(7)
    image = tmp_path / "pattern.raw"
    data = bytearray(SIZE)
    for off in range(0, SIZE, 1 << 20):  # mostly data, one hole to exercise zero detection
        if off != 3 << 20:
            data[off : off + (1 << 20)] = rng.randbytes(1 << 20)
    image.write_bytes(bytes(data))

    async def main():
        store = MemoryObjectStore()
        async with service(store) as (svc, http):
            vol = await create(svc, http, name="qemu", size=None, size_bytes=SIZE)
            url = vol["cairn_iscsi"]["url"]

            code, out = await run("iscsi-inq", url)
            assert code == 0, out
            assert "Direct-Access" in out or "direct" in out.lower(), out

            code, out = await run(
                "qemu-img",
                "convert",
                "-n",
                "-t",
                "writeback",
                "-f",
                "raw",
                "-O",
                "raw",
                str(image),
                url,
            )
            assert code == 0, out
            # qemu's close sent SYNCHRONIZE CACHE: the data is in the store, not only the cache
            chunks = ChunkStore(store, vol["id"], SIZE, vol["cairn_iscsi"]["chunk_bytes"])
            fresh = Volume(chunks, ChunkCache(4 << 20))
            assert await fresh.read(0, SIZE // 512) == bytes(data)

            code, out = await run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(image), url)
            assert code == 0, out

    asyncio.run(main())


def test_wrong_chap_secret_is_refused(tmp_path):
    async def main():
        async with service() as (svc, http):
            vol = await create(svc, http, name="chap", size=None, size_bytes=SIZE)
            iscsi = vol["cairn_iscsi"]
            bad = iscsi["url"].replace(iscsi["chap_secret"], "0" * 16)
            code, _ = await run("iscsi-inq", bad)
            assert code != 0

    asyncio.run(main())
