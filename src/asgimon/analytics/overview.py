"""``GET /api/dashboard/{projectId}`` and ``GET /api/overview``: the headline figures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from asgimon import series
from asgimon.events import DeploymentEvent
from asgimon.rollups import Rollup, combine
from asgimon.series import API_TOTAL, ERROR_TOTAL, FUNCTION_TOTAL
from asgimon.storage.base import SeriesTotal

from .builds import is_build_start
from .common import header, instant, ratio, trend
from .error_groups import NO_FILTERS, error_figures
from .query import Query

TOP_ERRORS = 10
RECENT_DEPLOYMENTS = 10


# Totals, not one series per endpoint or function: a month of headline figures is a few
# hundred rows, whatever the number of endpoints.
HEADLINE_SERIES = (API_TOTAL, FUNCTION_TOTAL, ERROR_TOTAL)


def headline(
    totals: list[Rollup],
    deploys: Sequence[Rollup | SeriesTotal],
    phases: Sequence[SeriesTotal],
) -> dict[str, Any]:
    """The figures the dashboard and the overview share, from the rows of
    :data:`HEADLINE_SERIES`, the completed deployments' series (per bucket or summed) and
    the build phases summed per series."""
    api = combine(r for r in totals if r.series == API_TOTAL)
    deployments = sum(r.count for r in deploys)
    failed = sum(r.error_count for r in deploys)
    fn = sum(r.count for r in totals if r.series == FUNCTION_TOTAL)
    fn_errors = sum(r.error_count for r in totals if r.series == FUNCTION_TOTAL)
    builds = sum(t.count for t in phases if is_build_start(t.series))
    timed = sum(r.value_count for r in deploys)
    return {
        "total_deployments": deployments,
        "success_rate": ratio(deployments - failed, deployments),
        "avg_deployment_time": sum(r.value_sum for r in deploys) / timed if timed else None,
        "avg_build_time": (sum(t.value_sum for t in phases) / builds) if builds else None,
        "total_builds": builds,
        "total_function_invocations": fn,
        "function_error_rate": ratio(fn_errors, fn),
        "total_errors": sum(r.count for r in totals if r.series == ERROR_TOTAL),
        "total_api_calls": api.count,
        "api_error_rate": ratio(api.error_count, api.count),
        "avg_api_latency": api.avg,
        "p95_api_latency": api.quantile(0.95),
    }


async def dashboard(q: Query) -> dict[str, Any]:
    span = q.span
    totals, deploys, phases, errors, recent = await asyncio.gather(
        q.rollups(HEADLINE_SERIES),
        # Per bucket: the deployment trend needs them.
        q.rollups(series.DEPLOY),
        q.series_totals(series.BUILD),
        error_figures(q, NO_FILTERS),
        q.events("deployment", RECENT_DEPLOYMENTS),
    )
    return {
        **header(q.project_id, q.span),
        **headline(totals, deploys, phases),
        "recent_deployments": [
            {
                "id": ev.id,
                "deployment_id": ev.deployment_id,
                "type": ev.type,
                "status": ev.status,
                "duration_ms": ev.duration_ms,
                "framework": ev.framework,
                "timestamp": instant(ev.timestamp),
            }
            for ev in recent
            if isinstance(ev, DeploymentEvent)
        ],
        "top_errors": errors.groups[:TOP_ERRORS],
        "deployment_trend": trend(
            deploys,
            span,
            lambda r: {"count": r.count, "failures": r.error_count},
        ),
    }


async def overview_row(q: Query) -> dict[str, Any]:
    """A project's headline in two reads: an overview makes these for every project."""
    totals, summed = await asyncio.gather(
        q.rollups(HEADLINE_SERIES), q.series_totals((series.DEPLOY, series.BUILD))
    )
    deploys = [t for t in summed if t.series.startswith(series.DEPLOY)]
    phases = [t for t in summed if t.series.startswith(series.BUILD)]
    return {"project_id": q.project_id, **headline(totals, deploys, phases)}
