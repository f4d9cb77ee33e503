"""Aggregate repeated runs, compare two systems, print the table, write JSON and a chart.

Everything but `write_chart` is pure and unit-tested.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stats import MBPS_WORKLOADS, Result

__all__ = [
    "RATIO_WORKLOADS",
    "Summary",
    "format_table",
    "ratio",
    "ratio_line",
    "summarize",
    "to_json",
    "write_chart",
]

# The workloads of the `ratio ...` line, in its order.
RATIO_WORKLOADS = ("put4k", "get4k", "put256m", "get256m")


@dataclass(frozen=True)
class Summary:
    """One system's figures for one workload over its repetitions."""

    workload: str
    unit: str  # "ops/s" or "MB/s"
    throughput: float  # mean over repetitions
    cpu_ms_per_op: float  # total server CPU / total successful requests
    p50_ms: float  # mean over repetitions
    p99_ms: float  # worst repetition
    errors: int
    reps: int
    client_cpu_share: float  # worst repetition, in cores
    failed: str = ""


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def summarize(workload: str, runs: Sequence[Result]) -> Summary:
    unit = "MB/s" if workload in MBPS_WORKLOADS else "ops/s"
    good = [r for r in runs if r.ops > 0]
    thr = [r.mb_per_s if unit == "MB/s" else r.ops_per_s for r in good]
    ops = sum(r.ops for r in good)
    cpu = [r.server_cpu_s for r in good]
    cpu_total = math.nan if not good or any(math.isnan(c) for c in cpu) else sum(cpu)
    failed = "; ".join(str(r.extra["failed"]) for r in runs if "failed" in r.extra)
    return Summary(
        workload=workload,
        unit=unit,
        throughput=_mean(thr) if good else math.nan,
        cpu_ms_per_op=cpu_total / ops * 1000.0 if ops else math.nan,
        p50_ms=_mean([r.p50_s * 1000.0 for r in good]),
        p99_ms=max((r.p99_s * 1000.0 for r in good), default=math.nan),
        errors=sum(r.errors for r in runs),
        reps=len(runs),
        client_cpu_share=max((r.client_cpu_share for r in good), default=math.nan),
        failed=failed,
    )


def ratio(a: float, b: float) -> float:
    """a / b, NaN when either is unknown or b is zero."""
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


def format_table(
    names: tuple[str, str], rows: Iterable[tuple[Summary | None, Summary | None]]
) -> str:
    """The comparison table: throughput, server CPU per request and p99 of both systems."""
    a, b = names
    head = (
        f"{'workload':<9} {'unit':<5} {a + ' thr':>11} {b + ' thr':>11} {'ratio':>6}  "
        f"{a + ' ms cpu/op':>16} {b + ' ms cpu/op':>16} {'ratio':>6}  "
        f"{a + ' p99 ms':>12} {b + ' p99 ms':>12} {'errors':>9}"
    )
    lines = [head, "-" * len(head)]
    for sa, sb in rows:
        s = sa or sb
        if s is None:
            continue
        nan = math.nan
        ta, tb = (sa.throughput if sa else nan), (sb.throughput if sb else nan)
        ca, cb = (sa.cpu_ms_per_op if sa else nan), (sb.cpu_ms_per_op if sb else nan)
        pa, pb = (sa.p99_ms if sa else nan), (sb.p99_ms if sb else nan)
        errs = f"{sa.errors if sa else '-'}/{sb.errors if sb else '-'}"
        lines.append(
            f"{s.workload:<9} {s.unit:<5} {_f(ta):>11} {_f(tb):>11} {_f(ratio(ta, tb), 2):>6}  "
            f"{_f(ca, 2):>16} {_f(cb, 2):>16} {_f(ratio(ca, cb), 2):>6}  "
            f"{_f(pa):>12} {_f(pb):>12} {errs:>9}"
        )
    return "\n".join(lines)


def ratio_line(a: dict[str, Summary], b: dict[str, Summary]) -> str:
    """`ratio put4k=X get4k=Y put256m=Z get256m=W`: a/b throughput, 2 decimals (nan if unknown)."""
    parts = []
    for workload in RATIO_WORKLOADS:
        ta = a[workload].throughput if workload in a else math.nan
        tb = b[workload].throughput if workload in b else math.nan
        parts.append(f"{workload}={ratio(ta, tb):.2f}")
    return "ratio " + " ".join(parts)


def _clean(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def to_json(
    meta: dict[str, Any],
    runs: dict[str, list[Result]],
    summaries: dict[str, dict[str, Summary]],
) -> str:
    """The whole comparison as JSON (format version 1; NaN written as null)."""
    doc = {
        "version": 1,
        "meta": meta,
        "runs": {sys: [r.to_json() for r in rs] for sys, rs in runs.items()},
        "summary": {
            sys: {w: s.__dict__ for w, s in by_w.items()} for sys, by_w in summaries.items()
        },
    }
    return json.dumps(_clean(doc), indent=1, sort_keys=True)


def write_chart(
    path: Path, names: tuple[str, str], summaries: dict[str, dict[str, Summary]]
) -> str:
    """A PNG with throughput and CPU-per-request ratios per workload; '' or why it was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'cairn[bench]'); no chart written"
    a, b = names
    workloads = [w for w in summaries.get(a, {}) if w in summaries.get(b, {})]
    thr = [ratio(summaries[a][w].throughput, summaries[b][w].throughput) for w in workloads]
    cpu = [ratio(summaries[b][w].cpu_ms_per_op, summaries[a][w].cpu_ms_per_op) for w in workloads]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    xs = range(len(workloads))
    ax.bar([x - 0.2 for x in xs], [0 if math.isnan(v) else v for v in thr], 0.4,
           label=f"throughput {a}/{b}")  # fmt: skip
    ax.bar([x + 0.2 for x in xs], [0 if math.isnan(v) else v for v in cpu], 0.4,
           label=f"CPU efficiency ({b} cpu/op) / ({a} cpu/op)")  # fmt: skip
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), workloads)
    ax.set_ylabel(f"{a} relative to {b} (higher is better for {a})")
    ax.set_title(f"{a} vs {b}, same machine, same run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return ""
