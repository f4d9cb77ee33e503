"""One exporter per volume: a lease object in the store.

The lease is the JSON object ``<RESERVED_ACCOUNT>/leases/<volume id>``::

    {"format_version": 1, "volume_id": ..., "holder": ..., "expires_at": <unix s>, "version": n}

The store offers no compare-and-swap, so acquisition is read-check-write followed, after a
settle delay, by a verify read (the window this leaves is written down in docs/block.md):

1. read the lease; if another holder's lease has not expired, refuse (:class:`LeaseHeld`);
2. write our record with ``version + 1`` and ``expires_at = now + ttl_s``;
3. wait ``settle_s`` (longer than any competitor's read-check-write may take), read again and
   keep the lease only if the record is still ours.

The holder renews every ``ttl_s / 3``. Locally the lease counts as valid until
``ttl_s - skew_margin_s`` after the start of the last successful write (monotonic clock), and
:meth:`Lease.check` is the fence run before every chunk write: an exporter whose lease lapsed
stops writing even before it learns someone else took over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from blockd.chunkstore import RESERVED_ACCOUNT
from blockd.store import ObjectStore, StoreError
from common.clock import Clock
from common.log import get_logger

__all__ = ["LEASES_CONTAINER", "LEASE_FORMAT", "Lease", "LeaseHeld", "LeaseLost", "LeaseRecord"]

log = get_logger("cairn.blockd.lease")

LEASE_FORMAT = 1
LEASES_CONTAINER = "leases"
_LEASE_BYTES_MAX = 4096


class LeaseHeld(Exception):
    """Another exporter holds a live lease on the volume."""

    def __init__(self, volume_id: str, holder: str | None, expires_at: float | None) -> None:
        super().__init__(f"volume {volume_id} is exported by {holder!r} until {expires_at}")
        self.holder = holder
        self.expires_at = expires_at


class LeaseLost(Exception):
    """We do not (or no longer) hold the lease; writes to the volume must stop."""


@dataclass(frozen=True)
class LeaseRecord:
    volume_id: str
    holder: str
    expires_at: float
    version: int
    format_version: int = LEASE_FORMAT

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, body: bytes) -> LeaseRecord:
        try:
            raw = json.loads(body)
            if not isinstance(raw, dict) or raw.get("format_version") != LEASE_FORMAT:
                raise ValueError("not a version 1 lease")
            rec = cls(
                volume_id=str(raw["volume_id"]),
                holder=str(raw["holder"]),
                expires_at=float(raw["expires_at"]),
                version=int(raw["version"]),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise StoreError(f"unreadable lease record: {e}") from None
        return rec


class Lease:
    def __init__(
        self,
        store: ObjectStore,
        volume_id: str,
        holder: str,
        *,
        clock: Clock,
        ttl_s: float = 30.0,
        settle_s: float = 2.0,
        skew_margin_s: float = 5.0,
        account: str = RESERVED_ACCOUNT,
    ) -> None:
        if not 0 <= skew_margin_s < ttl_s or settle_s < 0:
            raise ValueError("need 0 <= skew_margin_s < ttl_s and settle_s >= 0")
        self.store = store
        self.volume_id = volume_id
        self.holder = holder
        self.clock = clock
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.skew_margin_s = skew_margin_s
        self.account = account
        self._version: int | None = None
        self._valid_until_mono = 0.0
        self._renew_task: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._version is not None and self.clock.monotonic() < self._valid_until_mono

    def check(self) -> None:
        """The write fence: raise LeaseLost unless our lease is locally still valid."""
        if not self.held:
            raise LeaseLost(f"lease on volume {self.volume_id} is not held by {self.holder}")

    async def read(self) -> LeaseRecord | None:
        body = await self.store.get(self.account, LEASES_CONTAINER, self.volume_id)
        if body is None:
            return None
        if len(body) > _LEASE_BYTES_MAX:
            raise StoreError(f"lease record of {len(body)} bytes")
        return LeaseRecord.decode(body)

    async def _write(self, version: int) -> float:
        """Write our record; return the monotonic time the write started."""
        started = self.clock.monotonic()
        rec = LeaseRecord(self.volume_id, self.holder, self.clock.time() + self.ttl_s, version)
        await self.store.put(self.account, LEASES_CONTAINER, self.volume_id, rec.encode())
        return started

    async def acquire(self) -> None:
        cur = await self.read()
        if cur is not None and cur.holder != self.holder and cur.expires_at > self.clock.time():
            raise LeaseHeld(self.volume_id, cur.holder, cur.expires_at)
        version = 1 if cur is None else cur.version + 1
        started = await self._write(version)
        await self.clock.sleep(self.settle_s)
        check = await self.read()
        if check is None or check.holder != self.holder or check.version != version:
            raise LeaseHeld(
                self.volume_id,
                None if check is None else check.holder,
                None if check is None else check.expires_at,
            )
        self._version = version
        self._valid_until_mono = started + self.ttl_s - self.skew_margin_s
        log.info("lease acquired", extra={"fields": {"volume": self.volume_id, "v": version}})

    async def renew(self) -> None:
        if self._version is None:
            raise LeaseLost(f"lease on volume {self.volume_id} was never acquired")
        cur = await self.read()
        if cur is None or cur.holder != self.holder or cur.version != self._version:
            self._version = None
            raise LeaseLost(f"lease on volume {self.volume_id} was taken over")
        version = self._version + 1
        started = await self._write(version)
        self._version = version
        self._valid_until_mono = started + self.ttl_s - self.skew_margin_s

    async def release(self) -> None:
        """Give the lease up (only if it is still ours)."""
        self.stop_renewal()
        if self._version is None:
            return
        self._version = None
        cur = await self.read()
        if cur is not None and cur.holder == self.holder:
            await self.store.delete(self.account, LEASES_CONTAINER, self.volume_id)

    def start_renewal(self, on_lost: Callable[[LeaseLost], None] | None = None) -> None:
        if self._renew_task is None:
            self._renew_task = asyncio.create_task(self._renew_loop(on_lost))

    def stop_renewal(self) -> None:
        if self._renew_task is not None:
            self._renew_task.cancel()
            self._renew_task = None

    async def _renew_loop(self, on_lost: Callable[[LeaseLost], None] | None) -> None:
        while True:
            await self.clock.sleep(self.ttl_s / 3)
            try:
                await self.renew()
            except LeaseLost as e:
                log.error("lease lost", extra={"fields": {"volume": self.volume_id}})
                if on_lost is not None:
                    with contextlib.suppress(Exception):
                        on_lost(e)
                return
            except StoreError as e:  # keep trying; check() fences writes once it lapses
                log.warning("lease renewal failed", extra={"fields": {"error": repr(e)}})
