"""The asyncio iSCSI target server: a thin loop around :class:`blockd.iscsi.connection.Connection`.

Each TCP connection is one :class:`blockd.targetconn.ConnectionProtocol` (an asyncio Protocol
feeding received bytes straight to the sans-IO Connection). Each SCSI command is started at
once against the target's :class:`blockd.scsi.lu.LogicalUnit`; only a command that has to wait
(a backend call that suspends) continues as its own asyncio task. Limits: login must finish within
``login_timeout_s``; an idle connection is pinged (NOP-In) every ``nop_interval_s`` and dropped
if a ping stays unanswered for another interval; at most ``commands_running_max`` commands run
per connection (reading stops until one finishes); at most ``connections_max`` connections.

Manual use: ``python -m blockd.target --port 3260 --size 1G [--file PATH] [--iqn IQN]
[--chap-user U --chap-secret S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import uvloop

from blockd.backend import BlockBackend, FileBackend, MemoryBackend
from blockd.iscsi.chap import ChapCredentials
from blockd.iscsi.login import LoginResult, LoginStatus, TargetEntry
from blockd.iscsi.negotiation import TargetLimits
from blockd.scsi.lu import LogicalUnit
from blockd.targetconn import ConnectionProtocol
from common.fsutil import atomic_write_bytes
from common.log import setup_logging

__all__ = ["ChapCredentials", "IscsiTarget", "TargetOptions"]

log = logging.getLogger(__name__)

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
        self._connections: set[ConnectionProtocol] = set()
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
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: ConnectionProtocol(self), host, port)
        sock = self._server.sockets[0]
        self._host, self._port = host, sock.getsockname()[1]
        log.info("iSCSI target listening", extra={"fields": {"host": host, "port": self._port}})
        return self._port

    async def stop(self) -> None:
        """Stop listening and close every connection (running commands may finish first)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        waiting = []
        for connection in list(self._connections):
            connection.close_now()
            if connection.closed is not None:
                waiting.append(connection.closed)
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

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
