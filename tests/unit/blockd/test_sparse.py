"""SparseChunk: a chunk held in parts, page by page (no I/O, no cache)."""

from __future__ import annotations

import random

import pytest

from blockd.sparse import GRANULE, PAGE, SparseChunk, granule_mask, granule_runs

SIZE = 8 * PAGE + 3 * GRANULE  # a short last page


def test_granule_masks_and_runs():
    assert granule_mask(0, GRANULE) == 0b1
    assert granule_mask(2 * GRANULE, 3 * GRANULE) == 0b11100
    assert list(granule_runs(0)) == []
    assert list(granule_runs(0b1_1100_1101)) == [(0, 1), (2, 4), (6, 9)]
    big = granule_mask(5 * GRANULE, 1000 * GRANULE) | granule_mask(2000 * GRANULE, GRANULE)
    assert list(granule_runs(big)) == [(5, 1005), (2000, 2001)]


def test_a_small_write_holds_one_page_not_the_chunk():
    c = SparseChunk(SIZE)
    assert c.new_bytes(3 * PAGE, PAGE) == PAGE
    c.write(3 * PAGE, b"a" * PAGE)
    assert c.held_bytes == PAGE
    assert c.new_bytes(3 * PAGE, PAGE) == 0
    assert c.new_bytes(7 * PAGE, 2 * PAGE) == PAGE + 3 * GRANULE  # the short last page
    assert c.covers(3 * PAGE, PAGE) and not c.covers(2 * PAGE, 2 * PAGE)
    assert c.read(3 * PAGE + GRANULE, GRANULE) == b"a" * GRANULE
    assert not c.full


def test_writes_across_pages_and_the_short_last_page():
    c = SparseChunk(SIZE)
    data = bytes(random.Random(7).randbytes(PAGE + 2 * GRANULE))
    c.write(PAGE - GRANULE, data)  # straddles pages 0, 1 and 2
    assert sorted(c.pages) == [0, 1, 2]
    assert c.read(PAGE - GRANULE, len(data)) == data
    tail = b"t" * (3 * GRANULE)
    c.write(8 * PAGE, tail)
    assert len(c.pages[8]) == 3 * GRANULE and c.held_bytes == 3 * PAGE + 3 * GRANULE
    assert c.read(8 * PAGE, 3 * GRANULE) == tail


def test_fill_keeps_what_was_written_and_merged_lays_it_over_the_store_copy():
    c = SparseChunk(SIZE)
    c.write(2 * GRANULE, b"w" * GRANULE)
    store = bytes([0x11]) * SIZE
    c.fill(0, store[: 4 * GRANULE])  # the written granule is not overwritten by the store's
    assert c.read(0, 4 * GRANULE) == b"\x11" * 2 * GRANULE + b"w" * GRANULE + b"\x11" * GRANULE
    whole = c.merged(store)
    assert whole[: 4 * GRANULE] == c.read(0, 4 * GRANULE)
    assert whole[4 * GRANULE :] == store[4 * GRANULE :]
    zeros_base = c.merged(None)
    assert zeros_base[2 * GRANULE : 3 * GRANULE] == b"w" * GRANULE
    assert zeros_base.count(0) == SIZE - 4 * GRANULE  # filled granules are held too


def test_base_zero_covers_everything_and_reads_zeros_where_nothing_is_held():
    c = SparseChunk(SIZE)
    c.write(PAGE, b"x" * GRANULE)
    assert not c.covers(0, SIZE)
    c.base_zero = True
    assert c.covers(0, SIZE) and c.missing(0, SIZE) == 0
    got = c.read(PAGE - GRANULE, 3 * GRANULE)
    assert got == bytes(GRANULE) + b"x" * GRANULE + bytes(GRANULE)


def test_written_all_over_is_full_and_matches_a_model():
    rng = random.Random(3)
    c = SparseChunk(SIZE)
    model = bytearray(SIZE)
    granules = SIZE // GRANULE
    while not c.full:
        first = rng.randrange(granules)
        n = rng.randint(1, min(20, granules - first))
        data = rng.randbytes(n * GRANULE)
        c.write(first * GRANULE, data)
        model[first * GRANULE : (first + n) * GRANULE] = data
        assert c.read(first * GRANULE, n * GRANULE) == data
    assert c.merged(None) == model
    assert c.read(0, SIZE) == bytes(model)


def test_a_whole_page_of_bytes_is_held_as_is_and_copied_on_a_partial_write():
    c = SparseChunk(SIZE)
    data = bytes(random.Random(5).randbytes(PAGE))
    c.write(2 * PAGE, data)
    assert c.pages[2] is data and c.held_bytes == PAGE  # no copy
    c.write(2 * PAGE + GRANULE, b"p" * GRANULE)  # part of that page: copied, then changed
    assert c.pages[2] is not data and c.held_bytes == PAGE
    assert c.read(2 * PAGE, PAGE) == data[:GRANULE] + b"p" * GRANULE + data[2 * GRANULE :]
    mutable = bytearray(b"m" * PAGE)
    c.write(4 * PAGE, mutable)  # a buffer the caller may change again: copied
    mutable[:] = b"x" * PAGE
    assert c.read(4 * PAGE, PAGE) == b"m" * PAGE
    c.write(2 * PAGE, memoryview(b"w" * PAGE))  # a whole page over a held one: replaced
    assert c.read(2 * PAGE, PAGE) == b"w" * PAGE and c.held_bytes == 2 * PAGE


def test_page_writes_of_every_kind_match_a_model():
    rng = random.Random(11)
    c = SparseChunk(SIZE)
    model = bytearray(SIZE)
    pages = SIZE // PAGE  # whole pages only (the last is short)
    for _ in range(300):
        kind = rng.randrange(4)
        if kind < 2:  # a whole page, as bytes or as a view
            p = rng.randrange(pages)
            data = rng.randbytes(PAGE)
            c.write(p * PAGE, data if kind == 0 else memoryview(bytearray(data)))
            model[p * PAGE : (p + 1) * PAGE] = data
        elif kind == 2:  # granules anywhere
            first = rng.randrange(SIZE // GRANULE)
            n = rng.randint(1, min(12, SIZE // GRANULE - first))
            data = rng.randbytes(n * GRANULE)
            c.write(first * GRANULE, data)
            model[first * GRANULE : (first + n) * GRANULE] = data
        else:  # the store's copy fills what is not held
            store = rng.randbytes(SIZE)
            held = c.valid
            c.fill(0, store)
            for g in range(SIZE // GRANULE):
                if not held >> g & 1:
                    model[g * GRANULE : (g + 1) * GRANULE] = store[g * GRANULE : (g + 1) * GRANULE]
        for g in range(SIZE // GRANULE):
            if c.valid >> g & 1:
                assert c.read(g * GRANULE, GRANULE) == model[g * GRANULE : (g + 1) * GRANULE]
    assert c.full and c.merged(None) == model


def test_granule_runs_match_a_bit_by_bit_model():
    rng = random.Random(2)
    for _ in range(500):
        width = rng.randint(1, 300)
        mask = (
            rng.getrandbits(width)
            if rng.random() < 0.5
            else granule_mask(rng.randrange(width) * GRANULE, rng.randint(1, 40) * GRANULE)
        )
        expected = []
        g = 0
        while g < mask.bit_length():
            if mask >> g & 1:
                start = g
                while mask >> g & 1:
                    g += 1
                expected.append((start, g))
            else:
                g += 1
        assert list(granule_runs(mask)) == expected


def test_held_runs_are_the_masked_granules_page_by_page():
    rng = random.Random(23)
    for _ in range(40):
        c = SparseChunk(SIZE)
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.5:
                c.write(rng.randrange(SIZE // PAGE) * PAGE, rng.randbytes(PAGE))
            else:
                first = rng.randrange(SIZE // GRANULE)
                n = rng.randint(1, min(20, SIZE // GRANULE - first))
                c.write(first * GRANULE, rng.randbytes(n * GRANULE))
        mask = c.valid & (rng.getrandbits(SIZE // GRANULE) if rng.random() < 0.5 else -1)
        runs = c.held_runs(mask)
        covered = 0
        for offset, data in runs:
            assert offset % GRANULE == 0 and offset // PAGE == (offset + len(data) - 1) // PAGE
            assert bytes(data) == c.read(offset, len(data))
            piece = granule_mask(offset, len(data))
            assert not covered & piece
            covered |= piece
        assert covered == mask
        assert [o for o, _ in runs] == sorted(o for o, _ in runs)
    whole = SparseChunk(SIZE)
    page = rng.randbytes(PAGE)
    whole.write(PAGE, page)
    assert whole.held_runs(granule_mask(PAGE, PAGE)) == [(PAGE, page)]
    assert whole.held_runs(granule_mask(PAGE, PAGE))[0][1] is page  # the page itself


def test_large_writes_reads_and_joins_match_a_model():
    """Writes and fills spanning many pages (held page by page as copies), large reads of held
    pages and `joined` (the whole chunk in one buffer) agree with a plain bytearray model."""
    rng = random.Random(17)
    size = 40 * PAGE + 5 * GRANULE  # a short last page
    for _ in range(40):
        c = SparseChunk(size)
        model = bytearray(size)
        base = rng.randbytes(size)
        for _ in range(rng.randint(1, 6)):
            first = rng.randrange(size // GRANULE)
            n = rng.randint(1, size // GRANULE - first)
            data = bytearray(rng.randbytes(n * GRANULE))
            lo, hi = first * GRANULE, first * GRANULE + len(data)
            c.write(lo, data if rng.random() < 0.5 else bytes(data))
            model[lo:hi] = data
            data[:] = bytes(len(data))  # the caller's buffer changes: the chunk must not
            assert c.read(lo, hi - lo) == model[lo:hi]
        expected = bytearray(base)
        for g in range(size // GRANULE):
            if c.valid >> g & 1:
                expected[g * GRANULE : (g + 1) * GRANULE] = model[g * GRANULE : (g + 1) * GRANULE]
        assert c.joined(base) == expected == c.merged(base)
        zero_based = bytearray(size)
        c.overlay(zero_based)
        assert c.joined(None) == zero_based
        c.fill(0, base)  # the rest from the store: now whole
        assert c.full and c.read(0, size) == expected and c.joined(None) == expected


def test_joined_refuses_a_base_of_the_wrong_length():
    c = SparseChunk(SIZE)
    with pytest.raises(ValueError, match="base of"):
        c.joined(bytes(SIZE - 1))
