"""``GET /api/dashboard/{projectId}`` and ``GET /api/overview``: the headline figures."""

from __future__ import annotations

import asyncio
from typing import Any

from asgimon.events import API_TOTAL, ERROR_TOTAL, FUNCTION_TOTAL, DeploymentEvent
from asgimon.rollups import Rollup, combine
from asgimon.storage.base import SeriesTotal

from .builds import is_build_start
from .common import header, iso, ratio, trend
from .errors import error_figures
from .query import Query

TOP_ERRORS = 10
RECENT_DEPLOYMENTS = 10


# Totals, not one series per endpoint or function: a month of headline figures is a few
# hundred rows, whatever the number of endpoints.
HEADLINE_SERIES = (API_TOTAL, FUNCTION_TOTAL, ERROR_TOTAL)


async def headline_parts(q: Query) -> tuple[list[Rollup], list[SeriesTotal]]:
    """The rows of :data:`HEADLINE_SERIES` and of completed deployments, and the build
    phases summed per series."""
    span = q.span
    totals, deploys, phases = await asyncio.gather(
        q.storage.rollups(
            project_id=q.project_id,
            resolution=span.resolution,
            start=span.start,
            end=span.end,
            series_prefix=HEADLINE_SERIES,
        ),
        q.storage.rollups(
            project_id=q.project_id,
            resolution=span.resolution,
            start=span.start,
            end=span.end,
            series_prefix="deploy:",
        ),
        q.storage.series_totals(
            project_id=q.project_id,
            resolution=span.resolution,
            start=span.start,
            end=span.end,
            series_prefix="build:",
        ),
    )
    return [*totals, *deploys], phases


def headline(rows: list[Rollup], phases: list[SeriesTotal]) -> dict[str, Any]:
    """The figures the dashboard and the overview share."""
    api = combine(r for r in rows if r.series == API_TOTAL)
    deploys = sum(r.count for r in rows if r.series.startswith("deploy:"))
    failed = sum(r.error_count for r in rows if r.series.startswith("deploy:"))
    fn = sum(r.count for r in rows if r.series == FUNCTION_TOTAL)
    fn_errors = sum(r.error_count for r in rows if r.series == FUNCTION_TOTAL)
    builds = sum(t.count for t in phases if is_build_start(t.series))
    return {
        "totalDeployments": deploys,
        "successRate": ratio(deploys - failed, deploys),
        "avgBuildTime": (sum(t.value_sum for t in phases) / builds) if builds else None,
        "totalBuilds": builds,
        "totalFunctionInvocations": fn,
        "functionErrorRate": ratio(fn_errors, fn),
        "totalErrors": sum(r.count for r in rows if r.series == ERROR_TOTAL),
        "totalApiCalls": api.count,
        "apiErrorRate": ratio(api.error_count, api.count),
        "avgApiLatency": api.avg,
        "p95ApiLatency": api.quantile(0.95),
    }


async def dashboard(q: Query) -> dict[str, Any]:
    (rows, phases), (_, groups, _), recent = await asyncio.gather(
        headline_parts(q),
        error_figures(q),
        q.storage.events(
            "deployment",
            project_id=q.project_id,
            start=q.span.start,
            end=q.span.end,
            limit=RECENT_DEPLOYMENTS,
        ),
    )
    return {
        **header(q.project_id, q.span),
        **headline(rows, phases),
        "recentDeployments": [
            {
                "id": ev.id,
                "deploymentId": ev.deployment_id,
                "type": ev.type,
                "status": ev.status,
                "durationMs": ev.duration_ms,
                "framework": ev.framework,
                "timestamp": iso(ev.timestamp),
            }
            for ev in recent
            if isinstance(ev, DeploymentEvent)
        ],
        "topErrors": groups[:TOP_ERRORS],
        "deploymentTrend": trend(
            [r for r in rows if r.series.startswith("deploy:")],
            q.span,
            lambda r: {"count": r.count, "failures": r.error_count},
        ),
    }


async def overview_row(q: Query) -> dict[str, Any]:
    return {"projectId": q.project_id, **headline(*await headline_parts(q))}
