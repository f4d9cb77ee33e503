"""The asyncio iSCSI target server: a thin loop around :class:`blockd.iscsi.connection.Connection`.

Each TCP connection gets one reader loop. Each SCSI command is started at once, in that loop,
against the target's :class:`blockd.scsi.lu.LogicalUnit`; only a command that has to wait (a
backend call that suspends) continues as its own asyncio task. Limits: login must finish within
``login_timeout_s``; an idle connection is pinged (NOP-In) every ``nop_interval_s`` and dropped
if a ping stays unanswered for another interval; at most ``commands_running_max`` commands run
per connection (reading stops until one finishes); at most ``connections_max`` connections.

Manual use: ``python -m blockd.target --port 3260 --size 1G [--file PATH] [--iqn IQN]
[--chap-user U --chap-secret S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import logging
import re
import signal
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import uvloop

from blockd.backend import BlockBackend, FileBackend, MemoryBackend
from blockd.iscsi.chap import ChapCredentials
from blockd.iscsi.connection import Close, Connection, ConnectionConfig, Event, Execute, ResetLu
from blockd.iscsi.login import LoginResult, LoginStatus, TargetEntry
from blockd.iscsi.negotiation import TargetLimits
from blockd.scsi.lu import LogicalUnit
from blockd.scsi.sense import Asc, ScsiResult, SenseKey, Status, sense_bytes
from common.fsutil import atomic_write_bytes
from common.log import setup_logging

__all__ = ["ChapCredentials", "IscsiTarget", "TargetOptions"]

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
COPY_BYTES_MAX = 16 * 1024  # buffers shorter than this are joined before the socket write
WRITE_BUFFER_BYTES_HIGH = 1024 * 1024  # command tasks wait for the socket above this
IQN_RE = re.compile(
    r"(iqn\.\d{4}-\d{2}\.[a-z0-9.\-]+(:.+)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]+)\Z"
)
DEFAULT_PORT = 3260


@dataclass(frozen=True, slots=True)
class TargetOptions:
    limits: TargetLimits = field(default_factory=TargetLimits)
    queue_depth: int = 64
    login_timeout_s: float = 15.0
    nop_interval_s: float = 10.0
    commands_running_max: int = 128
    drain_timeout_s: float = 30.0  # how long a closing connection waits for running commands
    connections_max: int = 256
    portal_group_tag: int = 1
    discovery_chap: ChapCredentials | None = None  # if set, discovery sessions must use it


@dataclass
class _Target:
    entry: TargetEntry
    lu: LogicalUnit


@dataclass
class _Session:
    tsih: int
    target: str
    closer: Callable[[], None] | None = None


class IscsiTarget:
    """Exports block backends as iSCSI targets (one LUN 0 each) on one portal."""

    def __init__(self, options: TargetOptions | None = None) -> None:
        self.options = options or TargetOptions()
        self._targets: dict[str, _Target] = {}
        self._sessions: dict[tuple[str, bytes, str], _Session] = {}
        self._tsih = itertools.cycle(range(1, 0x10000))
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._port = 0
        self._host = ""

    # --- configuration ------------------------------------------------------------------------

    def add_target(
        self,
        iqn: str,
        backend: BlockBackend,
        chap: ChapCredentials | None = None,
        mutual: ChapCredentials | None = None,
        alias: str = "",
    ) -> None:
        """Export ``backend`` as LUN 0 of target ``iqn`` (mutual CHAP needs ``chap`` too)."""
        if not IQN_RE.match(iqn) or len(iqn) > 223:
            raise ValueError(f"not a valid iSCSI name: {iqn!r}")
        if iqn in self._targets:
            raise ValueError(f"target {iqn} already exists")
        if mutual is not None and chap is None:
            raise ValueError("mutual CHAP requires initiator CHAP credentials")
        entry = TargetEntry(iqn=iqn, alias=alias, chap=chap, mutual=mutual)
        self._targets[iqn] = _Target(entry, LogicalUnit(backend))

    def remove_target(self, iqn: str) -> None:
        """Stop exporting ``iqn`` and drop its sessions."""
        if self._targets.pop(iqn, None) is None:
            raise KeyError(iqn)
        for key, session in list(self._sessions.items()):
            if session.target == iqn:
                del self._sessions[key]
                if session.closer is not None:
                    session.closer()

    def target_names(self) -> list[str]:
        return sorted(self._targets)

    # --- Portal protocol (used by login) ------------------------------------------------------

    def find_target(self, iqn: str) -> TargetEntry | None:
        target = self._targets.get(iqn)
        return target.entry if target else None

    def discovery_requires_chap(self) -> bool:
        return self.options.discovery_chap is not None

    def discovery_credentials(self, user: str) -> ChapCredentials | None:
        """Discovery CHAP: the discovery credentials, else any target's credentials."""
        if self.options.discovery_chap is not None:
            creds = self.options.discovery_chap
            return creds if creds.user == user else None
        for target in self._targets.values():
            if target.entry.chap is not None and target.entry.chap.user == user:
                return target.entry.chap
        return None

    def admit(self, result: LoginResult) -> tuple[int, int]:
        target = result.target.iqn if result.target else ""
        if result.tsih != 0:
            known = any(s.tsih == result.tsih for s in self._sessions.values())
            status = (
                LoginStatus.TOO_MANY_CONNECTIONS if known else LoginStatus.SESSION_DOES_NOT_EXIST
            )
            return status, 0
        if target and target not in self._targets:
            return LoginStatus.TARGET_REMOVED, 0
        key = (result.initiator_name, result.isid, target)
        old = self._sessions.pop(key, None)
        if old is not None and old.closer is not None:
            old.closer()  # session reinstatement: the old session ends
        in_use = {s.tsih for s in self._sessions.values()}
        tsih = next(t for t in self._tsih if t not in in_use)
        self._sessions[key] = _Session(tsih, target)
        return LoginStatus.SUCCESS, tsih

    # --- server -------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> int:
        """Listen on ``host:port`` (0 = ephemeral); return the bound port."""

        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(_ChunkReader(READ_CHUNK_BYTES), self._on_connection)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(protocol, host, port)
        sock = self._server.sockets[0]
        self._host, self._port = host, sock.getsockname()[1]
        log.info("iSCSI target listening", extra={"fields": {"host": host, "port": self._port}})
        return self._port

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.options.connections_max:
            writer.close()
            return
        self._connections.add(task)
        try:
            await _ConnectionLoop(self, reader, writer).run()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError) as exc:
            log.info("iSCSI connection ended", extra={"fields": {"error": repr(exc)}})
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _lu(self, iqn: str) -> LogicalUnit | None:
        target = self._targets.get(iqn)
        return target.lu if target else None

    def _register_closer(self, session: LoginResult, closer: Callable[[], None]) -> None:
        key = (session.initiator_name, session.isid, session.target.iqn if session.target else "")
        record = self._sessions.get(key)
        if record is not None and record.tsih == session.tsih:
            record.closer = closer

    def _forget(self, session: LoginResult) -> None:
        key = (session.initiator_name, session.isid, session.target.iqn if session.target else "")
        record = self._sessions.get(key)
        if record is not None and record.tsih == session.tsih:
            del self._sessions[key]


class _ChunkReader(asyncio.StreamReader):
    """A StreamReader whose ``read`` returns each received chunk as it came, without copying it
    into and out of a bytearray (the PDU parser buffers what it needs). Reading from the socket
    pauses while more than ``2 * limit`` bytes wait, as in the base class. Only ``read`` is
    meant to be used; it relies on StreamReader's (CPython 3.11) internal fields."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit=limit)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._held_bytes = 0

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]
        if not data:
            return
        self._chunks.append(bytes(data))  # transports hand over bytes: no copy then
        self._held_bytes += len(data)
        self._wakeup_waiter()  # type: ignore[attr-defined]
        transport: asyncio.Transport | None = self._transport  # type: ignore[attr-defined]
        paused: bool = self._paused  # type: ignore[has-type]
        if transport is not None and not paused and self._held_bytes > 2 * self._limit:  # type: ignore[attr-defined]
            transport.pause_reading()
            self._paused = True

    def _maybe_resume_transport(self) -> None:
        paused: bool = self._paused
        if paused and self._held_bytes <= self._limit:  # type: ignore[attr-defined]
            self._paused = False
            self._transport.resume_reading()  # type: ignore[attr-defined]

    async def read(self, n: int = -1) -> bytes:
        """The next received chunk (any size), or b"" at EOF."""
        if not self._chunks and self.exception() is None and not self.at_eof():
            await self._wait_for_data("read")  # type: ignore[attr-defined]
        if self._chunks:
            chunk = self._chunks.popleft()
            self._held_bytes -= len(chunk)
            self._maybe_resume_transport()
            return chunk
        exc = self.exception()
        if exc is not None:
            raise exc
        return b""


def _portal_address(writer: asyncio.StreamWriter) -> str:
    sockname = writer.get_extra_info("sockname")
    host, port = sockname[0], sockname[1]
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_INET6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


class _ConnectionLoop:
    def __init__(
        self, target: IscsiTarget, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.target = target
        self.reader = reader
        self.writer = writer
        opts = target.options
        config = ConnectionConfig(
            limits=opts.limits,
            queue_depth=opts.queue_depth,
            portal_group_tag=opts.portal_group_tag,
            portal_address=_portal_address(writer),
        )
        self.conn = Connection(target, config, list_targets=target.target_names)
        self.running: set[asyncio.Task[None]] = set()
        self.closed = asyncio.Event()
        self._write_scheduled = False

    async def run(self) -> None:
        try:
            async with asyncio.timeout(self.target.options.login_timeout_s):
                while self.conn.session is None and not self.closed.is_set():
                    await self._read_once()
            if self.conn.session is None:
                return
            self.target._register_closer(self.conn.session, self._close_from_outside)
            while not self.closed.is_set():
                await self._read_once(self.target.options.nop_interval_s)
        finally:
            self.conn.abort_all()
            await self._drain_commands()
            session = self.conn.session
            if session is not None:
                self.target._forget(session)
                lu = self.target._lu(session.target.iqn) if session.target else None
                if lu is not None:
                    lu.nexus_lost(self.conn.nexus)

    async def _drain_commands(self) -> None:
        """Let running commands finish (their responses are dropped) rather than cancel a
        backend write halfway; cancel what is still running after ``drain_timeout_s``."""
        if self.running:
            _, late = await asyncio.wait(self.running, timeout=self.target.options.drain_timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)

    def _close_from_outside(self) -> None:
        self.conn.abort_all()
        self.closed.set()
        self.writer.close()

    async def _read_once(self, idle_timeout_s: float | None = None) -> None:
        while len(self.running) >= self.target.options.commands_running_max:
            await asyncio.wait(self.running, return_when=asyncio.FIRST_COMPLETED)
        try:
            async with asyncio.timeout(idle_timeout_s):
                data = await self.reader.read(READ_CHUNK_BYTES)
        except TimeoutError:
            if idle_timeout_s is None:
                raise
            if self.conn.ping_tag is not None:
                log.info("NOP-In ping unanswered: closing the connection")
                self.closed.set()
                return
            self.conn.ping()
            await self._flush()
            return
        if not data:
            self.closed.set()
            return
        for event in self.conn.receive_data(data):
            self._handle(event)
        await self._flush()

    def _handle(self, event: Event) -> None:
        if isinstance(event, Close):
            self.closed.set()
            return
        if isinstance(event, ResetLu):
            lu = self.target._lu(event.target)
            if lu is not None:
                lu.reset(target_reset=event.target_reset)
            return
        # Start the command here: most finish without ever suspending (a cached read, a write
        # into the page cache or the volume cache), which costs far less than a Task each.
        coro = self._execute(event)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("iSCSI command failed")
            return
        task = asyncio.ensure_future(_finish(coro, waiting))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _execute(self, event: Execute) -> None:
        lu = self.target._lu(event.target)
        if lu is None:
            sense = sense_bytes(SenseKey.ILLEGAL_REQUEST, Asc.LU_NOT_SUPPORTED)
            result = ScsiResult(Status.CHECK_CONDITION, b"", sense)
        else:
            result = await lu.handle(event.cdb, event.data_out, event.nexus, event.lun)
        self.conn.complete(event.itt, result)
        # Completions in one loop iteration share one socket write (one syscall, not one each).
        if not self._write_scheduled:
            self._write_scheduled = True
            asyncio.get_running_loop().call_soon(self._write_now)
        if self.writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_HIGH:
            await self.writer.drain()

    def _write_now(self) -> None:
        self._write_scheduled = False
        buffers = self.conn.buffers_to_send()
        if not buffers or self.writer.is_closing():
            return
        out = _coalesce(buffers)
        if len(out) == 1:
            self.writer.write(out[0])
        else:
            self.writer.writelines(out)  # one writev: large data segments are not copied

    async def _flush(self) -> None:
        self._write_now()
        await self.writer.drain()


def _coalesce(buffers: list[bytes]) -> list[bytes]:
    """Join runs of small buffers (headers, short data) and keep large data segments as they
    are: a writev of many tiny buffers costs more than copying them, copying 1 MiB costs more
    than passing it along."""
    out: list[bytes] = []
    small: list[bytes] = []
    for buf in buffers:
        if len(buf) < COPY_BYTES_MAX:
            small.append(buf)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(buf)
    if small:
        out.append(b"".join(small))
    return out


async def _finish(coro: Coroutine[Any, Any, None], waiting: object) -> None:
    """Drive a coroutine that suspended during its eager start, the way a Task would.

    ``waiting`` is what it yielded: the future it waits for (or None for a bare yield). Once
    that future is done the coroutine is resumed and reads the future's outcome itself. If this
    task is cancelled, awaiting the future cancels it, so the coroutine sees the cancellation.
    """
    while True:
        if isinstance(waiting, asyncio.Future):
            waiting._asyncio_future_blocking = False  # as Task does with what a coroutine yields
            with contextlib.suppress(BaseException):
                await waiting
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


def parse_size(text: str) -> int:
    """'1G', '64M', '4096' -> bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    match = re.fullmatch(r"(\d+)([KMGT]?)i?B?", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(match.group(1)) * units[match.group(2)]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m blockd.target", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--size", type=parse_size, required=True)
    parser.add_argument("--block-size", type=int, choices=(512, 4096), default=512)
    parser.add_argument("--file", help="file backend path (default: in memory)")
    parser.add_argument("--iqn", default="iqn.2026-01.org.cairn:test")
    parser.add_argument("--chap-user")
    parser.add_argument("--chap-secret")
    parser.add_argument("--mutual-user")
    parser.add_argument("--mutual-secret")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    return parser


async def _main(args: argparse.Namespace) -> None:
    blocks = args.size // args.block_size
    backend: BlockBackend
    if args.file:
        backend = FileBackend(args.file, blocks, args.block_size, serial="cairnfile0")
    else:
        backend = MemoryBackend(blocks, args.block_size, serial="cairnmem0")
    chap = ChapCredentials(args.chap_user, args.chap_secret) if args.chap_user else None
    mutual = ChapCredentials(args.mutual_user, args.mutual_secret) if args.mutual_user else None
    target = IscsiTarget()
    target.add_target(args.iqn, backend, chap, mutual)
    port = await target.start(args.host, args.port)
    if args.port_file:
        await asyncio.to_thread(atomic_write_bytes, args.port_file, f"{port}\n".encode())
    print(f"iscsi://{args.host}:{port}/{args.iqn}/0", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await target.stop()
    if isinstance(backend, FileBackend):
        await backend.flush()
        backend.close()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if (args.chap_user is None) != (args.chap_secret is None):
        raise SystemExit("--chap-user and --chap-secret go together")
    setup_logging("blockd-target", level=args.log_level, fmt="text")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main(args))


if __name__ == "__main__":
    main()
