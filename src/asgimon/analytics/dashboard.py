"""``GET /api/dashboard/{projectId}`` and ``GET /api/overview``: the headline figures."""

from __future__ import annotations

from typing import Any

from asgimon.events import DeploymentEvent
from asgimon.rollups import Rollup, combine

from .builds import is_build_start
from .common import header, iso, ratio, trend
from .errors import error_figures
from .query import Query

TOP_ERRORS = 10
RECENT_DEPLOYMENTS = 10


def _split(rows: list[Rollup]) -> dict[str, list[Rollup]]:
    out: dict[str, list[Rollup]] = {p: [] for p in ("api", "deploy", "build", "fn", "error")}
    for r in rows:
        family = r.series.partition(":")[0]
        if family in out:
            out[family].append(r)
    return out


def headline(rows: list[Rollup]) -> dict[str, Any]:
    """The figures the dashboard and the overview share, from all of a project's rollups."""
    parts = _split(rows)
    deploys = combine(parts["deploy"])
    api = combine(parts["api"])
    fn = combine(parts["fn"])
    builds = sum(r.count for r in parts["build"] if is_build_start(r.series))
    return {
        "totalDeployments": deploys.count,
        "successRate": ratio(deploys.count - deploys.error_count, deploys.count),
        "avgBuildTime": (sum(r.value_sum for r in parts["build"]) / builds) if builds else None,
        "totalBuilds": builds,
        "totalFunctionInvocations": fn.count,
        "functionErrorRate": ratio(fn.error_count, fn.count),
        "totalErrors": sum(r.count for r in parts["error"]),
        "totalApiCalls": api.count,
        "apiErrorRate": ratio(api.error_count, api.count),
        "avgApiLatency": api.avg,
        "p95ApiLatency": api.quantile(0.95),
    }


async def _all_rows(q: Query) -> list[Rollup]:
    return await q.storage.rollups(
        project_id=q.project_id, resolution=q.span.resolution, start=q.span.start, end=q.span.end
    )


async def dashboard(q: Query) -> dict[str, Any]:
    rows = await _all_rows(q)
    parts = _split(rows)
    _, groups, _ = await error_figures(q, parts["error"])
    recent = await q.storage.events(
        "deployment",
        project_id=q.project_id,
        start=q.span.start,
        end=q.span.end,
        limit=RECENT_DEPLOYMENTS,
    )
    return {
        **header(q.project_id, q.span),
        **headline(rows),
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
            parts["deploy"], q.span, lambda r: {"count": r.count, "failures": r.error_count}
        ),
    }


async def overview_row(q: Query) -> dict[str, Any]:
    return {"projectId": q.project_id, **headline(await _all_rows(q))}
