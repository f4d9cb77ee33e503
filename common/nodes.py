"""Choosing storage nodes: error limiting and the primaries-then-handoffs order.

Error limiting: a storage node that keeps failing is skipped for a while.

Keyed by (ip, port, device). After `limit` errors within `interval_s`, the node is skipped
until `interval_s` has passed since its last error; a 507 limits the device at once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from common.clock import Clock

__all__ = ["ErrorLimiter", "NodeKey", "NodeLike", "iter_nodes", "node_key"]

NodeKey = tuple[str, int, str]


class NodeLike(Protocol):
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def device(self) -> str: ...


N = TypeVar("N", bound=NodeLike)


class RingLike(Protocol[N]):
    @property
    def replica_count(self) -> float: ...
    def get_part_nodes(self, part: int) -> list[N]: ...
    def get_more_nodes(self, part: int) -> Iterator[N]: ...


def node_key(node: NodeLike) -> NodeKey:
    return (node.ip, node.port, node.device)


@dataclass
class _NodeErrors:
    count: int = 0
    last_s: float = 0.0


@dataclass
class ErrorLimiter:
    clock: Clock
    limit: int = 10
    interval_s: float = 60.0
    _errors: dict[NodeKey, _NodeErrors] = field(default_factory=dict)

    def error(self, key: NodeKey) -> None:
        now = self.clock.monotonic()
        e = self._errors.setdefault(key, _NodeErrors())
        if now - e.last_s > self.interval_s:
            e.count = 0
        e.count += 1
        e.last_s = now

    def limit_now(self, key: NodeKey) -> None:
        """Skip this node for the interval (used for 507 Insufficient Storage)."""
        e = self._errors.setdefault(key, _NodeErrors())
        e.count = max(e.count, self.limit + 1)
        e.last_s = self.clock.monotonic()

    def is_limited(self, key: NodeKey) -> bool:
        e = self._errors.get(key)
        if e is None:
            return False
        if self.clock.monotonic() - e.last_s > self.interval_s:
            del self._errors[key]
            return False
        return e.count > self.limit

    def limited_count(self) -> int:
        return sum(1 for k in list(self._errors) if self.is_limited(k))


def iter_nodes(
    ring: RingLike[N],
    part: int,
    limiter: ErrorLimiter,
    node_count: int | None = None,
    *,
    shuffle: bool = False,
) -> Iterator[N]:
    """Primaries that are not error-limited, then handoffs; `node_count` nodes at most.

    The default count is 2 x replicas (Swift's request_node_count); a skipped primary lets
    one more handoff in. Error-limited nodes come last, as a last resort: a node that came
    back is tried again before a request fails for want of nodes. `shuffle` puts the
    primaries in a random order (as Swift's proxy does for reads): a ring's first replica can
    sit on the same node for every partition, and reads that always start there load one
    server while the others idle. Handoffs keep the ring's order.
    """
    primaries = ring.get_part_nodes(part)
    if shuffle and len(primaries) > 1:
        primaries = random.sample(primaries, len(primaries))
    budget = len(primaries) * 2 if node_count is None else node_count
    given = 0
    limited: list[N] = []
    for node in primaries:
        if limiter.is_limited(node_key(node)):
            limited.append(node)
        else:
            given += 1
            yield node
    for node in ring.get_more_nodes(part):
        if given >= budget:
            break
        if limiter.is_limited(node_key(node)):
            limited.append(node)
            continue
        given += 1
        yield node
    yield from limited
