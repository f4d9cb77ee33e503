from hypothesis import given
from hypothesis import strategies as st

from common.timestamps import MAX_OFFSET, Timestamp, TimestampError


def test_normal_and_internal_forms():
    t = Timestamp.from_float(1700000000.123456)
    assert t.normal == "1700000000.12346"
    assert t.internal == "1700000000.12346"
    assert t.with_offset(10).internal == "1700000000.12346_000000000000000a"


def test_offset_orders_after_same_time():
    t = Timestamp.parse("1700000000.00001")
    assert t < t.with_offset(1) < Timestamp.parse("1700000000.00002")


def test_parse_rejects_garbage():
    for bad in ["", "abc", "1.2.3", "-1", "1700000000.00001_xyz", "12345678901.0"]:
        try:
            Timestamp.parse(bad)
        except TimestampError:
            continue
        raise AssertionError(f"{bad!r} parsed")


@given(st.integers(0, 9_999_999_999_99999), st.integers(0, MAX_OFFSET))
def test_round_trip_and_ordering(ticks, offset):
    t = Timestamp(ticks, offset)
    assert Timestamp.parse(t.internal) == t
    assert Timestamp.parse(t.normal) == Timestamp(ticks)
    if ticks < 9_999_999_999_99999:
        assert Timestamp.parse(t.internal) < Timestamp(ticks + 1)


def test_http_date_rounds_up_to_the_second():
    # 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT; asked twice (the second answer remembered)
    for _ in range(2):
        assert Timestamp.parse("1700000000.00000").http_date == "Tue, 14 Nov 2023 22:13:20 GMT"
        assert Timestamp.parse("1700000000.00001").http_date == "Tue, 14 Nov 2023 22:13:21 GMT"
        assert (
            Timestamp.parse("1700000059.50000_000000000000000a").http_date
            == "Tue, 14 Nov 2023 22:14:20 GMT"
        )
