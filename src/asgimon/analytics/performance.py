"""``GET /api/performance/{projectId}``: latency, errors and Apdex per API endpoint.

Apdex (``T`` = ``ANALYTICS_APDEX_THRESHOLD_MS``) is ``(satisfied + tolerating / 2) / n``,
satisfied meaning at most ``T`` and tolerating at most ``4T``, counted from the latency
histogram, so a value up to one 2 %-wide bin above the threshold may count as within it.
It scores latency only: a fast 500 counts as satisfied (the error rate sits beside it).

``system`` is each sampled process's memory (MB) and CPU (% of one core) over the range, from
the ``sys:`` series the system-metrics plugin records; empty where it does not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from asgimon import series
from asgimon.rollups import Rollup, combine
from asgimon.series import API_TOTAL

from .common import header, latency, ratio, trend
from .query import Query

# The ``sort`` parameter's values (the API's names) and the figure each one sorts by.
SORTS = {"count": "count", "avg": "avg", "p95": "p95", "errorRate": "error_rate", "apdex": "apdex"}
MAX_PROCESSES = 50
"""Processes listed under ``system``, highest peak memory first: workers restarted every
deployment leave a process each behind over a long range."""


def apdex(r: Rollup, threshold_ms: float) -> float | None:
    if not r.value_count:
        return None
    satisfied = r.count_at_most(threshold_ms)
    tolerating = r.count_at_most(4 * threshold_ms) - satisfied
    return (satisfied + tolerating / 2) / r.value_count


async def performance(q: Query) -> dict[str, Any]:
    threshold = q.settings.apdex_threshold_ms
    sort = SORTS[q.choice_param("sort", tuple(SORTS), "count") or "count"]
    # Each endpoint merged over the range; the project total per bucket for the trend.
    per_endpoint, totals, sampled = await asyncio.gather(
        q.series_rollups(series.API), q.rollups(API_TOTAL), q.series_rollups(series.SYSTEM)
    )
    endpoints = []
    for r in per_endpoint:
        method, endpoint = series.api_parts(r.series)
        endpoints.append(
            {"endpoint": endpoint, "method": method, **latency(r), "apdex": apdex(r, threshold)}
        )
    # Worst first for the latency figures and errors, busiest first for count, lowest Apdex first.
    endpoints.sort(key=lambda e: e["endpoint"] + " " + e["method"])
    if sort == "apdex":
        endpoints.sort(key=lambda e: 2.0 if e["apdex"] is None else e["apdex"])
    else:
        endpoints.sort(key=lambda e: -(e[sort] or 0))
    total = combine(totals)
    return {
        **header(q.project_id, q.span),
        "apdex_threshold_ms": threshold,
        "requests": total.count,
        "error_rate": ratio(total.error_count, total.count),
        "avg_latency": total.avg,
        "p50_latency": total.quantile(0.5),
        "p95_latency": total.quantile(0.95),
        "p99_latency": total.quantile(0.99),
        "apdex": apdex(total, threshold),
        "latency_trend": trend(totals, q.span, _trend_point),
        "endpoints": endpoints,
        "system": system(sampled),
    }


def system(rows: Iterable[Rollup]) -> list[dict[str, Any]]:
    """Per process, its memory and CPU readings merged over the range (``sys:`` series)."""
    per: dict[str, dict[str, Rollup]] = {}
    for r in rows:
        metric, process = series.system_parts(r.series)
        per.setdefault(process, {})[metric] = r
    found: list[dict[str, Any]] = []
    for process, metrics in per.items():
        memory, cpu = metrics.get("memory"), metrics.get("cpu")
        found.append(
            {
                "process": process,
                "memory_avg_mb": None if memory is None else memory.avg,
                "memory_max_mb": None if memory is None else memory.value_max,
                "cpu_avg_percent": None if cpu is None else cpu.avg,
                "cpu_max_percent": None if cpu is None else cpu.value_max,
            }
        )
    found.sort(key=lambda p: (-(p["memory_max_mb"] or 0.0), p["process"]))
    return found[:MAX_PROCESSES]


def _trend_point(r: Rollup) -> dict[str, Any]:
    return {"count": r.count, "errors": r.error_count, "avg": r.avg, "p95": r.quantile(0.95)}


async def endpoint_latency(q: Query, method: str, endpoint: str) -> dict[str, Any]:
    """One endpoint's figures over the range and its latency per bucket."""
    name = series.api(method, endpoint)
    # The prefix read also matches longer templates ("/items" and "/items/{id}"): keep one.
    rows = [r for r in await q.rollups(name) if r.series == name]
    total = combine(rows)
    return {
        **header(q.project_id, q.span),
        "endpoint": endpoint,
        "method": method,
        **latency(total),
        "apdex": apdex(total, q.settings.apdex_threshold_ms),
        "latency_trend": trend(rows, q.span, _endpoint_point),
    }


def _endpoint_point(r: Rollup) -> dict[str, Any]:
    p50, p95, p99 = r.quantiles((0.5, 0.95, 0.99))
    return {"count": r.count, "errors": r.error_count, "p50": p50, "p95": p95, "p99": p99}
