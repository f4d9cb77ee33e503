"""Benchmark results: latency percentiles, one workload's result record, and its summary.

Pure code (no I/O) so the arithmetic is unit-tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MBPS_WORKLOADS", "Result", "percentile"]

# Throughput of these workloads is reported in MB/s, of the others in operations per second.
MBPS_WORKLOADS = frozenset({"put1m", "get1m", "put256m", "get256m"})


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0..100) of already sorted values, nearest-rank method.

    Nearest rank (the smallest value with at least pct% of values at or below it) is what
    latency tools report: p99 of 100 samples is the 99th smallest, never an interpolation
    between two requests that both happened. Empty input gives NaN.
    """
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * n))
    return float(sorted_values[rank - 1])


@dataclass
class Result:
    """One workload run against one endpoint.

    `ops` counts completed requests with a success status, `errors` everything else
    (transport errors and unexpected statuses). Latencies are in seconds.
    """

    workload: str
    ops: int
    errors: int
    duration_s: float
    bytes_moved: int = 0
    p50_s: float = math.nan
    p99_s: float = math.nan
    client_cpu_s: float = 0.0
    server_cpu_s: float = math.nan
    tool: str = "python"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        """Payload megabytes (10^6 bytes) per second, as disk and network tools count."""
        return self.bytes_moved / 1e6 / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def server_cpu_per_op_ms(self) -> float:
        """Server CPU milliseconds per successful request (NaN when not measured)."""
        if self.ops <= 0 or math.isnan(self.server_cpu_s):
            return math.nan
        return self.server_cpu_s / self.ops * 1000.0

    @property
    def client_cpu_share(self) -> float:
        """The load generator's CPU time per wall second (1.0 = one core fully busy)."""
        return self.client_cpu_s / self.duration_s if self.duration_s > 0 else 0.0

    @classmethod
    def from_latencies(
        cls,
        workload: str,
        latencies_s: list[float],
        errors: int,
        duration_s: float,
        bytes_moved: int = 0,
        **kw: Any,
    ) -> Result:
        lat = sorted(latencies_s)
        return cls(
            workload=workload,
            ops=len(lat),
            errors=errors,
            duration_s=duration_s,
            bytes_moved=bytes_moved,
            p50_s=percentile(lat, 50),
            p99_s=percentile(lat, 99),
            **kw,
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ops_per_s"] = self.ops_per_s
        out["mb_per_s"] = self.mb_per_s
        out["server_cpu_per_op_ms"] = self.server_cpu_per_op_ms
        # JSON has no NaN: unknown figures are null.
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
