"""Validating what a backend object request names and carries (no I/O).

Each failure is a `BadRequest` with the message the client gets in its 400 body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from common.timestamps import Timestamp, TimestampError
from objectd.layout import valid_device_name

__all__ = [
    "ACCOUNT_NAME_BYTES_MAX",
    "CONTAINER_NAME_BYTES_MAX",
    "OBJECT_NAME_BYTES_MAX",
    "BadRequest",
    "ObjectPath",
    "parse_delete_at",
    "parse_object_path",
    "parse_timestamp",
]

OBJECT_NAME_BYTES_MAX = 1024
CONTAINER_NAME_BYTES_MAX = 256
ACCOUNT_NAME_BYTES_MAX = 256
PARTITION_MAX = (1 << 32) - 1
CONTENT_TYPE_BYTES_MAX = 256


class BadRequest(ValueError):
    """The request cannot be served as sent (400)."""


@dataclass(frozen=True)
class ObjectPath:
    device: str
    partition: int
    account: str
    container: str
    obj: str

    @property
    def name(self) -> str:
        return f"/{self.account}/{self.container}/{self.obj}"


def _unquote(raw: str, what: str) -> str:
    try:
        text = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise BadRequest(f"{what} contains a NUL byte")
    return text


def parse_object_path(raw_path: str) -> ObjectPath:
    """Split ``/<device>/<partition>/<account>/<container>/<object>`` (still percent-encoded).

    The object name keeps any further slashes; it only feeds the hash, so no name (``..``
    included) can reach outside the device directory. The device name must be a plain name.
    """
    if not raw_path.startswith("/"):
        raise BadRequest("path must start with '/'")
    parts = raw_path[1:].split("/", 4)
    if len(parts) != 5:
        raise BadRequest("path must be /device/partition/account/container/object")
    device, part, account, container, obj = (
        _unquote(p, what)
        for p, what in zip(
            parts, ("device", "partition", "account", "container", "object name"), strict=True
        )
    )
    if not valid_device_name(device):
        raise BadRequest(f"invalid device name {device!r}")
    if not part.isdigit() or len(part) > 10 or int(part) > PARTITION_MAX:
        raise BadRequest(f"invalid partition {part!r}")
    for value, what, limit in (
        (account, "account", ACCOUNT_NAME_BYTES_MAX),
        (container, "container", CONTAINER_NAME_BYTES_MAX),
        (obj, "object name", OBJECT_NAME_BYTES_MAX),
    ):
        if not value:
            raise BadRequest(f"empty {what}")
        if len(value.encode("utf-8")) > limit:
            raise BadRequest(f"{what} longer than {limit} bytes")
    if "/" in account or "/" in container:
        raise BadRequest("path must be /device/partition/account/container/object")
    return ObjectPath(device, int(part), account, container, obj)


def parse_timestamp(headers: Mapping[str, str], required: bool = True) -> Timestamp | None:
    raw = headers.get("X-Timestamp")
    if raw is None:
        if required:
            raise BadRequest("missing X-Timestamp")
        return None
    try:
        return Timestamp.parse(raw)
    except TimestampError:
        raise BadRequest(f"invalid X-Timestamp {raw!r}") from None


def parse_delete_at(headers: Mapping[str, str], now_s: float) -> int | None:
    raw = headers.get("X-Delete-At")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 10:
        raise BadRequest("X-Delete-At must be integer seconds since the epoch")
    value = int(raw)
    if value < now_s:
        raise BadRequest("X-Delete-At in past")
    return value


def parse_content_type(headers: Mapping[str, str]) -> str:
    ctype = headers.get("Content-Type")
    if ctype is None:
        raise BadRequest("no content type")
    if len(ctype.encode("utf-8", "surrogateescape")) > CONTENT_TYPE_BYTES_MAX:
        raise BadRequest("content type too long")
    return ctype
