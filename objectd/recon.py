"""Recon files: each object daemon's last-pass stats, for operators (`cairn status`, /metrics).

``<devices_dir>/recon/<daemon>.json``, written atomically after every pass::

    {"version": 1, "daemon": "object-replicator", "pass_started": <epoch s>,
     "pass_finished": <epoch s>, "pass_seconds": <s>, "stats": {...}}

The stats keys per daemon are listed in docs/object-replication.md.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from common.fsutil import atomic_write_bytes, makedirs_durable

__all__ = [
    "DAEMONS",
    "RECON_DIR",
    "RECON_VERSION",
    "ReconError",
    "ReconGauges",
    "read_recon",
    "recon_path",
    "write_recon",
]

RECON_DIR = "recon"
RECON_VERSION = 1
RECON_BYTES_MAX = 256 * 1024
DAEMONS = ("object-replicator", "object-auditor", "object-updater", "object-expirer")
_DAEMON_RE = re.compile(r"^[a-z][a-z-]{0,63}$")


class ReconError(ValueError):
    """No such daemon name, or a recon file that is not valid version 1 JSON."""


def recon_path(devices_dir: Path, daemon: str) -> Path:
    if not _DAEMON_RE.match(daemon):
        raise ReconError(f"bad daemon name {daemon!r}")
    return devices_dir / RECON_DIR / f"{daemon}.json"


def write_recon(
    devices_dir: Path,
    daemon: str,
    started_s: float,
    finished_s: float,
    stats: dict[str, Any],
) -> None:
    """Save one pass's stats atomically (blocking)."""
    path = recon_path(devices_dir, daemon)
    rec = {
        "version": RECON_VERSION,
        "daemon": daemon,
        "pass_started": round(started_s, 3),
        "pass_finished": round(finished_s, 3),
        "pass_seconds": round(max(0.0, finished_s - started_s), 3),
        "stats": stats,
    }
    data = json.dumps(rec, sort_keys=True).encode()
    assert len(data) <= RECON_BYTES_MAX
    makedirs_durable(path.parent)
    atomic_write_bytes(path, data)


def read_recon(devices_dir: Path, daemon: str) -> dict[str, Any] | None:
    """The daemon's last recon record, None if it has not written one (blocking)."""
    path = recon_path(devices_dir, daemon)
    try:
        with path.open("rb") as f:
            data = f.read(RECON_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(data)
    except ValueError:
        raise ReconError(f"{path} is not JSON") from None
    if not isinstance(rec, dict) or rec.get("version") != RECON_VERSION:
        raise ReconError(f"{path} is not a version {RECON_VERSION} recon file")
    return rec


GAUGE_REFRESH_S = 5.0


def _stat(rec: dict[str, Any] | None, key: str) -> float | None:
    if rec is None or not isinstance(rec.get("stats"), dict):
        return None
    value = rec["stats"].get(key)
    return float(value) if isinstance(value, int | float) else None


def _read_quiet(devices_dir: Path, daemon: str) -> dict[str, Any] | None:
    try:
        return read_recon(devices_dir, daemon)
    except (ReconError, OSError):
        return None


@dataclass
class ReconGauges:
    """The daemons' last-pass numbers as /metrics gauges, refreshed from the recon files."""

    pass_seconds: Gauge
    partitions_in_sync: Gauge
    partitions_total: Gauge
    async_pendings: Gauge
    quarantined: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReconGauges:
        def g(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=registry)

        return cls(
            g("cairn_replication_pass_seconds", "Duration of the last object replication pass"),
            g("cairn_partitions_in_sync", "Partitions in sync after the last replication pass"),
            g("cairn_partitions_total", "Partitions seen by the last replication pass"),
            g("cairn_async_pendings", "Async pendings left after the last updater pass"),
            g("cairn_quarantined_objects", "Object hash dirs in quarantine (last auditor pass)"),
        )

    def refresh(self, devices_dir: Path) -> None:
        """Blocking: read the recon files and set the gauges."""
        rep = _read_quiet(devices_dir, "object-replicator")
        if rep is not None and isinstance(rep.get("pass_seconds"), int | float):
            self.pass_seconds.set(rep["pass_seconds"])
        pairs = (
            (self.partitions_in_sync, rep, "partitions_in_sync"),
            (self.partitions_total, rep, "partitions_total"),
            (self.async_pendings, _read_quiet(devices_dir, "object-updater"), "async_pendings"),
            (self.quarantined, _read_quiet(devices_dir, "object-auditor"), "quarantined_total"),
        )
        for gauge, rec, key in pairs:
            value = _stat(rec, key)
            if value is not None:
                gauge.set(value)

    async def refresh_forever(self, devices_dir: Path) -> None:
        while True:
            await asyncio.to_thread(self.refresh, devices_dir)
            await asyncio.sleep(GAUGE_REFRESH_S)
