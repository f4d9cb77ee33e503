"""The PUT body pipeline: one write in the device's pool while the next piece streams in.

Real files and a real device pool; no sockets (the pieces are handed in directly).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from pathlib import Path

import pytest

from common.timestamps import Timestamp
from objectd.devices import Devices
from objectd.diskfile import WRITEBACK_BYTES_MIN, Deleted, DiskFull, Missing
from objectd.faulty import FaultPlan
from objectd.fileformat import ObjectMetadata
from objectd.writes import WriteInFlight


def _devices(tmp_path: Path, plan: FaultPlan | None = None) -> Devices:
    (tmp_path / "sda").mkdir(exist_ok=True)
    return Devices(tmp_path, "pre", "suf", mount_check=False, threads_per_device=4, fault_plan=plan)


def test_pieces_are_written_in_order_and_hashed_once(tmp_path: Path) -> None:
    devices = _devices(tmp_path)
    df = devices.diskfile("sda", 1, "a", "c", "o")
    # Pieces above WRITEBACK_BYTES_MIN also take the early-writeback path.
    piece = WRITEBACK_BYTES_MIN + 4096
    body = os.urandom(3 * piece + 123)

    async def go() -> None:
        writer = df.writer(len(body), 0)
        flight = WriteInFlight(devices, "sda", writer)
        for i in range(0, len(body), piece):
            await flight.submit([bytearray(body[i : i + piece])])
        await flight.wait()
        md = ObjectMetadata(kind="data", name=df.name, timestamp=Timestamp(1), content_type="x")
        await devices.run("sda", writer.commit, md)
        assert writer.etag() == hashlib.md5(body).hexdigest()

    try:
        asyncio.run(go())
        reader = df.open()
        assert not isinstance(reader, Deleted | Missing)
        assert reader.read(0, len(body)) == body  # every block verified on the way
        reader.close()
        with pytest.raises(OSError):  # a read after the close never touches a reused fd
            reader.read(0, 1)
    finally:
        devices.close()


def test_a_failed_write_surfaces_at_the_next_step(tmp_path: Path) -> None:
    devices = _devices(tmp_path, FaultPlan(enospc_on_write=True))
    df = devices.diskfile("sda", 1, "a", "c", "o")

    async def go() -> None:
        flight = WriteInFlight(devices, "sda", df.writer(None, 0))
        await flight.submit([bytearray(b"x" * 4096)])  # runs, and fails, in the pool
        with pytest.raises(DiskFull):
            await flight.submit([bytearray(b"y" * 4096)])

    try:
        asyncio.run(go())
    finally:
        devices.close()


def test_settle_leaves_no_unretrieved_exception(tmp_path: Path) -> None:
    devices = _devices(tmp_path, FaultPlan(enospc_on_write=True))
    df = devices.diskfile("sda", 1, "a", "c", "o")
    unhandled: list[dict[str, object]] = []

    async def go() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: unhandled.append(ctx))
        writer = df.writer(None, 0)
        flight = WriteInFlight(devices, "sda", writer)
        await flight.submit([bytearray(b"x" * 4096)])
        flight.settle()  # the request gave up (say the client went away) mid-write
        await flight.wait()  # nothing left in flight
        await asyncio.sleep(0.2)  # the abandoned write finishes in the pool
        await devices.run("sda", writer.abort)

    try:
        asyncio.run(go())
    finally:
        devices.close()
    gc.collect()  # an unobserved failed task reports itself when it is collected
    assert unhandled == []
