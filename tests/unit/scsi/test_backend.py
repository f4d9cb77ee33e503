"""One contract test run against every BlockBackend implementation."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blockd.backend import BackendRangeError, BlockBackend, FileBackend, MemoryBackend

SHM = Path("/dev/shm")


@pytest.fixture(params=["memory", "file-512", "file-4096", "file-threads", "tmpfs-512"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockBackend]:
    if request.param == "memory":
        yield MemoryBackend(256, 512, serial="m")
        return
    kind, option = request.param.split("-")
    if kind == "tmpfs":
        if not SHM.is_dir():
            pytest.skip("no /dev/shm here: the tmpfs (inline I/O) case needs it")
        with tempfile.TemporaryDirectory(dir=SHM) as tmp:
            b = FileBackend(str(Path(tmp) / "vol.img"), 256, int(option), serial="f")
            yield b
            b.close()
        return
    if option == "threads":  # every I/O through the thread pool, none inline
        b = FileBackend(str(tmp_path / "vol.img"), 256, 512, serial="f", inline_bytes_max=0)
    else:
        b = FileBackend(str(tmp_path / "vol.img"), 256, int(option), serial="f")
    yield b
    b.close()


def run(coro):
    return asyncio.run(coro)


def test_contract(backend: BlockBackend) -> None:
    bs = backend.block_size
    assert isinstance(backend, BlockBackend)
    assert run(backend.read(0, 4)) == bytes(4 * bs)
    assert run(backend.is_mapped(0)) == (False, 256)
    data = os.urandom(3 * bs)
    run(backend.write(10, data))
    run(backend.write(200, data[:bs], fua=True))
    run(backend.flush())
    assert run(backend.read(10, 3)) == data
    assert run(backend.read(9, 1)) == bytes(bs)
    # Mapping is tracked per allocation unit: a file on a 4 KiB-block filesystem reports
    # 512-byte blocks in whole 4 KiB units (blocks 8..15 here).
    exact = isinstance(backend, MemoryBackend) or bs == 4096
    mapped, run_blocks = run(backend.is_mapped(10))
    assert mapped and run_blocks >= 3
    assert run(backend.is_mapped(0)) == (False, 10 if exact else 8)
    run(backend.unmap(11, 1))
    assert run(backend.read(10, 3)) == data[:bs] + bytes(bs) + data[2 * bs :]
    if exact:
        assert run(backend.is_mapped(11)) == (False, 1)
        assert run(backend.is_mapped(10)) == (True, 1)
    run(backend.unmap(0, 256))
    assert run(backend.read(200, 1)) == bytes(bs)


def test_bad_ranges_raise(backend: BlockBackend) -> None:
    bs = backend.block_size
    with pytest.raises(BackendRangeError):
        run(backend.read(255, 2))
    with pytest.raises(BackendRangeError):
        run(backend.write(0, b"x" * (bs + 1)))
    with pytest.raises(BackendRangeError):
        run(backend.unmap(-1, 1))


def test_file_backend_checks_size(tmp_path: Path) -> None:
    path = tmp_path / "v.img"
    FileBackend(str(path), 8, 512).close()
    assert path.stat().st_size == 8 * 512
    with pytest.raises(ValueError, match="expected"):
        FileBackend(str(path), 9, 512)
    with pytest.raises(ValueError):
        MemoryBackend(8, 1000)
