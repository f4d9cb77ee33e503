"""Latency percentiles and the per-run result record."""

from __future__ import annotations

import math

import pytest

from bench.stats import Result, percentile


def test_percentile_nearest_rank_on_1_to_100() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50.0
    assert percentile(xs, 99) == 99.0
    assert percentile(xs, 100) == 100.0
    assert percentile(xs, 0) == 1.0


def test_percentile_never_interpolates() -> None:
    xs = [1.0, 10.0]
    assert percentile(xs, 50) == 1.0  # the first value covers 50% of the samples
    assert percentile(xs, 51) == 10.0
    assert percentile(xs, 99) == 10.0


def test_percentile_of_few_samples_is_the_worst_for_p99() -> None:
    xs = sorted([0.3, 0.1, 0.2, 0.9, 0.4])
    assert percentile(xs, 99) == 0.9
    assert percentile(xs, 50) == 0.3


def test_percentile_edge_cases() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([7.0], 1) == 7.0
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], -0.5)


def test_result_rates_and_cpu_per_op() -> None:
    r = Result(
        workload="put4k",
        ops=200,
        errors=1,
        duration_s=4.0,
        bytes_moved=8_000_000,
        client_cpu_s=1.0,
        server_cpu_s=3.0,
    )
    assert r.ops_per_s == 50.0
    assert r.mb_per_s == 2.0
    assert r.server_cpu_per_op_ms == 15.0
    assert r.client_cpu_share == 0.25


def test_result_without_ops_or_time_has_no_rates() -> None:
    r = Result(workload="get4k", ops=0, errors=3, duration_s=0.0)
    assert r.ops_per_s == 0.0 and r.mb_per_s == 0.0
    assert math.isnan(r.server_cpu_per_op_ms)


def test_from_latencies_sorts_and_counts() -> None:
    r = Result.from_latencies("get4k", [0.5, 0.1, 0.3, 0.2], errors=2, duration_s=2.0)
    assert r.ops == 4 and r.errors == 2
    assert r.p50_s == 0.2 and r.p99_s == 0.5


def test_to_json_writes_unknowns_as_null() -> None:
    r = Result(workload="list", ops=0, errors=0, duration_s=1.0)
    doc = r.to_json()
    assert doc["server_cpu_s"] is None and doc["p99_s"] is None
    assert doc["ops_per_s"] == 0.0 and doc["workload"] == "list"
