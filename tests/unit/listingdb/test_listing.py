"""The listing algorithm against the naive reference, on an in-memory sorted source."""

from __future__ import annotations

import bisect
from collections.abc import Iterator

from hypothesis import given, settings
from hypothesis import strategies as st

from common.listingdb import ListingParams, Subdir, list_rows
from tests.unit.listingdb.reference import reference_listing

ALPHABET = ["a", "b", "/", "-", "é", "😀", "z"]


class ListSource:
    """A sorted list with seeks, counting how many rows it yields."""

    def __init__(self, names: list[str]) -> None:
        self.keys = sorted({n.encode() for n in names})
        self.yielded = 0

    def forward(self, start: bytes) -> Iterator[tuple[bytes, str]]:
        for k in self.keys[bisect.bisect_left(self.keys, start) :]:
            self.yielded += 1
            yield k, k.decode()

    def reverse(self, before: bytes | None) -> Iterator[tuple[bytes, str]]:
        end = len(self.keys) if before is None else bisect.bisect_left(self.keys, before)
        for k in reversed(self.keys[:end]):
            self.yielded += 1
            yield k, k.decode()


def _plain(items: list[str | Subdir]) -> list[str | Subdir]:
    return items


name_st = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=6).map("".join)
text_st = st.lists(st.sampled_from(ALPHABET), max_size=4).map("".join)
params_st = st.builds(
    ListingParams,
    prefix=text_st,
    delimiter=st.sampled_from(["", "/", "-", "é", "/a"]),
    marker=text_st,
    end_marker=text_st,
    limit=st.integers(min_value=0, max_value=12),
    reverse=st.booleans(),
    path=st.one_of(st.none(), text_st),
)


@settings(database=None, max_examples=400, deadline=None)
@given(names=st.lists(name_st, max_size=40), p=params_st)
def test_matches_reference(names: list[str], p: ListingParams) -> None:
    got = list_rows(ListSource(names), p)
    assert got == reference_listing(names, p)


def test_delimiter_skips_subtrees_instead_of_scanning() -> None:
    names = [f"dir{d:02d}/obj{i:04d}" for d in range(20) for i in range(500)]
    src = ListSource(names)
    got = list_rows(src, ListingParams(delimiter="/"))
    assert got == [Subdir(f"dir{d:02d}/") for d in range(20)]
    assert src.yielded == 20  # one row read per sub-tree, not 10,000

    src = ListSource(names)
    got = list_rows(src, ListingParams(delimiter="/", reverse=True, limit=3))
    assert got == [Subdir("dir19/"), Subdir("dir18/"), Subdir("dir17/")]
    assert src.yielded == 3


def test_marker_equal_to_subdir_is_not_repeated() -> None:
    names = ["a/1", "a/2", "b/1", "c"]
    got = list_rows(ListSource(names), ListingParams(delimiter="/", marker="a/"))
    assert got == [Subdir("b/"), "c"]


def test_path_lists_only_direct_children() -> None:
    names = ["p/x", "p/sub/", "p/sub/deeper", "p/y", "p", "q/z"]
    got = list_rows(ListSource(names), ListingParams(path="p"))
    assert got == ["p/sub/", "p/x", "p/y"]
    got = list_rows(ListSource(names), ListingParams(path="p", reverse=True))
    assert got == ["p/y", "p/x", "p/sub/"]


def test_code_point_order_not_utf16() -> None:
    # U+FF5E sorts before U+1F600 by code point (and by UTF-8 bytes), but after it in UTF-16.
    names = ["\U0001f600", "\uff5e", "a"]
    assert list_rows(ListSource(names), ListingParams()) == ["a", "\uff5e", "\U0001f600"]


def test_zero_limit_lists_nothing() -> None:
    assert list_rows(ListSource(["a"]), ListingParams(limit=0)) == []
