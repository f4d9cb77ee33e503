"""Telling container servers about object PUTs and DELETEs (Swift's backend protocol).

``PUT /<cdev>/<cpart>/<account>/<container>/<object>`` with X-Timestamp, X-Size,
X-Content-Type and X-Etag for a new object; ``DELETE`` of the same path with X-Timestamp for a
deletion. Any 2xx means the container recorded it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import quote

import aiohttp
from yarl import URL

from objectd.asyncpending import ContainerTarget

__all__ = [
    "TARGETS_MAX",
    "TargetParseError",
    "failed_targets",
    "parse_targets",
    "send_update",
    "send_updates",
]

TARGETS_MAX = 16


class TargetParseError(ValueError):
    """X-Container-Host/-Device/-Partition headers that do not line up."""


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _valid_host(host: str) -> bool:
    name, sep, port = host.rpartition(":")
    return bool(sep and name and port.isdigit() and 0 < int(port) < 65536)


def parse_targets(headers: Mapping[str, str]) -> tuple[ContainerTarget, ...]:
    """The container replicas named by the request (none if the headers are absent)."""
    hosts = _split(headers.get("X-Container-Host", ""))
    devices = _split(headers.get("X-Container-Device", ""))
    part_raw = headers.get("X-Container-Partition", "").strip()
    if not hosts and not devices:
        return ()
    if len(hosts) != len(devices) or len(hosts) > TARGETS_MAX:
        raise TargetParseError("X-Container-Host and X-Container-Device do not match")
    parts = _split(part_raw)
    if len(parts) == 1:
        parts = parts * len(hosts)
    if len(parts) != len(hosts) or not all(p.isdigit() and len(p) <= 10 for p in parts):
        raise TargetParseError("bad X-Container-Partition")
    if not all(_valid_host(h) for h in hosts):
        raise TargetParseError("X-Container-Host must be ip:port")
    return tuple(
        ContainerTarget(h, d, int(p)) for h, d, p in zip(hosts, devices, parts, strict=True)
    )


def update_url(t: ContainerTarget, account: str, container: str, obj: str) -> str:
    path = "/".join(quote(x, safe="") for x in (t.device, str(t.partition), account, container))
    return f"http://{t.host}/{path}/{quote(obj, safe='/')}"


async def send_update(
    session: aiohttp.ClientSession,
    op: str,
    target: ContainerTarget,
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str],
    timeout_s: float,
) -> bool:
    """True if the container server accepted the update within `timeout_s`."""
    url = update_url(target, account, container, obj)
    try:
        async with session.request(
            op,
            URL(url, encoded=True),
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            await resp.read()
            return 200 <= resp.status < 300
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def send_updates(
    session: aiohttp.ClientSession,
    op: str,
    targets: tuple[ContainerTarget, ...],
    account: str,
    container: str,
    obj: str,
    headers: Mapping[str, str],
    timeout_s: float,
) -> tuple[ContainerTarget, ...]:
    """Send to every target concurrently; returns the targets that did not accept."""
    return await failed_targets(
        targets,
        lambda t: send_update(session, op, t, account, container, obj, headers, timeout_s),
    )


async def failed_targets(
    targets: tuple[ContainerTarget, ...], send: Callable[[ContainerTarget], Awaitable[bool]]
) -> tuple[ContainerTarget, ...]:
    """`send` to every target concurrently; the targets for which it returned False."""
    if len(targets) == 1:
        return () if await send(targets[0]) else targets
    results = await asyncio.gather(*(send(t) for t in targets))
    return tuple(t for t, ok in zip(targets, results, strict=True) if not ok)
