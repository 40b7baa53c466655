"""``GET /api/functions/{projectId}``: invocations, execution times and errors per function."""

from __future__ import annotations

import asyncio
from typing import Any

from asgimon import series
from asgimon.rollups import Rollup, combine
from asgimon.series import FUNCTION_TOTAL

from .common import header, ratio, trend
from .query import Query

# Upper edges (ms) of the execution-time distribution; the last bucket is open.
EDGES_MS = (10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0)


def _distribution(r: Rollup) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    below = 0
    for lo, hi in zip((0.0, *EDGES_MS), EDGES_MS, strict=False):
        upto = r.count_at_most(hi)
        out.append({"from_ms": lo, "to_ms": hi, "count": upto - below})
        below = upto
    out.append({"from_ms": EDGES_MS[-1], "to_ms": None, "count": r.value_count - below})
    return out


def _figures(r: Rollup) -> dict[str, Any]:
    p50, p95, p99 = r.quantiles((0.5, 0.95, 0.99))
    return {
        "invocations": r.count,
        "errors": r.error_count,
        "error_rate": ratio(r.error_count, r.count),
        "avg_execution_time": r.avg,
        "p50_execution_time": p50,
        "p95_execution_time": p95,
        "p99_execution_time": p99,
    }


async def functions(q: Query) -> dict[str, Any]:
    """Per function from the ``fn:{function_id}`` rollups, each merged over the range; the
    totals and the trend from the project's ``all:fn`` series."""
    span = q.span
    per_function, totals = await asyncio.gather(
        q.series_rollups(series.FUNCTION), q.rollups(FUNCTION_TOTAL)
    )
    merged = {series.function_id(r.series): r for r in per_function}
    total = combine(totals)
    overall = _figures(total)
    return {
        **header(q.project_id, span),
        "total_invocations": total.count,
        "invocation_rate": total.count / ((span.end - span.start) / 60),
        "avg_execution_time": overall["avg_execution_time"],
        "p50_execution_time": overall["p50_execution_time"],
        "p95_execution_time": overall["p95_execution_time"],
        "p99_execution_time": overall["p99_execution_time"],
        "error_rate": overall["error_rate"],
        "invocations_by_function": [
            {"function_id": f, "count": r.count} for f, r in merged.items()
        ],
        "errors_by_function": [
            {"function_id": f, "count": r.error_count} for f, r in merged.items()
        ],
        "execution_time_distribution": _distribution(total),
        "invocation_trend": trend(totals, span, _trend_point),
        "functions": [{"function_id": f, **_figures(r)} for f, r in merged.items()],
    }


def _trend_point(r: Rollup) -> dict[str, Any]:
    return {"invocations": r.count, "errors": r.error_count, "avg_execution_time": r.avg}


async def invocation_trend(q: Query) -> list[dict[str, Any]]:
    """The project's invocations per bucket alone: one read, for pages that show no more."""
    return trend(await q.rollups(FUNCTION_TOTAL), q.span, _trend_point)
