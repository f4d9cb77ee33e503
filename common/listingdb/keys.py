"""Key layout of the listing databases and ordered iteration over a database's rows.

Row keys are ``dbid (8 bytes, big-endian) + name key``. The name key is the row name's UTF-8
bytes, so LMDB's byte order is the listing order (UTF-8 byte order is code point order, the
same order Swift's SQLite listings use). LMDB keys are limited to 511 bytes while object names
may be 1,024, so a name longer than ``NAME_KEY_BYTES_MAX`` is stored under
``name[:NAME_KEY_BYTES_MAX] + 0xFF + xxh3_128(name)``: a "long-name group". 0xFF never occurs
in UTF-8, so a group sorts right after the short name equal to its head and before any other
name; inside a group the order is by hash, so readers gather a group and sort it by the full
name (kept in the row value) before yielding. Groups only form from names sharing their
first 400 bytes, so they are small in practice.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import xxhash

__all__ = [
    "DBID_BYTES",
    "GROUP_MARK",
    "NAME_KEY_BYTES_MAX",
    "dbid_prefix",
    "info_key",
    "iter_forward",
    "iter_reverse",
    "name_key",
    "parse_info_key",
    "seq_key",
]

DBID_BYTES = 8
NAME_KEY_BYTES_MAX = 400
GROUP_MARK = b"\xff"
_HASH_BYTES = 16
_GROUP_END = GROUP_MARK + b"\xff" * (_HASH_BYTES + 1)
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")

# A function that extracts the full name from a raw row value of a long-name group row.
NameOf = Callable[[bytes], bytes]
Cursor = Any  # lmdb.Cursor: the lmdb package ships no type hints


def dbid_prefix(dbid: int) -> bytes:
    return _U64.pack(dbid)


def name_key(name: bytes) -> bytes:
    """The key suffix of a row name (see the module docstring)."""
    if len(name) <= NAME_KEY_BYTES_MAX:
        return name
    digest = xxhash.xxh3_128_digest(name)
    return name[:NAME_KEY_BYTES_MAX] + GROUP_MARK + digest


def is_group_key(nkey: bytes) -> bool:
    return len(nkey) > NAME_KEY_BYTES_MAX


def seq_key(dbid: int, seq: int) -> bytes:
    return _U64.pack(dbid) + _U64.pack(seq)


def info_key(partition: int, hash_hex: str) -> bytes:
    """Key of a database's info record: partition (4 bytes BE) + the 16-byte path hash."""
    try:
        raw = bytes.fromhex(hash_hex)
    except ValueError:
        raw = b""
    if len(raw) != _HASH_BYTES:
        raise ValueError(f"a path hash has 32 hex digits, got {hash_hex!r}")
    return _U32.pack(partition) + raw


def parse_info_key(key: bytes) -> tuple[int, str]:
    return _U32.unpack(key[:4])[0], key[4:].hex()


def _read_group(cur: Cursor, dbp: bytes, head: bytes, name_of: NameOf) -> list[tuple[bytes, bytes]]:
    """All rows of the long-name group with this head, sorted by full name."""
    gprefix = dbp + head + GROUP_MARK
    rows: list[tuple[bytes, bytes]] = []
    if cur.set_range(gprefix):
        for key, value in cur:
            if not key.startswith(gprefix):
                break
            rows.append((name_of(value), value))
    rows.sort()
    return rows


def iter_forward(
    cur: Cursor, dbid: int, start: bytes, name_of: NameOf
) -> Iterator[tuple[bytes, bytes]]:
    """Rows with name >= start, ascending, as (name, raw value)."""
    dbp = dbid_prefix(dbid)
    if not cur.set_range(dbp + start[:NAME_KEY_BYTES_MAX]):
        return
    while True:
        key = cur.key()
        if not key.startswith(dbp):
            return
        nkey = key[DBID_BYTES:]
        if not is_group_key(nkey):
            if nkey >= start:
                yield nkey, cur.value()
            if not cur.next():
                return
            continue
        head = nkey[:NAME_KEY_BYTES_MAX]
        for name, value in _read_group(cur, dbp, head, name_of):
            if name >= start:
                yield name, value
        if not cur.set_range(dbp + head + _GROUP_END):
            return


def iter_reverse(
    cur: Cursor, dbid: int, before: bytes | None, name_of: NameOf
) -> Iterator[tuple[bytes, bytes]]:
    """Rows with name < before (all rows when None), descending, as (name, raw value)."""
    dbp = dbid_prefix(dbid)
    if before is None:
        bound = _U64.pack(dbid + 1)
    elif len(before) <= NAME_KEY_BYTES_MAX:
        bound = dbp + before  # keys below it are exactly the names below `before`
    else:
        bound = dbp + before[:NAME_KEY_BYTES_MAX] + _GROUP_END  # include its group, then filter
    positioned = cur.prev() if cur.set_range(bound) else cur.last()
    if not positioned:
        return
    while True:
        key = cur.key()
        if not key.startswith(dbp):
            return
        nkey = key[DBID_BYTES:]
        if not is_group_key(nkey):
            if before is None or nkey < before:
                yield nkey, cur.value()
            if not cur.prev():
                return
            continue
        head = nkey[:NAME_KEY_BYTES_MAX]
        for name, value in reversed(_read_group(cur, dbp, head, name_of)):
            if before is None or name < before:
                yield name, value
        if not cur.set_range(dbp + head + GROUP_MARK) or not cur.prev():
            return
