"""One iSCSI TCP connection of :class:`blockd.target.IscsiTarget`: an asyncio Protocol around
the sans-IO :class:`blockd.iscsi.connection.Connection`.

Received bytes go straight from ``data_received`` to the Connection; each SCSI command it
returns is started at once against the target's LU, and only a command that has to wait (a
backend call that suspends) continues as its own asyncio task. Whatever the commands of one
received chunk produced is written with one socket call at the end of ``data_received``;
commands that finish later share one write per loop iteration.

Limits, all without a timer per read: login must finish within ``login_timeout_s`` (one timer);
an idle connection is pinged (NOP-In) every ``nop_interval_s`` and dropped if a ping stays
unanswered for another interval (one timer, re-armed from the time of the last received
bytes); reading pauses while ``commands_running_max`` commands run or while the socket's write
buffer is above its high-water mark (``pause_writing``), so a peer that does not read its
responses stops being read. On close, running commands may finish (their responses are
dropped) for up to ``drain_timeout_s`` before they are cancelled; the socket closes after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar, cast

from blockd.iscsi.connection import Close, Connection, ConnectionConfig, Event, Execute, ResetLu
from blockd.scsi.sense import Asc, ScsiResult, SenseKey, Status, sense_bytes

if TYPE_CHECKING:
    from blockd.target import IscsiTarget

__all__ = ["COPY_BYTES_MAX", "ConnectionProtocol"]

log = logging.getLogger(__name__)
T = TypeVar("T")

COPY_BYTES_MAX = 16 * 1024  # buffers shorter than this are joined before the socket write
WRITE_BUFFER_BYTES_HIGH = 1024 * 1024  # reading pauses while more than this waits to be sent


class ConnectionProtocol(asyncio.Protocol):
    """The target side of one TCP connection (created by the server per accepted socket)."""

    def __init__(self, target: IscsiTarget) -> None:
        self.target = target
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.running: set[asyncio.Task[None]] = set()
        self.closed: asyncio.Future[None] | None = None  # set once closing has finished
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._in_receive = False
        self._write_scheduled = False
        self._paused_for_commands = False
        self._paused_for_writes = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_rx_s = 0.0
        self._closer: asyncio.Task[None] | None = None

    # --- transport callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self.transport = transport
        self.closed = self._loop.create_future()
        target = self.target
        opts = target.options
        if len(target._connections) >= opts.connections_max:
            self.closed.set_result(None)
            transport.close()
            return
        target._connections.add(self)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES_HIGH)
        config = ConnectionConfig(
            limits=opts.limits,
            queue_depth=opts.queue_depth,
            portal_group_tag=opts.portal_group_tag,
            portal_address=_portal_address(transport),
        )
        self.conn = Connection(target, config, list_targets=target.target_names)
        self._timer = self._loop.call_later(opts.login_timeout_s, self._login_timed_out)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None or self.is_closing():
            return
        logged_in = conn.session is not None
        self._in_receive = True
        try:
            for event in conn.receive_data(data):
                self._handle(event)
        finally:
            self._in_receive = False
        self._write_now()
        if self.is_closing():
            return
        self._last_rx_s = self._loop.time()
        if not logged_in and conn.session is not None:
            self._logged_in()
        if len(self.running) >= self.target.options.commands_running_max:
            self._paused_for_commands = True
            self._update_reading()

    def eof_received(self) -> bool | None:
        self.close("end of stream")
        return True  # keep the transport until the commands drain; close() ends it

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.info("iSCSI connection ended", extra={"fields": {"error": repr(exc)}})
        self.close("connection lost")

    def pause_writing(self) -> None:
        self._paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_for_writes = False
        self._update_reading()

    # --- closing ------------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing

    def close(self, reason: str) -> None:
        """Stop reading, let running commands finish, then forget the session and close."""
        if self._closing or self.conn is None:
            return
        self._closing = True
        log.debug("closing iSCSI connection", extra={"fields": {"reason": reason}})
        self.conn.abort_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(RuntimeError):
                transport.pause_reading()
        self._closer = self._loop.create_task(self._finish_closing())

    def close_now(self) -> None:
        """Session reinstatement or target removal: the socket closes at once."""
        self.close("closed by the target")
        if self.transport is not None:
            self.transport.close()

    async def _finish_closing(self) -> None:
        try:
            await self._drain_commands()
        finally:
            conn = self.conn
            assert conn is not None
            session = conn.session
            if session is not None:
                self.target._forget(session)
                lu = self.target._lu(session.target.iqn) if session.target else None
                if lu is not None:
                    lu.nexus_lost(conn.nexus)
            if self.transport is not None:
                self.transport.close()
            self.target._connections.discard(self)
            if self.closed is not None and not self.closed.done():
                self.closed.set_result(None)

    async def _drain_commands(self) -> None:
        """Let running commands finish (their responses are dropped) rather than cancel a
        backend write halfway; cancel what is still running after ``drain_timeout_s``."""
        if self.running:
            timeout_s = self.target.options.drain_timeout_s
            _, late = await asyncio.wait(self.running, timeout=timeout_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.gather(*late, return_exceptions=True)

    # --- timers -------------------------------------------------------------------------------

    def _login_timed_out(self) -> None:
        self._timer = None
        log.info("iSCSI login timed out: closing the connection")
        self.close("login timeout")

    def _logged_in(self) -> None:
        conn = self.conn
        assert conn is not None and conn.session is not None
        if self._timer is not None:
            self._timer.cancel()
        self.target._register_closer(conn.session, self.close_now)
        self._timer = self._loop.call_later(self.target.options.nop_interval_s, self._idle_check)

    def _idle_check(self) -> None:
        """The idle timer: re-armed from the last received bytes; on a full idle interval, ping,
        or close if the previous ping is still unanswered. Paused reading is not idleness."""
        conn = self.conn
        assert conn is not None
        interval_s = self.target.options.nop_interval_s
        now = self._loop.time()
        due = self._last_rx_s + interval_s
        if due > now or self._paused_for_commands or self._paused_for_writes:
            self._timer = self._loop.call_at(max(due, now + interval_s / 8), self._idle_check)
            return
        if conn.ping_tag is not None:
            self._timer = None
            log.info("NOP-In ping unanswered: closing the connection")
            self.close("ping unanswered")
            return
        conn.ping()
        self._write_now()
        self._last_rx_s = now  # the next check is one interval after the ping
        self._timer = self._loop.call_at(now + interval_s, self._idle_check)

    # --- commands -----------------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        if isinstance(event, Execute):
            self._start(event)
            return
        if isinstance(event, Close):
            self.close(event.reason)
            return
        if isinstance(event, ResetLu):
            lu = self.target._lu(event.target)
            if lu is not None:
                lu.reset(target_reset=event.target_reset)

    def _start(self, event: Execute) -> None:
        """Start the command here: most finish without ever suspending (a cached read, a write
        into the page cache or the volume cache), which costs far less than a Task. One that
        suspends is driven on by a Task, then completed the same way."""
        lu = self.target._lu(event.target)
        if lu is None:
            sense = sense_bytes(SenseKey.ILLEGAL_REQUEST, Asc.LU_NOT_SUPPORTED)
            self._complete(event.itt, ScsiResult(Status.CHECK_CONDITION, b"", sense))
            return
        coro = lu.handle(event.cdb, event.data_out, event.nexus, event.lun)
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            try:
                self._complete(event.itt, done.value)
            except Exception:
                log.exception("iSCSI command completion failed")
            return
        except Exception:
            log.exception("iSCSI command failed")
            return
        task = self._loop.create_task(self._finish_command(event.itt, coro, waiting))
        self.running.add(task)
        task.add_done_callback(self._command_done)

    async def _finish_command(
        self, itt: int, coro: Coroutine[Any, Any, ScsiResult], waiting: object
    ) -> None:
        self._complete(itt, await _finish(coro, waiting))

    def _complete(self, itt: int, result: ScsiResult) -> None:
        conn = self.conn
        assert conn is not None
        conn.complete(itt, result)
        # Completions in one loop iteration share one socket write (one syscall, not one each);
        # those during data_received go out with its own write.
        if not self._in_receive and not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_now)

    def _command_done(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if (
            self._paused_for_commands
            and not self._closing
            and len(self.running) < self.target.options.commands_running_max
        ):
            self._paused_for_commands = False
            self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return
        if self._paused_for_commands or self._paused_for_writes:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _write_now(self) -> None:
        self._write_scheduled = False
        conn = self.conn
        transport = self.transport
        if conn is None or transport is None:
            return
        buffers = conn.buffers_to_send()
        if not buffers or transport.is_closing():
            return
        if len(buffers) == 1:
            transport.write(buffers[0])
            return
        out = _coalesce(buffers)
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)  # one writev: large data segments are not copied


def _portal_address(transport: asyncio.BaseTransport) -> str:
    sockname = transport.get_extra_info("sockname")
    host, port = sockname[0], sockname[1]
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family == socket.AF_INET6:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


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


async def _finish(coro: Coroutine[Any, Any, T], waiting: object) -> T:
    """Drive a coroutine that suspended during its eager start, the way a Task would; return
    its result.

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
        except StopIteration as done:
            result: T = done.value
            return result
