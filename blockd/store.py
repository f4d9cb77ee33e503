"""The object store interface blockd keeps volumes in, with a memory twin and a faulty twin.

blockd stores every volume chunk, volume record, the volume index and the export leases as
objects. It needs only five verbs, so it programs against this small protocol; the real
implementation (``blockd.ringstore``) goes straight to the object servers by ring with quorum.

Contract every implementation keeps:

- ``put`` returns only after a quorum of replicas has the object durably; otherwise it raises
  :class:`StoreUnavailable` and the object may or may not have been written. It answers an
  opaque version token of what it wrote, or None if the store has none.
- ``get`` and ``get_range`` take ``version=``, the token of the caller's own last put of the
  object, as a hint: a store may then answer from one replica that holds exactly that
  version (the caller is the only writer, so nothing newer exists). Results are the same.
- ``get`` returns the newest body or ``None`` when the object does not exist (404).
  ``get_range(…, start, length)`` is ``get`` of the bytes ``[start, start + length)`` only,
  with the whole object's length: ``(part, object_length)``, the part shorter (possibly
  empty) where the object ends first; ``None`` if there is no object.
- ``delete`` of a missing object is not an error; like ``put`` it raises on lost quorum.
- ``head`` returns the object's metadata headers or ``None``.
- ``post`` replaces the object's ``X-Object-Meta-*`` metadata; ``None``-object raises
  :class:`StoreNotFound`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "FaultPlan",
    "FaultyObjectStore",
    "MemoryObjectStore",
    "ObjectStore",
    "StoreError",
    "StoreNotFound",
    "StoreUnavailable",
]


class StoreError(Exception):
    """Base of the object store's failures."""


class StoreUnavailable(StoreError):
    """No quorum of replicas answered (or a fault twin said so); the operation may be retried."""


class StoreNotFound(StoreError):
    """A metadata update (``post``) named an object that does not exist."""


class ObjectStore(Protocol):
    async def put(
        self,
        account: str,
        container: str,
        obj: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str | None: ...

    async def get(
        self, account: str, container: str, obj: str, *, version: str | None = None
    ) -> bytes | None: ...

    async def get_range(
        self,
        account: str,
        container: str,
        obj: str,
        start: int,
        length: int,
        *,
        version: str | None = None,
    ) -> tuple[bytes, int] | None: ...

    async def delete(self, account: str, container: str, obj: str) -> None: ...

    async def head(self, account: str, container: str, obj: str) -> Mapping[str, str] | None: ...

    async def post(
        self, account: str, container: str, obj: str, headers: Mapping[str, str]
    ) -> None: ...


_Key = tuple[str, str, str]


def _check_range(start: int, length: int) -> None:
    if start < 0 or length <= 0:
        raise ValueError(f"bad range: start {start}, length {length}")


class MemoryObjectStore:
    """The in-memory twin: a dict of objects, optionally with a per-request latency.

    ``put_latency_s``/``get_latency_s`` (per request) and ``bytes_per_s`` (per body byte) model a
    replicated store's round trips and bandwidth for the chunk-size measurement; they are real
    ``asyncio.sleep`` calls, so leave them at 0 in unit tests.
    Counters (``puts``, ``gets``, ``deletes``, ``bytes_put``, ``bytes_got``) let tests see what
    reached the store.
    """

    def __init__(
        self, put_latency_s: float = 0.0, get_latency_s: float = 0.0, bytes_per_s: float = 0.0
    ) -> None:
        self._objects: dict[_Key, tuple[bytes, dict[str, str]]] = {}
        self.put_latency_s = put_latency_s
        self.get_latency_s = get_latency_s
        self.bytes_per_s = bytes_per_s
        self._link_free_at = 0.0
        self.puts = 0
        self.gets = 0
        self.deletes = 0
        self.bytes_put = 0
        self.bytes_got = 0

    async def put(
        self,
        account: str,
        container: str,
        obj: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str | None:
        body = bytes(data)  # a private copy: the caller may reuse its buffer
        await self._wait(self.put_latency_s, len(body))
        self._objects[(account, container, obj)] = (body, dict(headers or {}))
        self.puts += 1
        self.bytes_put += len(body)
        return None

    async def get(
        self, account: str, container: str, obj: str, *, version: str | None = None
    ) -> bytes | None:
        found = self._objects.get((account, container, obj))
        await self._wait(self.get_latency_s, 0 if found is None else len(found[0]))
        self.gets += 1
        found = self._objects.get((account, container, obj))
        if found is None:
            return None
        self.bytes_got += len(found[0])
        return found[0]

    async def get_range(
        self,
        account: str,
        container: str,
        obj: str,
        start: int,
        length: int,
        *,
        version: str | None = None,
    ) -> tuple[bytes, int] | None:
        _check_range(start, length)
        found = self._objects.get((account, container, obj))
        part = None if found is None else found[0][start : start + length]
        await self._wait(self.get_latency_s, 0 if part is None else len(part))
        self.gets += 1
        found = self._objects.get((account, container, obj))
        if found is None:
            return None
        part = found[0][start : start + length]
        self.bytes_got += len(part)
        return part, len(found[0])

    async def _wait(self, latency_s: float, nbytes: int) -> None:
        """Sleep for the request's latency plus its turn on one shared link of `bytes_per_s`."""
        delay = latency_s
        if self.bytes_per_s and nbytes:
            now = asyncio.get_running_loop().time()
            start = max(now, self._link_free_at)
            self._link_free_at = start + nbytes / self.bytes_per_s
            delay += self._link_free_at - now
        if delay:
            await asyncio.sleep(delay)

    async def delete(self, account: str, container: str, obj: str) -> None:
        await self._wait(self.put_latency_s, 0)
        self.deletes += 1
        self._objects.pop((account, container, obj), None)

    async def head(self, account: str, container: str, obj: str) -> Mapping[str, str] | None:
        found = self._objects.get((account, container, obj))
        if found is None:
            return None
        return {**found[1], "Content-Length": str(len(found[0]))}

    async def post(
        self, account: str, container: str, obj: str, headers: Mapping[str, str]
    ) -> None:
        key = (account, container, obj)
        found = self._objects.get(key)
        if found is None:
            raise StoreNotFound(f"{account}/{container}/{obj}")
        kept = {k: v for k, v in found[1].items() if not k.lower().startswith("x-object-meta-")}
        self._objects[key] = (found[0], {**kept, **headers})

    def object_names(self, account: str, container: str) -> list[str]:
        """Names stored in one container (a test helper; the protocol has no listing)."""
        return sorted(o for (a, c, o) in self._objects if a == account and c == container)


@dataclass
class FaultPlan:
    """What a FaultyObjectStore does. Rates are probabilities per request in [0, 1]."""

    put_fail_rate: float = 0.0
    get_fail_rate: float = 0.0
    delete_fail_rate: float = 0.0
    # Every request first sleeps a random time in [0, latency_max_s] (reorders concurrent ones).
    latency_max_s: float = 0.0
    # While True every request fails (a whole cluster outage).
    down: bool = False


class FaultyObjectStore:
    """A fault-injecting wrapper: fails or delays requests as ``plan`` says, drawn from ``rng``.

    A failed ``put`` may still have reached the inner store (``partial_write_rate`` of them do),
    like a real put that lost quorum after some replicas wrote it.
    """

    def __init__(
        self,
        inner: ObjectStore,
        rng: random.Random,
        plan: FaultPlan | None = None,
        partial_write_rate: float = 0.5,
    ) -> None:
        self.inner = inner
        self.rng = rng
        self.plan = plan or FaultPlan()
        self.partial_write_rate = partial_write_rate
        self.failures = 0

    async def _delay(self) -> None:
        if self.plan.latency_max_s:
            await asyncio.sleep(self.rng.uniform(0, self.plan.latency_max_s))

    def _fails(self, rate: float) -> bool:
        return self.plan.down or (rate > 0 and self.rng.random() < rate)

    def _fail(self, what: str) -> StoreUnavailable:
        self.failures += 1
        return StoreUnavailable(f"injected fault: {what}")

    async def put(
        self,
        account: str,
        container: str,
        obj: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> str | None:
        await self._delay()
        if self._fails(self.plan.put_fail_rate):
            if self.rng.random() < self.partial_write_rate:
                await self.inner.put(account, container, obj, data, headers)
            raise self._fail(f"put {container}/{obj}")
        return await self.inner.put(account, container, obj, data, headers)

    async def get(
        self, account: str, container: str, obj: str, *, version: str | None = None
    ) -> bytes | None:
        await self._delay()
        if self._fails(self.plan.get_fail_rate):
            raise self._fail(f"get {container}/{obj}")
        return await self.inner.get(account, container, obj, version=version)

    async def get_range(
        self,
        account: str,
        container: str,
        obj: str,
        start: int,
        length: int,
        *,
        version: str | None = None,
    ) -> tuple[bytes, int] | None:
        await self._delay()
        if self._fails(self.plan.get_fail_rate):
            raise self._fail(f"get {container}/{obj} range")
        return await self.inner.get_range(account, container, obj, start, length, version=version)

    async def delete(self, account: str, container: str, obj: str) -> None:
        await self._delay()
        if self._fails(self.plan.delete_fail_rate):
            raise self._fail(f"delete {container}/{obj}")
        await self.inner.delete(account, container, obj)

    async def head(self, account: str, container: str, obj: str) -> Mapping[str, str] | None:
        await self._delay()
        if self._fails(self.plan.get_fail_rate):
            raise self._fail(f"head {container}/{obj}")
        return await self.inner.head(account, container, obj)

    async def post(
        self, account: str, container: str, obj: str, headers: Mapping[str, str]
    ) -> None:
        await self._delay()
        if self._fails(self.plan.put_fail_rate):
            raise self._fail(f"post {container}/{obj}")
        await self.inner.post(account, container, obj, headers)
