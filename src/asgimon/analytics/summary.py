"""``GET /api/summary``: one day of a project at a glance, from its hour rollups."""

from __future__ import annotations

from typing import Any

from asgimon import series
from asgimon.analytics.builds import is_build_start
from asgimon.rollups import Rollup, Window, combine
from asgimon.storage.base import Storage

SUMMARY_WINDOW_S = 24 * 3600


def _latency(r: Rollup) -> dict[str, Any]:
    p50, p95, p99 = r.quantiles((0.5, 0.95, 0.99))
    return {
        "count": r.count,
        "errors": r.error_count,
        "error_rate": r.error_count / r.count if r.count else 0.0,
        "avg_ms": r.avg,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
    }


async def project_summary(storage: Storage, project_id: str, now: float) -> dict[str, Any]:
    # Hour rollups: 25 rows per series for a day, where minutes would be 1,440.
    start = (now - SUMMARY_WINDOW_S) // 3600 * 3600
    rows = await storage.rollups(Window(project_id, "hour", start, now + 3600))
    by_series: dict[str, list[Rollup]] = {}
    for r in rows:
        by_series.setdefault(r.series, []).append(r)
    endpoints = []
    for name, group in by_series.items():
        if name.startswith(series.API):
            method, endpoint = series.api_parts(name)
            endpoints.append({"method": method, "endpoint": endpoint, **_latency(combine(group))})
    endpoints.sort(key=lambda e: -e["count"])
    api = combine(r for r in rows if r.series.startswith(series.API))

    def total(prefix: str) -> dict[str, int]:
        found = [r for r in rows if r.series.startswith(prefix)]
        return {"count": sum(r.count for r in found), "errors": sum(r.error_count for r in found)}

    recent = await storage.events("deployment", project_id=project_id, limit=10)
    return {
        "project_id": project_id,
        "api": _latency(api),
        "endpoints": endpoints[:50],
        "deployments": total(series.DEPLOY),
        "builds": {
            "count": sum(r.count for r in rows if is_build_start(r.series)),
            "errors": sum(r.error_count for r in rows if r.series.startswith(series.BUILD)),
        },
        "functions": total(series.FUNCTION),
        "domain_events": total(series.DOMAIN),
        "errors": total(series.ERROR),
        "recent_deployments": [
            {
                "deployment_id": e.deployment_id,  # type: ignore[attr-defined]
                "type": e.type,  # type: ignore[attr-defined]
                "status": e.status,  # type: ignore[attr-defined]
                "at": e.at,
            }
            for e in recent
        ],
    }
