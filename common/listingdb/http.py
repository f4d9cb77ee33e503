"""HTTP plumbing shared by the container and account servers: paths, timestamps, devices,
metadata headers and listing responses (Swift's backend protocol)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote_to_bytes

from aiohttp import web

from common.listingdb.env import EnvOptions, ListingEnv, acquire_env, release_env
from common.listingdb.formats import render_json, render_plain, render_xml
from common.listingdb.listing import ListingParams, Subdir
from common.listingdb.params import (
    ListingFormat,
    ListingRequestError,
    negotiate_format,
    parse_listing_params,
)
from common.listingdb.records import Metadata
from common.timestamps import Timestamp, TimestampError

__all__ = [
    "ACCOUNT_NAME_BYTES_MAX",
    "CONTAINER_NAME_BYTES_MAX",
    "OBJECT_NAME_BYTES_MAX",
    "BackendPath",
    "DeviceEnvs",
    "DeviceUnavailable",
    "bad_request",
    "error_response",
    "listing_request",
    "metadata_from_headers",
    "metadata_headers",
    "parse_backend_path",
    "parse_count",
    "parse_timestamp",
    "render_listing",
    "require_timestamp",
    "run_on_device",
]

ACCOUNT_NAME_BYTES_MAX = 256
CONTAINER_NAME_BYTES_MAX = 256
OBJECT_NAME_BYTES_MAX = 1024
_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Names that are never devices: daemon recon files live in <devices_dir>/recon, and
# /replicate/... is the replication endpoint (common/listingdb/repl_service.py).
RESERVED_DEVICE_NAMES = frozenset({"recon", "replicate"})
R = TypeVar("R")


def bad_request(message: str, status: int = 400) -> web.HTTPException:
    """An error response in the backend protocol's own form: a status and a text line."""
    classes: dict[int, type[web.HTTPException]] = {
        412: web.HTTPPreconditionFailed,
        406: web.HTTPNotAcceptable,
    }
    return classes.get(status, web.HTTPBadRequest)(text=message + "\n")


def error_response(e: web.HTTPException) -> web.Response:
    """A plain response for an HTTP error raised by a handler (aiohttp deprecates returning
    exception objects as responses, so the dispatcher converts them)."""
    headers = {k: v for k, v in e.headers.items() if k.lower() != "content-length"}
    return web.Response(status=e.status, body=e.body, headers=headers)


@dataclass(frozen=True)
class BackendPath:
    device: str
    partition: int
    account: str
    container: str | None = None
    obj: str | None = None


def _check_name(kind: str, name: str, bytes_max: int) -> None:
    if not name:
        raise bad_request(f"{kind} name must not be empty")
    if "\x00" in name:
        raise bad_request(f"{kind} name must not contain NUL")
    if len(name.encode()) > bytes_max:
        raise bad_request(f"{kind} name is longer than {bytes_max} bytes")


def parse_backend_path(raw_path: str, segments_min: int, segments_max: int) -> BackendPath:
    """``/<device>/<partition>/<account>[/<container>[/<object>]]`` from the raw request path.

    `segments_min`/`max` count the name segments after the partition (1 to 3).
    """
    path = raw_path.split("?", 1)[0]
    try:
        text = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("path is not valid UTF-8") from None
    parts = text.lstrip("/").split("/", 4)
    names = parts[2:]
    if len(parts) < 2 + segments_min or len(names) > segments_max:
        raise bad_request(f"bad path {text[:200]!r}")
    device, part = parts[0], parts[1]
    if not _DEVICE_RE.match(device):
        raise bad_request(f"bad device name {device[:64]!r}")
    if not part.isascii() or not part.isdigit() or len(part) > 10:
        raise bad_request(f"bad partition {part[:16]!r}")
    _check_name("account", names[0], ACCOUNT_NAME_BYTES_MAX)
    container = names[1] if len(names) > 1 else None
    if container is not None:
        _check_name("container", container, CONTAINER_NAME_BYTES_MAX)
    obj = names[2] if len(names) > 2 else None
    if obj is not None:
        _check_name("object", obj, OBJECT_NAME_BYTES_MAX)
    return BackendPath(device, int(part), names[0], container, obj)


def require_timestamp(headers: Mapping[str, str], name: str = "X-Timestamp") -> Timestamp:
    raw = headers.get(name)
    if raw is None:
        raise bad_request(f"missing {name}")
    return parse_timestamp(raw, name)


def parse_timestamp(raw: str, name: str) -> Timestamp:
    try:
        return Timestamp.parse(raw)
    except TimestampError:
        raise bad_request(f"{name} is not a valid timestamp: {raw[:40]!r}") from None


def parse_count(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name, "0").strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise bad_request(f"{name} must be a non-negative integer, got {raw[:24]!r}")
    return int(raw)


def _title(header: str) -> str:
    return "-".join(w.capitalize() for w in header.split("-"))


def metadata_from_headers(
    headers: Mapping[str, str],
    prefixes: Iterable[str],
    exact: Mapping[str, str],
    ts: Timestamp,
) -> Metadata:
    """Stored metadata from request headers: names in Title-Case, stamped with `ts`.

    `prefixes` are lower-case header prefixes kept as they are; `exact` maps lower-case
    header names to the name they are stored under.
    """
    prefixes = tuple(prefixes)
    md: Metadata = {}
    for key, value in headers.items():
        low = key.lower()
        if low in exact:
            md[exact[low]] = (value.strip(), ts.internal)
        elif low.startswith(prefixes) and low not in prefixes:
            md[_title(low)] = (value.strip(), ts.internal)
    return md


def metadata_headers(md: Metadata) -> dict[str, str]:
    return {k: v for k, (v, _ts) in md.items() if v != ""}


def _raw_query(raw_path: str) -> dict[str, str]:
    _, _, query = raw_path.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise bad_request("query string is not valid UTF-8") from None
    except ValueError as e:
        raise bad_request(f"bad query string: {e}") from None
    return dict(pairs[:64])


def listing_request(request: web.Request) -> tuple[ListingParams, ListingFormat]:
    """Listing parameters and response format of a GET, or an HTTP error."""
    query = _raw_query(request.raw_path)
    try:
        params = parse_listing_params(query)
        fmt = negotiate_format(query.get("format"), request.headers.get("Accept"))
    except ListingRequestError as e:
        raise bad_request(e.message, e.status) from None
    return params, fmt


def render_listing(
    fmt: ListingFormat,
    root: tuple[str, str, str],
    items: Sequence[R | Subdir],
    fields: Callable[[R], dict[str, Any]],
) -> tuple[int, bytes]:
    """(status, body); `root` is (root tag, root name, row tag) for XML."""
    if fmt.kind == "json":
        return 200, render_json(items, fields)
    if fmt.kind == "xml":
        return 200, render_xml(root[0], root[1], root[2], items, fields)
    body = render_plain(items, fields)
    return (200 if body else 204), body


class DeviceUnavailable(Exception):
    """A device directory that is missing (unmounted): the request answers 507."""


class DeviceEnvs:
    """The LMDB environment of each device of this node, opened on first use."""

    def __init__(self, devices_dir: Path, kind: str, mount_check: bool, opts: EnvOptions) -> None:
        self.devices_dir = devices_dir
        self.kind = kind
        self.mount_check = mount_check
        self.opts = opts
        self._envs: dict[str, ListingEnv] = {}
        self._lock = threading.Lock()

    def device_path(self, device: str) -> Path:
        return self.devices_dir / device

    def check_device(self, device: str) -> None:
        """Blocking: raise DeviceUnavailable when the device directory is gone."""
        path = self.device_path(device)
        if device in RESERVED_DEVICE_NAMES or (self.mount_check and not path.is_dir()):
            raise DeviceUnavailable(device)

    def _open(self, device: str) -> ListingEnv:
        with self._lock:
            env = self._envs.get(device)
            if env is not None:
                return env
            self.check_device(device)
            env = acquire_env(self.device_path(device) / f"{self.kind}.lmdb", self.opts)
            self._envs[device] = env
            return env

    async def get(self, device: str) -> ListingEnv:
        """The device's environment; 507 Insufficient Storage when the device is missing."""
        env = self._envs.get(device)
        if env is None:
            loop = asyncio.get_running_loop()
            try:
                env = await loop.run_in_executor(None, self._open, device)
            except DeviceUnavailable:
                raise _insufficient(device) from None
        return env

    def opened(self) -> dict[str, ListingEnv]:
        with self._lock:
            return dict(self._envs)

    def open_all(self) -> dict[str, ListingEnv]:
        """Blocking: open every device present under devices_dir (for daemons walking them)."""
        if self.devices_dir.is_dir():
            for entry in sorted(self.devices_dir.iterdir()):
                name = entry.name
                if entry.is_dir() and _DEVICE_RE.match(name) and name not in RESERVED_DEVICE_NAMES:
                    self._open(name)
        return self.opened()

    def open_devices(self, names: Iterable[str]) -> dict[str, ListingEnv]:
        """Blocking: the environments of the named devices whose directories exist (a
        daemon never creates a device directory; a missing one is skipped this pass)."""
        out: dict[str, ListingEnv] = {}
        for name in names:
            if name in RESERVED_DEVICE_NAMES or not self.device_path(name).is_dir():
                continue
            try:
                out[name] = self._open(name)
            except DeviceUnavailable:
                continue
        return out

    def close(self) -> None:
        with self._lock:
            envs, self._envs = list(self._envs.values()), {}
        for env in envs:
            release_env(env)


async def run_on_device(envs: DeviceEnvs, device: str, fn: Callable[[ListingEnv], R]) -> R:
    """Run blocking work against a device's environment on its thread pool; 507 if missing."""
    try:
        env = await envs.get(device)

        def checked() -> R:
            envs.check_device(device)
            return fn(env)

        return await env.run(checked)
    except DeviceUnavailable:
        raise _insufficient(device) from None


def _insufficient(device: str) -> web.HTTPException:
    return web.HTTPInsufficientStorage(text=f"device {device} is not available\n")
