"""Where a name lives: the hash of an account/container/object path and its partition.

The hash is xxh3-128 over ``prefix + "/" + account[/container[/object]] + suffix``, where
prefix and suffix are the cluster's secret salts (so nobody outside can aim many names at one
partition). Its hex form names the object's directory on disk; its top 32 bits, shifted right
by ``32 - part_power``, are the partition.
"""

from __future__ import annotations

import xxhash

__all__ = ["hash_path", "partition_of_hash"]


def hash_path(
    prefix: str, suffix: str, account: str, container: str | None = None, obj: str | None = None
) -> str:
    """The 32-hex-digit hash of a path; container is required when obj is given."""
    if obj is not None and container is None:
        raise ValueError("an object path needs a container")
    parts = [account]
    if container is not None:
        parts.append(container)
        if obj is not None:
            parts.append(obj)
    path = "/" + "/".join(parts)
    return xxhash.xxh3_128_hexdigest((prefix + path + suffix).encode("utf-8", "surrogatepass"))


def partition_of_hash(hex_hash: str, part_power: int) -> int:
    assert 0 <= part_power <= 32
    return int(hex_hash[:8], 16) >> (32 - part_power)
