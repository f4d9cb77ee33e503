"""Aggregation over repetitions, the comparison table and the ratio line."""

from __future__ import annotations

import json
import math
import re

from bench.report import format_table, ratio, ratio_line, summarize, to_json
from bench.stats import Result


def _r(workload: str, ops: int, dur: float, cpu: float, p99: float, moved: int = 0) -> Result:
    return Result(
        workload=workload,
        ops=ops,
        errors=0,
        duration_s=dur,
        bytes_moved=moved,
        p50_s=p99 / 2,
        p99_s=p99,
        server_cpu_s=cpu,
    )


def test_summarize_means_throughput_and_pools_cpu() -> None:
    s = summarize("put4k", [_r("put4k", 100, 1.0, 1.0, 0.010), _r("put4k", 300, 1.0, 1.0, 0.030)])
    assert s.unit == "ops/s"
    assert s.throughput == 200.0
    assert s.cpu_ms_per_op == 2000.0 / 400  # total CPU over total ops, not a mean of ratios
    assert s.p99_ms == 30.0  # the worst repetition
    assert s.reps == 2 and s.errors == 0


def test_summarize_large_objects_in_mb_per_s() -> None:
    s = summarize("put256m", [_r("put256m", 1, 2.0, 4.0, 2.0, moved=256 * 2**20)])
    assert s.unit == "MB/s"
    assert math.isclose(s.throughput, 256 * 2**20 / 1e6 / 2.0)
    assert s.cpu_ms_per_op == 4000.0


def test_summarize_leaves_failed_runs_out_of_figures_but_reports_them() -> None:
    failed = Result(workload="get4k", ops=0, errors=1, duration_s=0.0, extra={"failed": "boom"})
    s = summarize("get4k", [_r("get4k", 50, 1.0, 0.5, 0.1), failed])
    assert s.throughput == 50.0 and s.errors == 1 and s.failed == "boom"
    none = summarize("get4k", [failed])
    assert math.isnan(none.throughput) and math.isnan(none.cpu_ms_per_op)


def test_ratio_unknowns() -> None:
    assert ratio(6.0, 2.0) == 3.0
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))
    assert math.isnan(ratio(1.0, math.nan))


def test_ratio_line_format_and_order() -> None:
    a = {
        w: summarize(w, [_r(w, 300, 1.0, 1.0, 0.1, moved=300 * 10**6)])
        for w in ("put4k", "get4k", "put256m", "get256m")
    }
    b = {
        w: summarize(w, [_r(w, 100, 1.0, 1.0, 0.1, moved=200 * 10**6)])
        for w in ("put4k", "get4k", "put256m")
    }
    line = ratio_line(a, b)
    assert line == "ratio put4k=3.00 get4k=3.00 put256m=1.50 get256m=nan"
    assert re.fullmatch(r"ratio put4k=\S+ get4k=\S+ put256m=\S+ get256m=\S+", line)


def test_table_shows_both_systems_and_ratios() -> None:
    a = summarize("put4k", [_r("put4k", 300, 1.0, 0.3, 0.05)])
    b = summarize("put4k", [_r("put4k", 100, 1.0, 0.3, 0.10)])
    table = format_table(("cairn", "swift"), [(a, b), (None, None)])
    lines = table.splitlines()
    assert "cairn thr" in lines[0] and "swift thr" in lines[0]
    assert len(lines) == 3  # header, rule, one row (the empty row is left out)
    row = lines[2].split()
    assert row[:5] == ["put4k", "ops/s", "300.0", "100.0", "3.00"]
    assert row[5:8] == ["1.00", "3.00", "0.33"]  # cpu ms/op each and cairn/swift


def test_table_with_one_system_missing_says_na() -> None:
    b = summarize("get4k", [_r("get4k", 100, 1.0, 0.3, 0.10)])
    row = format_table(("cairn", "swift"), [(None, b)]).splitlines()[2].split()
    assert row[2] == "n/a" and row[4] == "n/a" and row[-1] == "-/0"


def test_json_is_valid_with_nulls() -> None:
    runs = {"swift": [Result(workload="get4k", ops=0, errors=1, duration_s=0.0)]}
    summaries = {"swift": {"get4k": summarize("get4k", runs["swift"])}}
    doc = json.loads(to_json({"hardware": {"nproc": 2}}, runs, summaries))
    assert doc["version"] == 1
    assert doc["summary"]["swift"]["get4k"]["throughput"] is None
    assert doc["runs"]["swift"][0]["errors"] == 1
