"""``GET /api/performance/{projectId}``: latency, errors and Apdex per API endpoint.

Apdex (``T`` = ``ANALYTICS_APDEX_THRESHOLD_MS``) is ``(satisfied + tolerating / 2) / n``,
satisfied meaning at most ``T`` and tolerating at most ``4T``, counted from the latency
histogram, so a value up to one 2 %-wide bin above the threshold may count as within it.
It scores latency only: a fast 500 counts as satisfied (the error rate sits beside it).

``system`` is each sampled process's memory (MB) and CPU (% of one core) over the range, from
the ``sys:`` series the system-metrics plugin records; empty where it does not run.

``queries`` is the database statements per endpoint over the range, from the ``db:`` series
of the query-timing plugins (:mod:`asgimon.plugins.queries`): the slowest by total time and
the most frequent by executions, :data:`MAX_QUERIES` of each, with the requests that ran
it more than ``N_PLUS_ONE_THRESHOLD`` times (an N+1 pattern). Their text is read from the
raw events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from asgimon import series
from asgimon.events import EVENT_TYPES, Event
from asgimon.rollups import Rollup, combine
from asgimon.series import API_TOTAL

from .common import header, latency, ratio, trend
from .query import Query

# The ``sort`` parameter's values (the API's names) and the figure each one sorts by.
SORTS = {"count": "count", "avg": "avg", "p95": "p95", "errorRate": "error_rate", "apdex": "apdex"}
MAX_PROCESSES = 50
"""Processes listed under ``system``, highest peak memory first: workers restarted every
deployment leave a process each behind over a long range."""
MAX_QUERIES = 25
"""Statements listed under ``queries`` by total time, and as many by executions."""
TEXT_READ = 500
"""The newest query events read for the statements' text, before one read per statement
still without it."""


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
    per_endpoint, totals, sampled, statements = await asyncio.gather(
        q.series_rollups(series.API),
        q.rollups(API_TOTAL),
        q.series_rollups(series.SYSTEM),
        q.series_rollups(series.DB),
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
        "queries": await query_figures(q, statements),
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


async def query_figures(q: Query, rows: Iterable[Rollup]) -> list[dict[str, Any]]:
    """Per endpoint and statement, its executions and time (``db:`` series), the slowest
    and the most frequent, slowest first."""
    per: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        metric, method, endpoint, digest = series.db_parts(r.series)
        entry = per.get((method, endpoint, digest))
        if entry is None:
            entry = per[method, endpoint, digest] = {
                "endpoint": endpoint,
                "method": method,
                "statement_hash": digest,
                "requests": 0,
                "repeats": 0,
                "total_ms": 0.0,
                "max_request_ms": None,
                "n_plus_one_requests": 0,
            }
        if metric == "time":
            entry["requests"] += r.count
            entry["total_ms"] += r.value_sum
            entry["max_request_ms"] = r.value_max
            entry["n_plus_one_requests"] += r.error_count
        elif metric == "repeats":
            entry["repeats"] += round(r.value_sum)
    found = []
    for entry in per.values():
        if not entry["requests"]:
            continue  # repeats without their record: not a statement to show
        calls = entry["requests"] + entry.pop("repeats")
        found.append({**entry, "calls": calls, "avg_ms": entry["total_ms"] / calls})
    found.sort(key=lambda e: (e["endpoint"], e["method"], e["statement_hash"]))
    slowest = sorted(found, key=lambda e: -e["total_ms"])[:MAX_QUERIES]
    busiest = sorted(found, key=lambda e: -e["calls"])[:MAX_QUERIES]
    key = ("method", "endpoint", "statement_hash")
    listed = list({tuple(e[k] for k in key): e for e in slowest + busiest}.values())
    listed.sort(key=lambda e: (-e["total_ms"], -e["calls"]))
    texts = await statement_texts(q, {e["statement_hash"] for e in listed})
    for e in listed:
        ev = texts.get(e["statement_hash"])
        e["statement"] = getattr(ev, "statement", None)
        e["database"] = getattr(ev, "database", None)
    return listed


async def statement_texts(q: Query, digests: set[str]) -> dict[str, Event]:
    """A ``time`` event of each statement, for its text (none for those purged, or where the
    query-timing integration, which declares the kind, is not installed)."""
    found: dict[str, Event] = {}
    if not digests or series.DB_KIND not in EVENT_TYPES:
        return found
    for ev in await q.events(series.DB_KIND, TEXT_READ):
        digest = getattr(ev, "statement_hash", None)
        if getattr(ev, "metric", None) == "time" and digest in digests:
            found.setdefault(str(digest), ev)
    # A statement rarely run (often the slowest) is not among the newest: read it by its hash.
    missing = sorted(digests - found.keys())
    wanted = [{"statement_hash": d, "metric": "time"} for d in missing]
    reads = [q.events(series.DB_KIND, 1, match) for match in wanted]
    for rows in await asyncio.gather(*reads):
        for ev in rows:
            found[str(getattr(ev, "statement_hash", ""))] = ev
    return found


def _trend_point(r: Rollup) -> dict[str, Any]:
    return {"count": r.count, "errors": r.error_count, "avg": r.avg, "p95": r.quantile(0.95)}


async def endpoint_latency(q: Query, method: str, endpoint: str) -> dict[str, Any]:
    """One endpoint's figures over the range and its latency per bucket."""
    name = series.api(method, endpoint)
    prefixes = tuple(series.db(m, method, endpoint, "") for m in sorted(series.DB_METRICS))
    found, statements = await asyncio.gather(q.rollups(name), q.series_rollups(prefixes))
    # The prefix reads also match longer templates ("/items" and "/items/{id}"): keep one.
    rows = [r for r in found if r.series == name]
    total = combine(rows)
    mine = [r for r in statements if series.db_parts(r.series)[1:3] == (method, endpoint)]
    return {
        **header(q.project_id, q.span),
        "endpoint": endpoint,
        "method": method,
        **latency(total),
        "apdex": apdex(total, q.settings.apdex_threshold_ms),
        "latency_trend": trend(rows, q.span, _endpoint_point),
        "queries": await query_figures(q, mine),
    }


def _endpoint_point(r: Rollup) -> dict[str, Any]:
    p50, p95, p99 = r.quantiles((0.5, 0.95, 0.99))
    return {"count": r.count, "errors": r.error_count, "p50": p50, "p95": p95, "p99": p99}
