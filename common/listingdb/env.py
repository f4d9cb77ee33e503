"""One LMDB environment per device, opened once per process, with its own thread pool.

Layout on disk: ``<devices_dir>/<device>/<kind>.lmdb/`` (``kind`` is "containers" or
"accounts"), holding four named databases (see docs/db-format.md):

* ``meta``  format version and the next database id
* ``info``  one record per container/account database, keyed by partition + path hash
* ``rows``  the rows of every database, keyed by database id + name key
* ``seqs``  change index: database id + row sequence number -> name key

Why one environment per device rather than per database or per partition: LMDB has one
writer at a time per environment, but write transactions here are short (one request), and
a single environment keeps the number of memory maps, lock files and file descriptors fixed
no matter how many containers or partitions a device holds. "All databases in partition P"
is a range scan of ``info`` (keys start with the partition).

The map size is a reservation of address space, not disk: the data file grows as needed.
The environment must be opened after fork (each worker process opens its own); LMDB's lock
file coordinates readers and the single writer across worker processes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

__all__ = ["FORMAT_VERSION", "EnvOptions", "ListingEnv", "acquire_env", "release_env"]

FORMAT_VERSION = 1
T = TypeVar("T")
_U64 = struct.Struct(">Q")
_KEY_VERSION = b"format_version"
_KEY_NEXT_DBID = b"next_dbid"


class FormatError(RuntimeError):
    """An environment written by an unknown format version."""


@dataclass(frozen=True)
class EnvOptions:
    # Address space reserved for the memory map; the file is sparse and grows on demand.
    map_bytes: int = 1 << 40
    readers_max: int = 512
    threads: int = 4


class ListingEnv:
    """An open LMDB environment plus the executor that runs its blocking work."""

    def __init__(self, path: Path, opts: EnvOptions) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path),
            map_size=opts.map_bytes,
            max_dbs=8,
            max_readers=opts.readers_max,
            subdir=True,
            readahead=False,  # random access into big maps; read-ahead only evicts
            meminit=False,
            sync=True,
            metasync=True,
            lock=True,
        )
        self.meta = self.env.open_db(b"meta")
        self.info = self.env.open_db(b"info")
        self.rows = self.env.open_db(b"rows")
        self.seqs = self.env.open_db(b"seqs")
        self.executor = ThreadPoolExecutor(
            max_workers=opts.threads, thread_name_prefix=f"lmdb-{path.parent.name}"
        )
        self._check_version()

    def _check_version(self) -> None:
        with self.env.begin(write=True, db=self.meta) as txn:
            raw = txn.get(_KEY_VERSION)
            if raw is None:
                txn.put(_KEY_VERSION, msgpack.packb(FORMAT_VERSION))
                return
            version = msgpack.unpackb(raw)
            if version != FORMAT_VERSION:
                raise FormatError(f"{self.path}: listing db format {version} is not supported")

    def next_dbid(self, txn: Any) -> int:
        """Allocate a database id inside a write transaction."""
        raw = txn.get(_KEY_NEXT_DBID, db=self.meta)
        dbid = _U64.unpack(raw)[0] if raw is not None else 1
        txn.put(_KEY_NEXT_DBID, _U64.pack(dbid + 1), db=self.meta)
        return int(dbid)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking LMDB work on this device's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.env.close()


_lock = threading.Lock()
_open: dict[tuple[int, str], tuple[ListingEnv, int]] = {}


def acquire_env(path: Path, opts: EnvOptions | None = None) -> ListingEnv:
    """The process's environment at `path`, opened on first use (reference counted)."""
    key = (os.getpid(), str(path.resolve()))
    with _lock:
        if key in _open:
            env, refs = _open[key]
            _open[key] = (env, refs + 1)
            return env
        env = ListingEnv(path, opts or EnvOptions())
        _open[key] = (env, 1)
        return env


def release_env(env: ListingEnv) -> None:
    """Drop one reference; the last one closes the environment."""
    key = (os.getpid(), str(env.path.resolve()))
    with _lock:
        held = _open.get(key)
        if held is None or held[0] is not env:
            return
        refs = held[1] - 1
        if refs > 0:
            _open[key] = (env, refs)
            return
        del _open[key]
    env.close()
