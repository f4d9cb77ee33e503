"""Environment management and record formats."""

from __future__ import annotations

from pathlib import Path

import lmdb
import msgpack
import pytest

from common.listingdb import EnvOptions, acquire_env, release_env
from common.listingdb.env import FormatError, ListingEnv
from common.listingdb.keys import NAME_KEY_BYTES_MAX, info_key, name_key, parse_info_key
from common.listingdb.records import DbInfo, decode_info, encode_info


def test_env_is_shared_and_reference_counted(tmp_path: Path) -> None:
    path = tmp_path / "containers.lmdb"
    one = acquire_env(path, EnvOptions(1 << 24, threads=1))
    two = acquire_env(path, EnvOptions(1 << 24, threads=1))
    assert one is two
    release_env(one)
    with one.env.begin() as txn:  # still open: one reference left
        assert txn.get(b"format_version", db=one.meta) == msgpack.packb(1)
    release_env(two)
    three = acquire_env(path, EnvOptions(1 << 24, threads=1))
    assert three is not one
    release_env(three)


def test_unknown_format_version_refuses_to_open(tmp_path: Path) -> None:
    path = tmp_path / "accounts.lmdb"
    path.mkdir()
    raw = lmdb.open(str(path), max_dbs=8, map_size=1 << 24)
    meta = raw.open_db(b"meta")
    with raw.begin(write=True, db=meta) as txn:
        txn.put(b"format_version", msgpack.packb(99))
    raw.close()
    with pytest.raises(FormatError, match="format 99"):
        ListingEnv(path, EnvOptions(1 << 24, threads=1))


def test_name_keys_fit_lmdb_and_keep_order() -> None:
    short = "a" * NAME_KEY_BYTES_MAX
    long1, long2 = short + "b", short + "c" * 600
    keys = [name_key(n.encode()) for n in (short, long1, long2)]
    assert all(len(k) + 8 <= 511 for k in keys)
    assert keys[0] < keys[1] and keys[0] < keys[2]
    assert name_key(b"a/b") == b"a/b"


def test_info_key_round_trip_and_rejects_bad_hash() -> None:
    key = info_key(12, "0f" * 16)
    assert parse_info_key(key) == (12, "0f" * 16)
    with pytest.raises(ValueError, match="32 hex digits"):
        info_key(1, "abc")


def test_info_record_round_trip_and_version_check() -> None:
    info = DbInfo(
        5,
        "a",
        "c",
        "0000000001.00000",
        "0000000001.00000",
        stats={"object_count": 2},
        metadata={"X-Container-Meta-A": ("1", "0000000001.00000")},
        extra={"k": [1]},
    )
    assert decode_info(encode_info(info)) == info
    with pytest.raises(ValueError, match="version"):
        decode_info(msgpack.packb({"v": 2}))
