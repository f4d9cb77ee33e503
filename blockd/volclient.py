"""A small client of the volume API, and the ``cairn volume`` command line built on it.

    cairn volume create NAME --size 10G [--chunk-size 512K] [--json]
    cairn volume list [--json]
    cairn volume show NAME_OR_ID [--json]
    cairn volume delete NAME_OR_ID

``--size`` takes K/M/G/T suffixes (powers of 1024; a bare number means GiB, as in the OpenStack
CLI). ``--json`` prints one object per volume (a list for ``list``) with ``id``, ``name``,
``size_bytes``, ``status``, ``iqn``, ``portal``, ``lun``, ``chap_user``, ``chap_secret`` and
``url`` (``iscsi://user%secret@host:port/iqn/lun``, ready for libiscsi tools and QEMU).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

__all__ = ["VolumeApiError", "VolumeClient", "flatten", "parse_size", "run_volume_cli"]

GIB = 1 << 30
TIMEOUT_S = 30.0
RESPONSE_BYTES_MAX = 16 << 20
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": GIB, "K": 1 << 10, "M": 1 << 20, "G": GIB, "T": 1 << 40}
_FLAT_KEYS = ("iqn", "portal", "lun", "chap_user", "chap_secret", "url", "exported")


class VolumeApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


def parse_size(text: str) -> int:
    """'10G' -> bytes; a bare number is GiB."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"bad size {text!r}: use a number with K, M, G or T (e.g. 10G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


class VolumeClient:
    """Synchronous calls to ``<endpoint>/volumes...``; endpoint = ``http://host:port/v3/<project>``."""

    def __init__(self, endpoint: str, token: str, timeout_s: float = TIMEOUT_S) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"volume endpoint must be an http(s) URL, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)  # noqa: S310
        req.add_header("X-Auth-Token", self.token)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                raw = resp.read(RESPONSE_BYTES_MAX)
        except urllib.error.HTTPError as e:
            raise VolumeApiError(e.code, _fault_message(e.read(RESPONSE_BYTES_MAX))) from None
        except (urllib.error.URLError, OSError) as e:
            raise VolumeApiError(
                0, f"cannot reach the volume API at {self.endpoint}: {e}"
            ) from None
        return json.loads(raw) if raw else None

    def create(self, name: str, size_bytes: int, chunk_bytes: int | None = None) -> dict[str, Any]:
        vol: dict[str, Any] = {"name": name}
        if size_bytes % GIB == 0:
            vol["size"] = size_bytes // GIB
        else:
            vol["size_bytes"] = size_bytes
        if chunk_bytes is not None:
            vol["chunk_bytes"] = chunk_bytes
        out: dict[str, Any] = self._call("POST", "/volumes", {"volume": vol})["volume"]
        return out

    def list(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._call("GET", "/volumes/detail")["volumes"]
        return out

    def find(self, name_or_id: str) -> dict[str, Any]:
        """By id, else by exact name (like the OpenStack CLI's lookup)."""
        vols = self.list()
        matches = [v for v in vols if v["id"] == name_or_id]
        matches = matches or [v for v in vols if v["name"] == name_or_id]
        if not matches:
            raise VolumeApiError(404, f"no volume with name or id {name_or_id!r}")
        if len(matches) > 1:
            raise VolumeApiError(409, f"more than one volume is named {name_or_id!r}")
        return matches[0]

    def delete(self, volume_id: str) -> None:
        self._call("DELETE", f"/volumes/{volume_id}")


def _fault_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        (inner,) = doc.values()
        return str(inner["message"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return body[:200].decode("utf-8", "replace") or "request failed"


def flatten(vol: dict[str, Any]) -> dict[str, Any]:
    """The CLI's JSON shape: the volume's own fields plus its iSCSI connection details."""
    iscsi = vol.get("cairn_iscsi") or {}
    out = {k: vol.get(k) for k in ("id", "name", "size_bytes", "size", "status", "created_at")}
    out.update({k: iscsi.get(k) for k in _FLAT_KEYS})
    return out


def _print_volume(vol: dict[str, Any], out: TextIO) -> None:
    flat = flatten(vol)
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        print(f"{key.ljust(width)}  {value}", file=out)


def _print_table(vols: list[dict[str, Any]], out: TextIO) -> None:
    rows = [("ID", "Name", "Size", "Status", "IQN")]
    rows += [
        (v["id"], v["name"], _human(v["size_bytes"]), v["status"], flatten(v)["iqn"] or "")
        for v in vols
    ]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=out)


def _human(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return f"{n}B"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cairn volume", description="block volumes")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create", help="create a volume and print how to attach it")
    c.add_argument("name")
    c.add_argument("--size", required=True, help="e.g. 10G, 512M (a bare number is GiB)")
    c.add_argument("--chunk-size", help="chunk object size, e.g. 512K (default: the service's)")
    c.add_argument("--json", action="store_true")
    ls = sub.add_parser("list", help="list volumes")
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show", help="show a volume and its iSCSI details")
    sh.add_argument("volume", help="name or id")
    sh.add_argument("--json", action="store_true")
    d = sub.add_parser("delete", help="delete a volume and its data")
    d.add_argument("volume", help="name or id")
    return ap


def run_volume_cli(
    argv: list[str],
    endpoint: str,
    token: str,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one ``cairn volume ...`` command; 0 on success, 1 on an API error, 2 on bad usage."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage or help
        return e.code if isinstance(e.code, int) else 2
    try:
        client = VolumeClient(endpoint, token)
        if args.cmd == "create":
            chunk = None if args.chunk_size is None else parse_size(args.chunk_size)
            vol = client.create(args.name, parse_size(args.size), chunk)
        elif args.cmd == "show":
            vol = client.find(args.volume)
        elif args.cmd == "list":
            vols = client.list()
            if args.json:
                print(json.dumps([flatten(v) for v in vols], indent=2), file=out)
            else:
                _print_table(vols, out)
            return 0
        else:
            client.delete(client.find(args.volume)["id"])
            return 0
    except ValueError as e:
        print(f"cairn volume: {e}", file=err)
        return 2
    except VolumeApiError as e:
        print(f"cairn volume: {e}", file=err)
        return 1
    if args.json:
        print(json.dumps(flatten(vol), indent=2), file=out)
    else:
        _print_volume(vol, out)
    return 0
