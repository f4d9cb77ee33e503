"""The floor of a replicated, durable 1 MiB write on this machine: system calls only.

    .venv/bin/python -m bench.durable_floor --dir DIR [--mib 800] [--depth 16]
        [--replicas 1,2,3] [--no-sync]

What a volume's 1 MiB write must do at the least, done by the simplest Python that can do
it (blocking sockets, one thread per stream, no protocol, no hashing):

    client (DEPTH streams) --TCP--> relay --TCP, one per replica--> replica processes

Each replica receives every MiB into a reused buffer and stores it as an object server
stores a chunk: a new temporary file, the write, ``fsync``, ``rename`` to its name,
``fsync`` of the directory, and the removal of the previous version; then it answers. The
relay answers the client once every replica has. All processes run on loopback; the
replicas write under DIR (give it a directory on the disk the cluster's devices use).

It prints MB/s and the whole machine's CPU (all processes and the kernel, from
/proc/stat) per MiB. A store that keeps each replica as a file made durable this way, at
this concurrency, on the same disk, cannot do better than these figures, however little
CPU its code costs: they bound the sustained rate of ``bench.iscsi_bench``'s 1 MiB write on
a 3-replica volume whose devices share that disk. If the MB/s of n copies times n stays
about the same for n = 1, 2, 3, the disk (with the file system's journal) is the limit,
not the CPU. ``--no-sync`` drops the two fsyncs, to show how much of the bound is the
disk's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from bench.procstat import machine_busy_s
from common.fsutil import fsync_dir, writev_all

__all__ = ["FloorResult", "measure"]

MIB = 1 << 20
_ACK = b"k"
_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class FloorResult:
    replicas: int
    durable: bool
    mib: int
    seconds: float
    machine_cpu_s: float

    @property
    def mb_s(self) -> float:
        return self.mib * MIB / self.seconds / 1e6

    @property
    def cpu_ms_per_mib(self) -> float:
        return self.machine_cpu_s * 1e3 / self.mib


def _recv_exact(sock: socket.socket, view: memoryview) -> bool:
    """Fill `view`; False at a clean end of stream before its first byte."""
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            if got == 0:
                return False
            raise EOFError(f"stream ended after {got} of {len(view)} bytes")
        got += n
    return True


def _store(directory: Path, serial: int, view: memoryview, durable: bool) -> Path:
    """One version of one object, stored as an object server stores a chunk replica."""
    tmp = directory / f".tmp-{serial}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        writev_all(fd, [view])
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    final = directory / f"{serial:08d}.data"
    os.rename(tmp, final)
    if durable:
        fsync_dir(directory)
    return final


def _replica_stream(conn: socket.socket, directory: Path, durable: bool) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    view = memoryview(bytearray(MIB))
    previous: Path | None = None
    serial = 0
    with conn:
        while _recv_exact(conn, view):
            stored = _store(directory, serial, view, durable)
            if previous is not None:
                previous.unlink()
            previous = stored
            serial += 1
            conn.sendall(_ACK)


def _replica_main(directory: str, durable: bool, ready: Connection) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ready.send(listener.getsockname()[1])
    streams = 0
    while True:
        conn, _ = listener.accept()
        where = Path(directory) / f"stream-{streams}"
        threading.Thread(target=_replica_stream, args=(conn, where, durable), daemon=True).start()
        streams += 1


def _relay_stream(conn: socket.socket, replica_ports: list[int]) -> None:
    replicas = [socket.create_connection(("127.0.0.1", p)) for p in replica_ports]
    view = memoryview(bytearray(MIB))
    ack = memoryview(bytearray(1))
    with conn:
        while _recv_exact(conn, view):
            for r in replicas:
                r.sendall(view)
            for r in replicas:
                if not _recv_exact(r, ack):
                    raise EOFError("a replica hung up")
            conn.sendall(_ACK)
    for r in replicas:
        r.close()


def _relay_main(replica_ports: list[int], ready: Connection) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    ready.send(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_relay_stream, args=(conn, replica_ports), daemon=True).start()


def _client_stream(port: int, payload: bytes, count: int, errors: list[BaseException]) -> None:
    try:
        ack = memoryview(bytearray(1))
        with socket.create_connection(("127.0.0.1", port)) as s:
            for _ in range(count):
                s.sendall(payload)
                if not _recv_exact(s, ack):
                    raise EOFError("the relay hung up")
    except BaseException as e:  # reported by measure()
        errors.append(e)


def measure(
    directory: Path,
    *,
    mib: int = 800,
    depth: int = 16,
    replicas: int = 3,
    durable: bool = True,
    payload: bytes | None = None,
) -> FloorResult:
    """Write `mib` MiB through the pipeline (`depth` streams, each MiB to `replicas`
    replicas under `directory/replica-<n>/stream-<m>/`). The last version of each stream's
    object is left in place."""
    if mib < depth or depth < 1 or replicas < 1:
        raise ValueError("need mib >= depth >= 1 and replicas >= 1")
    if payload is None:
        payload = os.urandom(MIB)
    if len(payload) != MIB:
        raise ValueError("the payload is 1 MiB")
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        ports = []
        for n in range(replicas):
            mine, theirs = ctx.Pipe()
            where = str(directory / f"replica-{n}")
            p = ctx.Process(target=_replica_main, args=(where, durable, theirs), daemon=True)
            p.start()
            procs.append(p)
            ports.append(_port_from(mine))
        mine, theirs = ctx.Pipe()
        relay = ctx.Process(target=_relay_main, args=(ports, theirs), daemon=True)
        relay.start()
        procs.append(relay)
        relay_port = _port_from(mine)
        per_stream = mib // depth
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=_client_stream, args=(relay_port, payload, per_stream, errors))
            for _ in range(depth)
        ]
        busy0, t0 = machine_busy_s(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds, busy = time.perf_counter() - t0, machine_busy_s() - busy0
        if errors:
            raise RuntimeError(f"the floor pipeline failed: {errors[0]!r}") from errors[0]
        return FloorResult(replicas, durable, per_stream * depth, seconds, busy)
    finally:
        for proc in procs:
            proc.kill()
            proc.join(10)


def _port_from(conn: Connection) -> int:
    if not conn.poll(_START_TIMEOUT_S):
        raise RuntimeError("a floor process did not start")
    port = conn.recv()
    conn.close()
    if not isinstance(port, int):
        raise RuntimeError(f"a floor process sent {port!r}, not a port")
    return port


def describe(r: FloorResult) -> str:
    how = "fsynced" if r.durable else "not synced"
    return (
        f"{r.replicas} {how} cop{'y' if r.replicas == 1 else 'ies'} of each MiB:"
        f" {r.mb_s:8.1f} MB/s, machine CPU {r.cpu_ms_per_mib:.2f} ms per MiB"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.durable_floor", description=__doc__)
    p.add_argument("--dir", required=True, help="where the replicas write (the disk to judge)")
    p.add_argument("--mib", type=int, default=800)
    p.add_argument("--depth", type=int, default=16, help="concurrent streams")
    p.add_argument("--replicas", default="1,2,3", help="comma-separated replica counts")
    p.add_argument("--no-sync", action="store_true", help="skip the fsyncs")
    args = p.parse_args(argv)
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    for n in (int(x) for x in args.replicas.split(",")):
        with tempfile.TemporaryDirectory(prefix="durable-floor-", dir=args.dir) as tmp:
            r = measure(
                Path(tmp), mib=args.mib, depth=args.depth, replicas=n, durable=not args.no_sync
            )
        print(describe(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
