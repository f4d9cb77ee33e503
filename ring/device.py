"""A storage device in the ring: one disk on one server, in one zone of one region."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from ring.errors import InvalidDeviceError

__all__ = ["DEV_ID_MAX", "Device", "normalize_ip"]

# Device ids are stored as unsigned 16-bit entries in the partition tables; 0xFFFF means "none".
DEV_ID_MAX = 0xFFFE
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
_DEVICE_NAME = re.compile(r"^[^/\s]{1,255}$")
_META_CHARS_MAX = 1024


def normalize_ip(value: str) -> str:
    """An IPv4/IPv6 address (brackets stripped, canonical form) or a plain host name."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not _HOSTNAME.match(text):
        raise InvalidDeviceError(f"invalid ip address or host name: {value!r}")
    return text.lower()


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not low <= value <= high:
        raise InvalidDeviceError(f"{name} must be an integer in {low}..{high}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Device:
    """One device. `ip`/`port` serve clients; `replication_ip`/`replication_port` serve peers."""

    id: int
    region: int
    zone: int
    ip: str
    port: int
    replication_ip: str
    replication_port: int
    device: str
    weight: float
    meta: str = ""

    def __post_init__(self) -> None:
        _check_int("id", self.id, 0, DEV_ID_MAX)
        _check_int("region", self.region, 0, 0xFFFF)
        _check_int("zone", self.zone, 0, 0xFFFF)
        _check_int("port", self.port, 1, 65535)
        _check_int("replication_port", self.replication_port, 1, 65535)
        if normalize_ip(self.ip) != self.ip or normalize_ip(self.replication_ip) != (
            self.replication_ip
        ):
            raise InvalidDeviceError(f"ip not in normal form: {self.ip!r}/{self.replication_ip!r}")
        if not _DEVICE_NAME.match(self.device):
            raise InvalidDeviceError(f"invalid device name: {self.device!r}")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidDeviceError(f"weight must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise InvalidDeviceError(f"weight must be a finite number >= 0, got {weight!r}")
        if len(self.meta) > _META_CHARS_MAX:
            raise InvalidDeviceError(f"meta longer than {_META_CHARS_MAX} characters")

    @property
    def server(self) -> tuple[int, int, str]:
        """The failure domain of a server: (region, zone, ip)."""
        return (self.region, self.zone, self.ip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Device:
        fields = (
            "id",
            "region",
            "zone",
            "ip",
            "port",
            "replication_ip",
            "replication_port",
            "device",
            "weight",
            "meta",
        )
        missing = [f for f in fields if f not in data]
        if missing:
            raise InvalidDeviceError(f"device record lacks {', '.join(missing)}")
        weight = data["weight"]
        return cls(**{f: data[f] for f in fields if f != "weight"}, weight=float(weight))

    def label(self) -> str:
        """Swift's add/search form: r1z1-127.0.0.1:6200R127.0.0.1:6200/sda_meta."""
        ip = f"[{self.ip}]" if ":" in self.ip else self.ip
        rip = f"[{self.replication_ip}]" if ":" in self.replication_ip else self.replication_ip
        text = f"r{self.region}z{self.zone}-{ip}:{self.port}"
        if (self.replication_ip, self.replication_port) != (self.ip, self.port):
            text += f"R{rip}:{self.replication_port}"
        text += f"/{self.device}"
        return text + (f"_{self.meta}" if self.meta else "")
