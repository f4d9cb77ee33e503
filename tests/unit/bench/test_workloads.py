"""The whole workload suite against MemorySwift, with wrk and with the Python generator only."""

from __future__ import annotations

import shutil

import pytest

from bench.report import summarize
from bench.target import SwiftTarget
from bench.workloads import WORKLOADS, SuiteSpec, SystemUnderTest, run_workload

from ._memswift import TOKEN, memory_swift

pytestmark = pytest.mark.integration


class _CountingProbe:
    def __init__(self) -> None:
        self.started = 0

    def start(self) -> None:
        self.started += 1

    def stop(self) -> float:
        return 0.5


@pytest.mark.parametrize(
    "use_wrk",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed"),
        ),
    ],
)
def test_every_workload_runs_and_is_measured(use_wrk: bool) -> None:
    spec = SuiteSpec(concurrency=2, mid_concurrency=2, small_s=1, mid_s=1, list_s=1,
                     large_bytes=3 * 2**20 + 1, listing_objects=20, use_wrk=use_wrk)  # fmt: skip
    with memory_swift() as (url, store):
        probe = _CountingProbe()
        sut = SystemUnderTest("mem", SwiftTarget(url, TOKEN), probe)
        results = [run_workload(sut, spec, w, 0) for w in WORKLOADS]
    for w, r in zip(WORKLOADS, results, strict=True):
        assert r.workload == w
        assert "failed" not in r.extra, r.extra
        assert r.ops > 0 and r.errors == 0, r
        assert r.server_cpu_s == 0.5
    assert probe.started == len(WORKLOADS)  # set-up (listing fill, top-ups) is not measured
    by = {r.workload: r for r in results}
    assert by["put4k"].tool == ("wrk" if use_wrk else "python")
    assert by["head4k"].tool == "python"  # wrk cannot do HEAD
    assert by["put256m"].bytes_moved == by["get256m"].bytes_moved == 3 * 2**20 + 1
    assert summarize("list", [by["list"]]).unit == "ops/s"
    assert len(store.objects["bench-0-4k"]) < by["put4k"].ops + spec.concurrency  # deletes
    assert store.objects["bench-0-large"] == {}  # the large object is cleaned up
    assert len(store.objects["bench-listing"]) == 20


def test_get_without_a_put_is_a_clean_failure() -> None:
    with memory_swift() as (url, _store):
        sut = SystemUnderTest("mem", SwiftTarget(url, TOKEN), _CountingProbe())
        r = run_workload(sut, SuiteSpec(use_wrk=False), "delete4k", 0)
        assert r.ops == 0 and "needs the objects" in r.extra["failed"]


def test_listing_is_filled_once_and_refused_when_mostly_missing() -> None:
    spec = SuiteSpec(list_s=1, listing_objects=20, use_wrk=False)
    with memory_swift() as (url, store):
        sut = SystemUnderTest("mem", SwiftTarget(url, TOKEN), _CountingProbe())
        sut.listing_filled = 5  # a fill that lost most of its PUTs
        r = run_workload(sut, spec, "list", 0)
        assert r.ops == 0 and "only 5 of 20" in r.extra["failed"]
        assert "bench-listing" not in store.objects  # no second fill behind the caller's back
        sut.listing_filled = None
        r = run_workload(sut, spec, "list", 0)
        assert r.ops > 0 and r.extra["objects_listed"] == 20
