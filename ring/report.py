"""What cairn-ring prints: a builder summary as a dict (for --json) and as Swift-like text."""

from __future__ import annotations

from typing import Any

from ring.builder import RingBuilder
from ring.device import Device

__all__ = ["device_rows", "format_devices", "format_summary", "summary"]


def _round(x: float) -> float:
    return round(x, 2)


def device_rows(b: RingBuilder, devs: list[Device] | None = None) -> list[dict[str, Any]]:
    parts = b.device_parts()
    balance = b.device_balance()
    rows = []
    pending = {d.id for d in b.pending_removal}
    for d in devs if devs is not None else b.devs + b.pending_removal:
        row = d.to_dict()
        row["parts"] = parts.get(d.id, 0)
        row["balance"] = _round(balance.get(d.id, 0.0))
        row["pending_removal"] = d.id in pending
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["id"]))


def summary(b: RingBuilder) -> dict[str, Any]:
    """The keys every summary-printing verb's --json output carries."""
    disp = b.dispersion()
    devs = b.devs
    return {
        "part_power": b.part_power,
        "partitions": b.partitions,
        "replicas": b.replicas,
        "min_part_hours": b.min_part_hours,
        "overload": b.overload,
        "version": b.version,
        "rebalanced": b.rebalanced,
        "balance": _round(b.balance()),
        "dispersion": _round(disp.percent),
        "crowded_partitions": disp.crowded,
        "crowded_by_tier": disp.by_tier,
        "regions": len({d.region for d in devs}),
        "zones": len({(d.region, d.zone) for d in devs}),
        "servers": len({d.server for d in devs}),
        "devices": device_rows(b),
    }


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_devices(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        "id",
        "region",
        "zone",
        "ip address:port",
        "replication ip:port",
        "name",
        "weight",
        "partitions",
        "balance",
        "flags",
        "meta",
    )
    table = [head]
    for r in rows:
        table.append((
            str(r["id"]), str(r["region"]), str(r["zone"]), _hostport(r["ip"], r["port"]),
            _hostport(r["replication_ip"], r["replication_port"]), r["device"],
            f"{r['weight']:.2f}", str(r["parts"]), f"{r['balance']:.2f}",
            "removing" if r["pending_removal"] else "", r["meta"],
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return [
        "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]


def format_summary(name: str, s: dict[str, Any], ring_note: str) -> str:
    lines = [
        f"{name}, build version {s['version']}",
        f"{s['partitions']} partitions, {s['replicas']:.6f} replicas, {s['regions']} regions, "
        f"{s['zones']} zones, {len(s['devices'])} devices, {s['balance']:.2f} balance, "
        f"{s['dispersion']:.2f} dispersion",
        f"The minimum number of hours before a partition can be reassigned is "
        f"{s['min_part_hours']}",
        "The overload factor is "
        + ("unlimited (dispersion first)" if s["overload"] is None else f"{s['overload']:.2%}"),
        ring_note,
        "Devices:" if s["devices"] else "No devices.",
    ]
    if s["devices"]:
        lines.extend("  " + line for line in format_devices(s["devices"]))
    if not s["rebalanced"]:
        lines.append("The builder has not been rebalanced yet.")
    return "\n".join(lines)
