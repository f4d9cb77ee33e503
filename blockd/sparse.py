"""A chunk known only in parts: the written (or fetched) granules, page by page.

The write-back cache keeps a chunk this way until it has the whole chunk. A 4 KiB write to a
512 KiB chunk then costs one 4 KiB page of cache memory, not the chunk: with random writes
spread over many chunks, the cache holds (and acknowledges) ~128 times more writes before it
must flush. The chunk's other bytes are the store's copy, merged in only when the chunk is
flushed (read-modify-write) or read whole.

- ``valid`` is a bit mask of the 512-byte granules held (all I/O is whole blocks, and a block
  is at least one granule); ``pages`` maps a page index to its bytes, allocated on first use.
- ``base_zero`` says the store has no object for this chunk: every granule not held is zero,
  so the chunk is known everywhere without a read.

Plain data and arithmetic, no I/O: the cache (blockd/cache.py) does the locking, the memory
accounting and the store traffic.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

__all__ = ["GRANULE", "PAGE", "SparseChunk", "granule_mask", "granule_runs"]

# Partial writes are tracked in granules of the smallest block size.
GRANULE = 512
# Memory is allocated (and accounted) in pages of this many bytes.
PAGE = 4096
_PAGE_GRANULES = PAGE // GRANULE
_PAGE_BITS = (1 << _PAGE_GRANULES) - 1


def granule_mask(offset: int, length: int) -> int:
    """The granules [offset, offset+length) cover, as a bit mask."""
    first, last = offset // GRANULE, -(-(offset + length) // GRANULE)
    return ((1 << (last - first)) - 1) << first


def granule_runs(mask: int) -> Iterator[tuple[int, int]]:
    """Runs of set bits as (first, end) granule indexes."""
    low = mask & -mask
    if mask and not mask & (mask + low):  # the common case: one run
        yield low.bit_length() - 1, mask.bit_length()
        return
    while mask:
        first = (mask & -mask).bit_length() - 1
        shifted = mask >> first
        length = (~shifted & (shifted + 1)).bit_length() - 1
        yield first, first + length
        mask &= ~(((1 << length) - 1) << first)


@functools.lru_cache(maxsize=16)
def _whole_mask(size: int) -> int:
    return granule_mask(0, size)


@functools.lru_cache(maxsize=4)
def _zero_chunk(size: int) -> bytes:
    return bytes(size)


class SparseChunk:
    __slots__ = ("base_zero", "held_bytes", "pages", "size", "valid")

    def __init__(self, size: int) -> None:
        self.size = size
        # A page is a bytearray, or immutable bytes (a whole-page write's own data, copied
        # into a bytearray by the first write to part of it).
        self.pages: dict[int, bytes | bytearray] = {}
        self.valid = 0
        self.base_zero = False
        # Bytes of the pages allocated (the figure the cache accounts).
        self.held_bytes = 0

    @property
    def full(self) -> bool:
        """Every granule is held (the chunk is known without the store)."""
        return self.valid == _whole_mask(self.size)

    def full_mask(self, valid: int) -> bool:
        """Whether `valid` holds every granule of this chunk."""
        return valid == _whole_mask(self.size)

    def covers(self, offset: int, length: int) -> bool:
        """Whether [offset, offset+length) is known without a store read."""
        return self.base_zero or not granule_mask(offset, length) & ~self.valid

    def missing(self, offset: int, length: int) -> int:
        """Granules of the range that only the store has (none once base_zero)."""
        return 0 if self.base_zero else granule_mask(offset, length) & ~self.valid

    def new_bytes(self, offset: int, length: int) -> int:
        """Memory a write or fill of the range would allocate (the pages it lacks)."""
        first, last = offset // PAGE, (offset + length - 1) // PAGE
        if first == last:  # the common case: within one page
            return 0 if first in self.pages else min(PAGE, self.size - first * PAGE)
        return sum(
            min(PAGE, self.size - p * PAGE) for p in range(first, last + 1) if p not in self.pages
        )

    def _page(self, p: int) -> bytearray:
        """Page `p`, writable (a page held as immutable bytes is copied first)."""
        page = self.pages.get(p)
        if page is None:
            page = self.pages[p] = bytearray(min(PAGE, self.size - p * PAGE))
            self.held_bytes += len(page)
        elif type(page) is bytes:
            page = self.pages[p] = bytearray(page)
        assert isinstance(page, bytearray)
        return page

    def _store(self, offset: int, data: memoryview | bytes) -> None:
        p, off = divmod(offset, PAGE)
        if off == 0 and len(data) == PAGE and PAGE * (p + 1) <= self.size:
            # The common case: a whole page, replacing any held one. A write's own bytes
            # object (an iSCSI PDU's data segment) is held as it is: immutable, so no copy.
            # Views of the old page (a journal record's) are encoded before any write.
            if p not in self.pages:
                self.held_bytes += PAGE
            self.pages[p] = data if type(data) is bytes else bytearray(data)
            return
        pos, end = 0, len(data)
        pages = self.pages
        while pos < end:
            p, off = divmod(offset + pos, PAGE)
            n = min(PAGE, self.size - p * PAGE)
            if off == 0 and end - pos >= n:
                # A whole page of a large write (or fill): held as its own immutable copy,
                # one step per page (a partial write to it later copies it, as above).
                if p not in pages:
                    self.held_bytes += n
                pages[p] = bytes(data[pos : pos + n])
                pos += n
                continue
            page = self._page(p)
            n = min(len(page) - off, end - pos)
            page[off : off + n] = data[pos : pos + n]
            pos += n

    def write(self, offset: int, data: memoryview | bytes) -> None:
        """Hold `data` at `offset` (whole granules), replacing what was held there."""
        self._store(offset, data)
        self.valid |= granule_mask(offset, len(data))

    def fill(self, offset: int, body: bytes) -> None:
        """Take the store's bytes of [offset, offset+len(body)) where nothing is held yet."""
        missing = self.missing(offset, len(body))
        with memoryview(body) as view:
            for start, end in granule_runs(missing):
                lo, hi = start * GRANULE, end * GRANULE
                self._store(lo, view[lo - offset : hi - offset])
        self.valid |= missing

    def _whole_pages(self, lo: int, hi: int) -> range | None:
        """The pages [lo, hi) covers exactly (from a page's start to a page's end, the short
        last page included), if every one of them is held; else None."""
        if lo % PAGE or (hi % PAGE and hi != self.size):
            return None
        found = range(lo // PAGE, -(-hi // PAGE))
        pages = self.pages
        return found if all(p in pages for p in found) else None

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of a covered range (zeros where base_zero and nothing is held)."""
        p, off = divmod(offset, PAGE)
        page = self.pages.get(p)
        if page is not None and off + length <= len(page):  # the common case: one page
            return bytes(page[off : off + length])
        whole = self._whole_pages(offset, offset + length)
        if whole is not None:  # a large read of held pages: one join, not a step per page
            pages = self.pages
            return b"".join([pages[p] for p in whole])
        out = bytearray(length)
        pos = 0
        while pos < length:
            p, off = divmod(offset + pos, PAGE)
            n = min(PAGE - off, length - pos)
            page = self.pages.get(p)
            if page is not None:
                n = min(n, len(page) - off)
                out[pos : pos + n] = page[off : off + n]
            pos += n
        return bytes(out)

    def held_runs(self, mask: int) -> list[tuple[int, bytes | bytearray | memoryview]]:
        """(offset, bytes) of the held granules of `mask`, page by page, without copies: a
        held page itself where the mask covers it whole, else views of the page. Walks the
        pages the mask touches (not every granule run: one step per page)."""
        out: list[tuple[int, bytes | bytearray | memoryview]] = []
        pages = self.pages
        while mask:
            p = ((mask & -mask).bit_length() - 1) // _PAGE_GRANULES
            shift = p * _PAGE_GRANULES
            bits = mask >> shift & _PAGE_BITS
            mask ^= bits << shift
            page = pages[p]
            if bits == _PAGE_BITS and len(page) == PAGE:
                out.append((p * PAGE, page))
                continue
            for first, end in granule_runs(bits):
                lo, hi = first * GRANULE, min(end * GRANULE, len(page))
                out.append((p * PAGE + lo, memoryview(page)[lo:hi]))
        return out

    def overlay(self, base: bytearray) -> None:
        """Copy every held granule onto `base` (the store's copy of the whole chunk)."""
        for start, end in granule_runs(self.valid):
            lo, hi = start * GRANULE, min(end * GRANULE, self.size)
            while lo < hi:
                p, off = divmod(lo, PAGE)
                page = self.pages[p]
                n = min(len(page) - off, hi - lo)
                base[lo : lo + n] = page[off : off + n]
                lo += n

    def joined(self, base: bytes | None) -> bytes:
        """:meth:`merged` as immutable bytes made by one join of the held pages and views of
        `base` (zeros for None): a single chunk-sized buffer, no step per granule, and no
        second buffer to copy it into (each fresh buffer's pages cost a kernel fault)."""
        size = self.size
        if base is not None and len(base) != size:
            raise ValueError(f"base of {len(base)} bytes for a {size}-byte chunk")
        gaps = memoryview(base if base is not None else _zero_chunk(size))
        pages = self.pages
        parts: list[bytes | bytearray | memoryview] = []
        pos = 0
        for start, end in granule_runs(self.valid):
            lo, hi = start * GRANULE, min(end * GRANULE, size)
            if lo > pos:
                parts.append(gaps[pos:lo])
            while lo < hi:
                p, off = divmod(lo, PAGE)
                page = pages[p]
                n = min(len(page) - off, hi - lo)
                parts.append(page if n == len(page) else memoryview(page)[off : off + n])
                lo += n
            pos = hi
        if pos < size:
            parts.append(gaps[pos:size])
        return b"".join(parts)

    def merged(self, base: bytes | None) -> bytearray:
        """The whole chunk: `base` (the store's copy, None for zeros) under the held granules."""
        out = bytearray(base) if base is not None else bytearray(self.size)
        self.overlay(out)
        return out
