"""``GET /api/deployments/{projectId}``: rates, durations and distributions of deployments."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from asgimon.events import DeploymentEvent
from asgimon.storage.base import Storage

from .ranges import TimeRange

RECENT = 100


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


async def deployments(storage: Storage, project_id: str, span: TimeRange) -> dict[str, Any]:
    """Completed deployments from the ``deploy:{framework}`` rollups; the latest events raw."""
    rows = await storage.rollups(
        project_id=project_id,
        resolution=span.resolution,
        start=span.start,
        end=span.end,
        series_prefix="deploy:",
    )
    total = sum(r.count for r in rows)
    failed = sum(r.error_count for r in rows)
    timed = sum(r.value_count for r in rows)
    by_date: Counter[str] = Counter()
    by_framework: Counter[str] = Counter()
    for r in rows:
        by_date[_day(r.bucket_start)] += r.count
        framework = r.series.removeprefix("deploy:")
        by_framework["unknown" if framework == "-" else framework] += r.count
    recent = await storage.events(
        "deployment", project_id=project_id, start=span.start, end=span.end, limit=RECENT
    )
    return {
        "projectId": project_id,
        "start": datetime.fromtimestamp(span.start, UTC).isoformat(),
        "end": datetime.fromtimestamp(span.end, UTC).isoformat(),
        "totalDeployments": total,
        "successRate": (total - failed) / total if total else 0.0,
        "failureRate": failed / total if total else 0.0,
        "avgDuration": sum(r.value_sum for r in rows) / timed if timed else None,
        "deploymentsByDate": [{"date": d, "count": c} for d, c in sorted(by_date.items())],
        "deploymentsByStatus": [
            {"status": "success", "count": total - failed},
            {"status": "failure", "count": failed},
        ],
        "frameworkDistribution": [
            {"framework": f, "count": c} for f, c in sorted(by_framework.items())
        ],
        "deployments": [_deployment(ev) for ev in recent if isinstance(ev, DeploymentEvent)],
    }


def _deployment(ev: DeploymentEvent) -> dict[str, Any]:
    return {
        "id": ev.id,
        "deploymentId": ev.deployment_id,
        "type": ev.type,
        "status": ev.status,
        "durationMs": ev.duration_ms,
        "framework": ev.framework,
        "timestamp": ev.at.isoformat(),
    }
