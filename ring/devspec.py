"""Operator strings for devices, in swift-ring-builder's syntax.

* add value:    ``r1z1-127.0.0.1:6200[R10.0.0.1:6300]/sda[_meta]`` (region defaults to 1)
* search value: any subset of ``d<id>r<region>z<zone>-<ip>:<port>R<rip>:<rport>/<device>_<meta>``
* change value: any subset of ``<ip>:<port>R<rip>:<rport>/<device>_<meta>`` (for set_info)

IPv6 addresses go in brackets. Parsing is pure: strings in, typed records out, or an
InvalidDeviceError naming what was wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace

from ring.device import Device, normalize_ip
from ring.errors import InvalidDeviceError

__all__ = ["DeviceChange", "DeviceQuery", "NewDevice", "parse_add", "parse_change", "parse_search"]

_HOST = r"\[[^\]]+\]|[^:/R_\[\]\s]+"
_ADD = re.compile(
    rf"^(?:r(?P<region>\d+))?z(?P<zone>\d+)-(?P<ip>{_HOST}):(?P<port>\d+)"
    rf"(?:R(?P<rip>{_HOST}):(?P<rport>\d+))?/(?P<device>[^_/\s]+)(?:_(?P<meta>.*))?$"
)
_SEARCH = re.compile(
    rf"^(?:d(?P<id>\d+))?(?:r(?P<region>\d+))?(?:z(?P<zone>\d+))?(?:-(?P<ip>{_HOST}))?"
    rf"(?::(?P<port>\d+))?(?:R(?P<rip>{_HOST}))?(?::(?P<rport>\d+))?"
    r"(?:/(?P<device>[^_/\s]+))?(?:_(?P<meta>.*))?$"
)
_CHANGE = re.compile(
    rf"^(?P<ip>{_HOST})?(?::(?P<port>\d+))?(?:R(?P<rip>{_HOST})?(?::(?P<rport>\d+))?)?"
    r"(?:/(?P<device>[^_/\s]+))?(?:_(?P<meta>.*))?$"
)


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device to add: everything but the id, which the builder assigns."""

    region: int
    zone: int
    ip: str
    port: int
    replication_ip: str
    replication_port: int
    device: str
    weight: float
    meta: str = ""


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    """A search: every field that is set must match."""

    id: int | None = None
    region: int | None = None
    zone: int | None = None
    ip: str | None = None
    port: int | None = None
    replication_ip: str | None = None
    replication_port: int | None = None
    device: str | None = None
    meta: str | None = None
    weight: float | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def matches(self, dev: Device) -> bool:
        for f in fields(self):
            want = getattr(self, f.name)
            if want is not None and getattr(dev, f.name) != want:
                return False
        return True


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """New values for set_info; unset fields stay as they are."""

    ip: str | None = None
    port: int | None = None
    replication_ip: str | None = None
    replication_port: int | None = None
    device: str | None = None
    meta: str | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def apply(self, dev: Device) -> Device:
        changes = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(dev, **{k: v for k, v in changes.items() if v is not None})


def _int(text: str | None) -> int | None:
    return None if text is None else int(text)


def _port(text: str | None) -> int | None:
    if text is None:
        return None
    port = int(text)
    if not 1 <= port <= 65535:
        raise InvalidDeviceError(f"port must be in 1..65535, got {port}")
    return port


def _ip(text: str | None) -> str | None:
    return None if text is None else normalize_ip(text)


def parse_weight(text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise InvalidDeviceError(f"invalid weight: {text!r}") from None
    if not weight >= 0 or weight == float("inf"):
        raise InvalidDeviceError(f"weight must be a finite number >= 0, got {text!r}")
    return weight


def parse_add(value: str, weight: float) -> NewDevice:
    """Parse ``r1z1-127.0.0.1:6200[R127.0.0.1:6300]/sda[_meta]``."""
    m = _ADD.match(value.strip())
    if m is None:
        raise InvalidDeviceError(
            f"invalid device {value!r}: expected r<region>z<zone>-<ip>:<port>"
            "[R<replication_ip>:<replication_port>]/<device>[_<meta>]"
        )
    ip = normalize_ip(m["ip"])
    port = _port(m["port"])
    assert port is not None
    return NewDevice(
        region=int(m["region"]) if m["region"] is not None else 1,
        zone=int(m["zone"]),
        ip=ip,
        port=port,
        replication_ip=normalize_ip(m["rip"]) if m["rip"] else ip,
        replication_port=_port(m["rport"]) or port,
        device=m["device"],
        weight=weight,
        meta=m["meta"] or "",
    )


def parse_search(value: str) -> DeviceQuery:
    """Parse a search value such as ``d3``, ``r1z2``, ``-10.0.0.1:6200/sdb`` or ``z1-10.0.0.1``."""
    m = _SEARCH.match(value.strip())
    if m is None or not value.strip():
        raise InvalidDeviceError(f"invalid search value {value!r}")
    query = DeviceQuery(
        id=_int(m["id"]),
        region=_int(m["region"]),
        zone=_int(m["zone"]),
        ip=_ip(m["ip"]),
        port=_port(m["port"]),
        replication_ip=_ip(m["rip"]),
        replication_port=_port(m["rport"]),
        device=m["device"],
        meta=m["meta"],
    )
    if query.is_empty():
        raise InvalidDeviceError(f"invalid search value {value!r}")
    return query


def parse_change(value: str) -> DeviceChange:
    """Parse set_info's ``<ip>:<port>R<rip>:<rport>/<device>_<meta>`` (any part optional)."""
    m = _CHANGE.match(value.strip())
    if m is None or not value.strip():
        raise InvalidDeviceError(f"invalid change value {value!r}")
    change = DeviceChange(
        ip=_ip(m["ip"]),
        port=_port(m["port"]),
        replication_ip=_ip(m["rip"]),
        replication_port=_port(m["rport"]),
        device=m["device"],
        meta=m["meta"],
    )
    if change.is_empty():
        raise InvalidDeviceError(f"invalid change value {value!r}")
    return change
