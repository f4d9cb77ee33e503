"""Body buffers a lane gives out again: a large body received directly (the parser's
`receive_direct`) lands in a buffer of its exact length, and a chunk PUT's body is the same
length every time (1 MiB and its ETag trailer). A fresh `bytearray(n)` is zeroed by Python
before the socket overwrites every byte of it (a 1 MiB memset per request, ~2.5% of a
machine busy with chunk PUTs, measured with perf); a buffer taken back after its request
needs neither the allocation nor the zeroing.

A buffer is taken back only when no view of it is alive any more (`unviewed`): a handler
that still holds one (a pool step still writing it, a request kept by a traceback) keeps the
buffer, which is then simply left to the garbage collector. Only views of a directly received
body ever leave the parser (`take_body_parts`), never the bytearray itself, so no view alive
means nothing else can read or write it.
"""

from __future__ import annotations

__all__ = ["KEPT_BUFFERS_MAX", "BodyBuffers", "unviewed"]

# How many free buffers a lane keeps (the oldest goes first): a server's chunk PUTs in flight
# at once, with room to spare. At 1 MiB each this is at most 8 MiB per lane.
KEPT_BUFFERS_MAX = 8


def unviewed(buf: bytearray) -> bool:
    """True when no buffer view (memoryview, or a C call's Py_buffer) of `buf` is alive.

    CPython refuses to resize a bytearray while views of it exist; shrinking it by one byte
    and putting the byte back never moves its memory (both stay within its allocation), so
    the test costs nothing when it succeeds and changes nothing when it fails."""
    if not buf:
        return True
    try:
        last = buf.pop()
    except BufferError:
        return False
    buf.append(last)
    return True


class BodyBuffers:
    """A lane's free body buffers (one event loop thread: no locking)."""

    def __init__(self, kept_max: int = KEPT_BUFFERS_MAX) -> None:
        self.kept_max = kept_max
        self._free: list[bytearray] = []
        self.reused = 0  # buffers given out again (a figure for tests)

    def take(self, n: int) -> bytearray:
        """A buffer of exactly `n` bytes, with whatever bytes it held (the caller overwrites
        them all before anyone reads it)."""
        free = self._free
        for i in range(len(free) - 1, -1, -1):
            if len(free[i]) == n:
                self.reused += 1
                return free.pop(i)
        return bytearray(n)

    def give_back(self, buf: bytearray) -> bool:
        """Keep `buf` for a later `take` if no view of it is alive; True if kept."""
        if not unviewed(buf):
            return False
        if len(self._free) >= self.kept_max:
            del self._free[0]
        self._free.append(buf)
        return True
