"""A volume's write journal: small writes made durable as appended records, not chunk rewrites.

Flushing a 4 KiB write into a 512 KiB chunk object means reading the chunk and writing it
whole to every replica. The cache instead appends the granules written since the last flush,
of every partly written chunk of the volume at once, as one *record* object; the chunks are
rewritten later, in a *checkpoint*, many writes per chunk rewrite. docs/block.md ("Journal")
has the design and the rules that keep replay correct; this module is the format and the
record bookkeeping, with no knowledge of the cache.

Objects, in the volume's chunk container (names chunks can never take):

- ``.journal.<seq as 16 digits>``: record ``seq``. Version 1::

      magic b"cairn-jrnl\\0\\0" (12 bytes) | version u32 | seq u64 | capture u64 |
      body length u64 | body | xxh3-64 u64

  integers big-endian; the body is msgpack: a list of ``[chunk index, [[offset, bytes], ...]]``
  (granule-aligned runs within the chunk); the checksum covers everything before it.
  ``capture`` is the capture id of the record (see ``ChunkStore.next_capture``): a chunk
  object written with a newer capture id already holds everything the record has for it.
- ``.journal``: the state, ``low``: every record below ``low`` is merged into the chunks.
  Version 1: magic b"cairn-jstat\\0" | version u32 | low u64 | crc32 u32.

Records are numbered without gaps: a failed append is retried under the same number (the
newer object wins), so replay reads ``low``, ``low+1``, ... up to the first missing one.
"""

from __future__ import annotations

import asyncio
import functools
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgpack
import xxhash

from blockd.store import ObjectStore, StoreError
from common.clock import Clock, SystemClock

__all__ = [
    "JOURNAL_FORMAT",
    "Journal",
    "JournalCorrupt",
    "Record",
    "decode_record",
    "decode_state",
    "encode_record",
    "encode_state",
    "record_name",
]

JOURNAL_FORMAT = 1
STATE_OBJECT = ".journal"
_REC_MAGIC = b"cairn-jrnl\x00\x00"
_REC_HEAD = struct.Struct(">12sIQQQ")
_REC_SUM = struct.Struct(">Q")
_STATE_MAGIC = b"cairn-jstat\x00"
_STATE = struct.Struct(">12sIQ")
_CRC = struct.Struct(">I")
# A replay reads at most this many records (far more than a journal_bytes_max allows).
RECORDS_MAX = 1 << 20

# (offset in the chunk, bytes); a record being written may hold views of the cache's pages
Run = tuple[int, bytes | bytearray | memoryview]
RecordEntry = tuple[int, list[Run]]  # (chunk index, runs)


class JournalCorrupt(StoreError):
    """A journal object that does not decode (bad magic, version, length or checksum)."""


@dataclass(frozen=True)
class Record:
    seq: int
    capture: int
    entries: list[RecordEntry]


def record_name(seq: int) -> str:
    return f"{STATE_OBJECT}.{seq:016d}"


def encode_record(seq: int, capture: int, entries: Sequence[RecordEntry]) -> bytes:
    # The body is framed here (the same bytes msgpack's packer writes for this structure:
    # tests/unit/blockd/test_journal_encode.py) and the record is one join of the framing and
    # views of the data: the written bytes are copied once, into one fresh buffer. Packing into
    # msgpack's buffer first and then joining it with the head cost a second copy and a second
    # buffer of the record's size, whose pages the kernel faults in one by one (together ~4 us
    # of blockd's CPU per 4 KiB written, of 60: docs/iscsi.md, "Sixth pass").
    parts: list[bytes | bytearray | memoryview] = [b"", _array_head(len(entries))]
    append = parts.append
    for idx, runs in entries:
        append(_entry_head(idx, len(runs)))
        for off, data in runs:
            append(_run_head(off, len(data)))
            append(data)
    body_len = sum(map(len, parts))
    parts[0] = _REC_HEAD.pack(_REC_MAGIC, JOURNAL_FORMAT, seq, capture, body_len)
    digest = xxhash.xxh3_64()
    update = digest.update
    for part in parts:
        update(part)
    append(_REC_SUM.pack(digest.intdigest()))
    return b"".join(parts)


def _uint(n: int) -> bytes:
    """msgpack's shortest form of a non-negative integer."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return b"\xcc" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xcd" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


def _array_head(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _bin_head(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _entry_head(idx: int, nruns: int) -> bytes:
    """[chunk index, [ (the head of the entry's list of runs)"""
    return b"\x92" + _uint(idx) + _array_head(nruns)


@functools.lru_cache(maxsize=4096)
def _run_head(off: int, length: int) -> bytes:
    """[offset, bin header (the data follows); runs repeat offsets and lengths a lot"""
    return b"\x92" + _uint(off) + _bin_head(length)


def decode_record(data: bytes) -> Record:
    if len(data) < _REC_HEAD.size + _REC_SUM.size:
        raise JournalCorrupt(f"journal record of {len(data)} bytes is too short")
    (checksum,) = _REC_SUM.unpack(data[-_REC_SUM.size :])
    if xxhash.xxh3_64_intdigest(data[: -_REC_SUM.size]) != checksum:
        raise JournalCorrupt("journal record checksum mismatch")
    magic, version, seq, capture, body_len = _REC_HEAD.unpack(data[: _REC_HEAD.size])
    if magic != _REC_MAGIC or version != JOURNAL_FORMAT:
        raise JournalCorrupt(f"not a version {JOURNAL_FORMAT} journal record")
    if _REC_HEAD.size + body_len + _REC_SUM.size != len(data):
        raise JournalCorrupt("journal record length mismatch")
    try:
        raw = msgpack.unpackb(data[_REC_HEAD.size : -_REC_SUM.size])
        entries: list[RecordEntry] = [
            (int(idx), [(int(off), bytes(b)) for off, b in runs]) for idx, runs in raw
        ]
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise JournalCorrupt(f"journal record body does not decode: {e}") from e
    return Record(seq, capture, entries)


def encode_state(low: int) -> bytes:
    body = _STATE.pack(_STATE_MAGIC, JOURNAL_FORMAT, low)
    return body + _CRC.pack(zlib.crc32(body))


def decode_state(data: bytes) -> int:
    if len(data) != _STATE.size + _CRC.size:
        raise JournalCorrupt(f"journal state of {len(data)} bytes")
    body, (crc,) = data[: _STATE.size], _CRC.unpack(data[_STATE.size :])
    if zlib.crc32(body) != crc:
        raise JournalCorrupt("journal state checksum mismatch")
    magic, version, low = _STATE.unpack(body)
    if magic != _STATE_MAGIC or version != JOURNAL_FORMAT:
        raise JournalCorrupt(f"not a version {JOURNAL_FORMAT} journal state")
    return int(low)


class Journal:
    """The records of one volume: what is live (``low`` up to ``next_seq``) and their sizes.

    ``append`` and ``retire`` are called by the cache, ``append`` under ``append_lock`` (one
    record in flight per volume, so numbers stay gapless); ``fence`` runs before every write.
    """

    def __init__(
        self,
        store: ObjectStore,
        account: str,
        container: str,
        *,
        fence: Callable[[], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.account = account
        self.container = container
        self.fence = fence
        self.low = 0
        self.next_seq = 0
        self.append_lock = asyncio.Lock()
        self.checkpoint_lock = asyncio.Lock()
        self._sizes: dict[int, int] = {}  # live record -> its bytes
        # Chunks with data in a live record -> (newest such record, its capture id).
        self.chunks_live: dict[int, tuple[int, int]] = {}
        # Of those chunks, the capture id of our last put of the chunk object (none: older
        # than every live record of it, or never put).
        self._put_captures: dict[int, int] = {}
        self._clock = clock or SystemClock()
        self.last_append_s = self._clock.monotonic()

    @property
    def live_bytes(self) -> int:
        return sum(self._sizes.values())

    @property
    def live(self) -> bool:
        return self.next_seq > self.low

    def chunk_stale(self, idx: int) -> bool:
        """The live records hold newer data for this chunk than its object."""
        live = self.chunks_live.get(idx)
        return live is not None and live[1] > self._put_captures.get(idx, 0)

    def note_put(self, idx: int, capture: int) -> None:
        """The chunk object was put with this capture id (only remembered while it matters)."""
        if idx in self.chunks_live:
            self._put_captures[idx] = capture

    def _note(self, seq: int, capture: int, idxs: Iterable[int]) -> None:
        for idx in idxs:
            self.chunks_live[idx] = (seq, capture)

    async def load(self) -> list[Record]:
        """Read the state and every live record (in order); numbering continues after them."""
        raw = await self.store.get(self.account, self.container, STATE_OBJECT)
        self.low = decode_state(raw) if raw is not None else 0
        records = []
        seq = self.low
        while seq - self.low < RECORDS_MAX:
            data = await self.store.get(self.account, self.container, record_name(seq))
            if data is None:
                break
            rec = decode_record(data)
            if rec.seq != seq:
                raise JournalCorrupt(f"{record_name(seq)} holds record {rec.seq}")
            records.append(rec)
            self._sizes[seq] = len(data)
            self._note(rec.seq, rec.capture, (idx for idx, _ in rec.entries))
            seq += 1
        self.next_seq = seq
        return records

    async def append(self, capture: int, entries: Sequence[RecordEntry]) -> int:
        """Store one record under the next number (quorum, durable); returns its number."""
        assert self.append_lock.locked()
        seq = self.next_seq
        data = encode_record(seq, capture, entries)
        if self.fence is not None:
            self.fence()
        # Noted even if the put fails: a failed put may have reached a replica, and replay
        # would then find the record; its chunks must be treated as journaled until retired.
        self._note(seq, capture, (idx for idx, _ in entries))
        await self.store.put(self.account, self.container, record_name(seq), data)
        self._sizes[seq] = len(data)
        self.next_seq = seq + 1
        self.last_append_s = self._clock.monotonic()
        return seq

    async def remove(self) -> None:
        """Delete the live records and the state (the volume is being deleted)."""
        raw = await self.store.get(self.account, self.container, STATE_OBJECT)
        seq = decode_state(raw) if raw is not None else 0
        while await self.store.head(self.account, self.container, record_name(seq)) is not None:
            await self.store.delete(self.account, self.container, record_name(seq))
            seq += 1
        await self.store.delete(self.account, self.container, STATE_OBJECT)

    async def retire(self, upto: int) -> None:
        """Records below `upto` are merged into the chunks: record that, then delete them."""
        if upto <= self.low:
            return
        if self.fence is not None:
            self.fence()
        await self.store.put(self.account, self.container, STATE_OBJECT, encode_state(upto))
        old, self.low = self.low, upto
        for seq in range(old, upto):
            self._sizes.pop(seq, None)
        for idx in [i for i, (seq, _) in self.chunks_live.items() if seq < upto]:
            del self.chunks_live[idx]
            self._put_captures.pop(idx, None)
        # Left-overs (a failed delete) are below `low`: never replayed, only space.
        await asyncio.gather(
            *(
                self.store.delete(self.account, self.container, record_name(seq))
                for seq in range(old, upto)
            ),
            return_exceptions=True,
        )
