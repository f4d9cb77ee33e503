"""Container stats flow to the account: the report, the rate-limited push, the updater pass.

A report is Swift's backend account update: ``PUT /<dev>/<part>/<account>/<container>`` on
an account server with X-Put-Timestamp, X-Delete-Timestamp, X-Object-Count and X-Bytes-Used
(plus X-Backend-Stats-Timestamp, when the totals were read, so the account keeps the newest
report). The account servers to tell are remembered from the container's last PUT/DELETE
(X-Account-Host/-Partition/-Device). A report that fails is simply left: the database's
``extra["reported"]`` still differs from its totals, and ``run_once`` sends it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from common.clock import Clock
from common.listingdb import DbInfo, ListingEnv, list_databases
from common.log import get_logger, request_id
from common.timestamps import Timestamp
from containerd.broker import ContainerBroker, bytes_used, object_count

__all__ = [
    "TARGETS_MAX",
    "AccountReporter",
    "AccountTarget",
    "TargetParseError",
    "UpdaterStats",
    "parse_account_targets",
    "pending_report",
    "run_once",
    "send_report",
]

log = get_logger("cairn.containerd.updater")
TARGETS_MAX = 16
_BATCH_DBS = 1000


class TargetParseError(ValueError):
    """X-Account-Host/-Device/-Partition headers that do not line up."""


@dataclass(frozen=True)
class AccountTarget:
    host: str  # "ip:port"
    device: str
    partition: int

    def to_wire(self) -> list[Any]:
        return [self.host, self.device, self.partition]

    @classmethod
    def from_wire(cls, raw: Sequence[Any]) -> AccountTarget:
        return cls(str(raw[0]), str(raw[1]), int(raw[2]))


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _valid_host(host: str) -> bool:
    name, sep, port = host.rpartition(":")
    return bool(sep and name and port.isdigit() and 0 < int(port) < 65536)


def parse_account_targets(headers: Mapping[str, str]) -> tuple[AccountTarget, ...]:
    """The account replicas a container PUT/DELETE names (none when the headers are absent)."""
    hosts = _split(headers.get("X-Account-Host", ""))
    devices = _split(headers.get("X-Account-Device", ""))
    part = headers.get("X-Account-Partition", "").strip()
    if not hosts and not devices:
        return ()
    if len(hosts) != len(devices) or len(hosts) > TARGETS_MAX:
        raise TargetParseError("X-Account-Host and X-Account-Device do not match")
    if not part.isascii() or not part.isdigit() or len(part) > 10:
        raise TargetParseError("bad X-Account-Partition")
    if not all(_valid_host(h) for h in hosts):
        raise TargetParseError("X-Account-Host must be ip:port")
    return tuple(AccountTarget(h, d, int(part)) for h, d in zip(hosts, devices, strict=True))


def current_report(info: DbInfo) -> dict[str, Any]:
    return {
        "put": info.put_timestamp,
        "delete": info.delete_timestamp,
        "objects": object_count(info),
        "bytes": bytes_used(info),
    }


def pending_report(info: DbInfo) -> dict[str, Any] | None:
    """The report to send, or None when the account already has these totals."""
    report = current_report(info)
    return None if info.extra.get("reported") == report else report


async def send_report(
    session: aiohttp.ClientSession,
    target: AccountTarget,
    info: DbInfo,
    report: Mapping[str, Any],
    stats_ts: Timestamp,
    timeout_s: float,
) -> int | None:
    """PUT one report; the account server's status, or None when it could not be reached."""
    assert info.container is not None
    names = (target.device, str(target.partition), info.account, info.container)
    url = f"http://{target.host}/" + "/".join(quote(x, safe="") for x in names)
    headers = {
        "X-Put-Timestamp": str(report["put"]),
        "X-Delete-Timestamp": str(report["delete"]),
        "X-Object-Count": str(report["objects"]),
        "X-Bytes-Used": str(report["bytes"]),
        "X-Backend-Stats-Timestamp": stats_ts.internal,
        "X-Backend-Storage-Policy-Index": "0",
        "X-Trans-Id": request_id.get(),
    }
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.put(URL(url, encoded=True), headers=headers, timeout=timeout) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        log.warning(
            "account update failed",
            extra={"fields": {"host": target.host, "device": target.device, "error": repr(e)}},
        )
        return None


def stored_targets(info: DbInfo) -> tuple[AccountTarget, ...]:
    return tuple(AccountTarget.from_wire(t) for t in info.extra.get("account_targets", ()))


async def report_once(
    session: aiohttp.ClientSession,
    env: ListingEnv,
    broker: ContainerBroker,
    clock: Clock,
    timeout_s: float,
    targets: Sequence[AccountTarget] | None = None,
) -> list[int | None]:
    """Send the container's pending report to every target; record it when all took it.

    Returns the statuses (empty when nothing was pending or no target is known)."""
    info = await env.run(broker.get_info)
    if info is None or info.container is None:
        return []
    report = pending_report(info)
    chosen = stored_targets(info) if targets is None else tuple(targets)
    if report is None or not chosen:
        return []
    stats_ts = _next_stats_ts(info, clock)
    statuses = await asyncio.gather(
        *(send_report(session, t, info, report, stats_ts, timeout_s) for t in chosen)
    )
    if all(s is not None and 200 <= s < 300 for s in statuses):
        await env.run(broker.set_extra, {"reported": report, "stats_ts": stats_ts.internal})
    return list(statuses)


def _next_stats_ts(info: DbInfo, clock: Clock) -> Timestamp:
    """Now, but always after this container's last accepted report, so the account never
    mistakes a newer report for an older one when two land in the same clock tick."""
    now = Timestamp.from_float(clock.time())
    last = info.extra.get("stats_ts")
    if last is None:
        return now
    return max(now, Timestamp(Timestamp.parse(str(last)).ticks + 1))


class AccountReporter:
    """Rate-limited reports after object changes: at most one in flight or waiting per
    container, and at most one per `interval_s`."""

    def __init__(
        self, session: aiohttp.ClientSession, clock: Clock, interval_s: float, timeout_s: float
    ) -> None:
        self.session = session
        self.clock = clock
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._waiting: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._last: dict[tuple[str, str], float] = {}

    def poke(self, env: ListingEnv, broker: ContainerBroker) -> None:
        key = (str(env.path), broker.hash_hex)
        if key in self._waiting:
            self._dirty.add(key)  # the running report may have read older totals: go again
            return
        delay_s = max(0.0, self._last.get(key, -1e18) + self.interval_s - self.clock.monotonic())
        self._waiting[key] = asyncio.create_task(self._later(key, delay_s, env, broker))

    async def _later(
        self, key: tuple[str, str], delay_s: float, env: ListingEnv, broker: ContainerBroker
    ) -> None:
        try:
            while True:
                if delay_s > 0:
                    await self.clock.sleep(delay_s)
                self._dirty.discard(key)
                self._last[key] = self.clock.monotonic()
                await report_once(self.session, env, broker, self.clock, self.timeout_s)
                if key not in self._dirty:
                    break
                delay_s = self.interval_s
        except Exception:
            log.exception("account report failed")
        finally:
            self._waiting.pop(key, None)
            self._dirty.discard(key)
            if len(self._last) > 100_000:  # bound memory: forget the oldest half
                for old in sorted(self._last, key=self._last.__getitem__)[:50_000]:
                    del self._last[old]

    async def drain(self) -> None:
        """Wait for every waiting report (tests, and a clean stop)."""
        while self._waiting:
            await asyncio.gather(*self._waiting.values(), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._waiting.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


@dataclass
class UpdaterStats:
    checked: int = 0
    reported: int = 0
    failed: int = 0
    no_target: int = 0


Locate = Callable[[str], Sequence[AccountTarget]]


async def run_once(
    session: aiohttp.ClientSession,
    envs: Mapping[str, ListingEnv],
    clock: Clock,
    *,
    timeout_s: float = 3.0,
    locate: Locate | None = None,
    concurrency_max: int = 8,
) -> UpdaterStats:
    """One updater pass over every container database of the given devices: push the
    totals of each container whose last successful report differs from its state.

    `locate(account)` gives the account replicas to tell (from the account ring); without
    it the targets remembered from the container's last PUT/DELETE are used."""
    stats = UpdaterStats()
    gate = asyncio.Semaphore(concurrency_max)

    async def one(env: ListingEnv, part: int, hash_hex: str) -> None:
        async with gate:
            broker = ContainerBroker(env, part, hash_hex)
            info = await env.run(broker.get_info)
            stats.checked += 1
            if info is None or pending_report(info) is None:
                return
            targets = locate(info.account) if locate is not None else stored_targets(info)
            if not targets:
                stats.no_target += 1
                return
            statuses = await report_once(session, env, broker, clock, timeout_s, targets)
            ok = bool(statuses) and all(s is not None and 200 <= s < 300 for s in statuses)
            stats.reported += bool(ok)
            stats.failed += not ok

    for env in envs.values():
        dbs = await env.run(list_databases, env)
        for start in range(0, len(dbs), _BATCH_DBS):  # bounded number of tasks at a time
            batch = dbs[start : start + _BATCH_DBS]
            await asyncio.gather(*(one(env, part, h) for part, h in batch))
    return stats
