"""Recon files: what each background daemon did in its last pass, for people and tools.

A daemon writes ``<devices_dir>/recon/<daemon>.json`` atomically after every pass (format
version 1, see docs/db-replication.md); the storage server of the same node serves it at
``GET /recon/<daemon>`` and turns its numbers into gauges on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.fsutil import atomic_write_bytes, makedirs_durable
from common.server import METRICS

__all__ = [
    "RECON_DIR",
    "RECON_VERSION",
    "ReconCollector",
    "add_recon_routes",
    "read_recon",
    "recon_path",
    "write_recon",
]

RECON_VERSION = 1
RECON_DIR = "recon"
RECON_BYTES_MAX = 1 << 20
_DAEMON_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


def recon_path(devices_dir: Path, daemon: str) -> Path:
    if not _DAEMON_RE.match(daemon):
        raise ValueError(f"bad daemon name {daemon[:64]!r}")
    return devices_dir / RECON_DIR / f"{daemon}.json"


def write_recon(devices_dir: Path, daemon: str, record: Mapping[str, Any]) -> None:
    """Blocking: replace the daemon's recon file (temp file, fsync, rename, fsync dir)."""
    path = recon_path(devices_dir, daemon)
    makedirs_durable(path.parent)
    body = {"v": RECON_VERSION, "daemon": daemon, **record}
    atomic_write_bytes(path, json.dumps(body, sort_keys=True, indent=1).encode() + b"\n")


def read_recon(devices_dir: Path, daemon: str) -> dict[str, Any] | None:
    """Blocking: the daemon's last record, None when there is none yet; ValueError when the
    file is not a recon record of a known version."""
    path = recon_path(devices_dir, daemon)
    try:
        with path.open("rb") as f:
            raw = f.read(RECON_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    if len(raw) > RECON_BYTES_MAX:
        raise ValueError(f"{path} is larger than {RECON_BYTES_MAX} bytes")
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(record, dict) or record.get("v") != RECON_VERSION:
        raise ValueError(f"{path}: unsupported recon record")
    return record


class ReconCollector(Collector):
    """Gauges from the recon files, read when /metrics is scraped."""

    def __init__(self, devices_dir: Path, daemons: Sequence[str]) -> None:
        self.devices_dir = devices_dir
        self.daemons = tuple(daemons)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        duration = GaugeMetricFamily(
            "cairn_daemon_pass_seconds", "Duration of the last pass", labels=["daemon"]
        )
        ended = GaugeMetricFamily(
            "cairn_daemon_pass_end_time_seconds", "When the last pass ended", labels=["daemon"]
        )
        numbers = GaugeMetricFamily(
            "cairn_daemon_pass_stat", "Counts of the last pass", labels=["daemon", "stat"]
        )
        for daemon in self.daemons:
            try:
                record = read_recon(self.devices_dir, daemon)
            except (OSError, ValueError):
                record = None
            if record is None:
                continue
            for family, key in ((duration, "pass_duration_s"), (ended, "pass_ended")):
                if isinstance(record.get(key), int | float):
                    family.add_metric([daemon], float(record[key]))
            stats = record.get("stats")
            for name, value in stats.items() if isinstance(stats, dict) else ():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    numbers.add_metric([daemon, str(name)], float(value))
        return [duration, ended, numbers]


def add_recon_routes(app: web.Application, devices_dir: Path, daemons: Sequence[str]) -> None:
    """``GET /recon/<daemon>`` (the record as JSON) and recon gauges in /metrics. Call it
    before adding a catch-all route."""
    known = frozenset(daemons)

    async def get_recon(request: web.Request) -> web.Response:
        daemon = request.match_info["daemon"]
        if daemon not in known:
            return web.Response(status=404, text=f"no daemon {daemon[:64]!r} here\n")
        try:
            record = await asyncio.to_thread(read_recon, devices_dir, daemon)
        except (OSError, ValueError) as e:
            return web.Response(status=500, text=f"recon file unreadable: {e}\n")
        if record is None:
            return web.Response(status=404, text=f"{daemon} has not finished a pass yet\n")
        return web.json_response(record)

    app.router.add_get("/recon/{daemon}", get_recon)
    app[METRICS].registry.register(ReconCollector(devices_dir, daemons))
