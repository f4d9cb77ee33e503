"""A bytes-per-second limiter on the injected clock (for the replicator and the auditor)."""

from __future__ import annotations

from common.clock import Clock

__all__ = ["RateLimiter"]

BURST_S = 1.0  # idle time banks at most this much allowance


class RateLimiter:
    """`await consume(n)` returns once sending `n` more bytes keeps within `bytes_per_s`.

    `bytes_per_s = 0` means unlimited. Shared by every task of one device.
    """

    def __init__(self, bytes_per_s: int, clock: Clock) -> None:
        assert bytes_per_s >= 0
        self.bytes_per_s = bytes_per_s
        self._clock = clock
        self._next_free_s = clock.monotonic()

    async def consume(self, nbytes: int) -> None:
        if self.bytes_per_s == 0 or nbytes <= 0:
            return
        now = self._clock.monotonic()
        start = max(self._next_free_s, now - BURST_S)
        self._next_free_s = start + nbytes / self.bytes_per_s
        wait_s = self._next_free_s - now
        if wait_s > 0:
            await self._clock.sleep(wait_s)
