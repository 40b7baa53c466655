"""``GET /api/deployments/{projectId}``: rates, durations and distributions of deployments,
and for each recent deployment the API and functions in the hour before and after it."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date
from typing import Any

from asgimon import series
from asgimon.events import DeploymentEvent
from asgimon.rollups import Rollup, combine
from asgimon.series import API_TOTAL, FUNCTION_TOTAL

from .common import day, header, instant, ratio, trend
from .query import Query
from .releases import Releases

RECENT = 100
IMPACT_WINDOW_S = 3600
IMPACT_MAX = 20  # deployments compared per answer: 4 windows each, one round trip


async def deployments(q: Query) -> dict[str, Any]:
    """Completed deployments from the ``deploy:{framework}`` rollups; the latest events raw."""
    span = q.span
    rows, recent, groups, releases = await asyncio.gather(
        q.rollups(series.DEPLOY),
        q.events("deployment", RECENT),
        q.error_groups(),
        Releases.load(q.storage, q.project_id, span.end),
    )
    first_in = Counter(releases.first_seen_in(g.first_seen, g.first_release) for g in groups)
    total = sum(r.count for r in rows)
    failed = sum(r.error_count for r in rows)
    timed = sum(r.value_count for r in rows)
    by_date: Counter[date] = Counter()
    by_framework: Counter[str] = Counter()
    for r in rows:
        by_date[day(r.bucket_start)] += r.count
        by_framework[series.deploy_framework(r.series)] += r.count
    p50, p95, p99 = combine(rows).quantiles((0.5, 0.95, 0.99))
    listed = [_deployment(ev, first_in) for ev in recent if isinstance(ev, DeploymentEvent)]
    await _add_impact(q, listed, [ev for ev in recent if isinstance(ev, DeploymentEvent)])
    return {
        **header(q.project_id, span),
        "total_deployments": total,
        "success_rate": ratio(total - failed, total),
        "failure_rate": ratio(failed, total),
        "avg_duration": sum(r.value_sum for r in rows) / timed if timed else None,
        "p50_duration": p50,
        "p95_duration": p95,
        "p99_duration": p99,
        "deployments_by_date": [{"date": d, "count": c} for d, c in sorted(by_date.items())],
        "deployments_by_status": [
            {"status": "success", "count": total - failed},
            {"status": "failure", "count": failed},
        ],
        "framework_distribution": [
            {"framework": f, "count": c, "share": ratio(c, total)}
            for f, c in sorted(by_framework.items())
        ],
        "deployment_trend": trend(rows, span, _trend_point),
        "deployments": listed,
    }


def _trend_point(r: Rollup) -> dict[str, Any]:
    return {"count": r.count, "failures": r.error_count, "avg_duration": r.avg}


def _deployment(ev: DeploymentEvent, first_in: Counter[str | None]) -> dict[str, Any]:
    live = ev.type == "completed" and ev.status == "success"
    return {
        "id": ev.id,
        "deployment_id": ev.deployment_id,
        "type": ev.type,
        "status": ev.status,
        "duration_ms": ev.duration_ms,
        "framework": ev.framework,
        "timestamp": instant(ev.timestamp),
        # The error groups first seen while it was live: what it brought.
        "new_error_groups": first_in.get(ev.deployment_id, 0) if live else None,
        "impact": None,
    }


def impact_windows(q: Query, at: float) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """The rollups and the before / after windows compared around a deployment at ``at``.

    Minute rollups while they are kept, hour rollups after that; the deployment's own
    minute (or hour) counts as "after".
    """
    minute_kept_from = q.now - q.settings.minute_rollup_retention_days * 86_400
    resolution, width = (
        ("minute", 60) if at - IMPACT_WINDOW_S >= minute_kept_from else ("hour", 3600)
    )
    pivot = int(at // width) * width
    return resolution, (pivot - IMPACT_WINDOW_S, pivot), (pivot, pivot + IMPACT_WINDOW_S)


def _side(api: Rollup, fn: Rollup) -> dict[str, Any]:
    return {
        "api_calls": api.count,
        "avg_latency": api.avg,
        "error_rate": ratio(api.error_count, api.count),
        "invocations": fn.count,
        "function_error_rate": ratio(fn.error_count, fn.count),
        "avg_execution_time": fn.avg,
    }


async def _add_impact(
    q: Query, listed: list[dict[str, Any]], events: list[DeploymentEvent]
) -> None:
    chosen = [(row, ev) for row, ev in zip(listed, events, strict=True) if ev.type == "completed"][
        :IMPACT_MAX
    ]
    by_resolution: dict[str, list[tuple[dict[str, Any], float, float, float]]] = {}
    for row, ev in chosen:
        resolution, before, after = impact_windows(q, ev.timestamp)
        by_resolution.setdefault(resolution, []).append((row, before[0], before[1], after[1]))
    for resolution, items in by_resolution.items():
        windows = [w for _, lo, mid, hi in items for w in ((lo, mid), (mid, hi))]
        api, fn = await asyncio.gather(
            q.storage.totals(
                project_id=q.project_id, resolution=resolution, windows=windows, series=API_TOTAL
            ),
            q.storage.totals(
                project_id=q.project_id,
                resolution=resolution,
                windows=windows,
                series=FUNCTION_TOTAL,
            ),
        )
        for i, (row, _lo, mid, hi) in enumerate(items):
            row["impact"] = {
                "window_seconds": IMPACT_WINDOW_S,
                "resolution": resolution,
                "before": _side(api[2 * i], fn[2 * i]),
                "after": _side(api[2 * i + 1], fn[2 * i + 1]),
                "after_complete": hi <= q.now,
                "pivot": instant(mid),
            }
