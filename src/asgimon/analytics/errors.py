"""``GET /api/errors/{projectId}``: error counts by type, severity and group, and their trend.

Counts come from the ``error:{severity}:{fingerprint}:{type}`` rollups, so they are exact
over any range; a group's message and last occurrence come from the most recent raw error
events, for the groups found among them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from asgimon.events import ErrorEvent
from asgimon.rollups import Rollup

from .common import header, iso, trend
from .query import Query

RECENT = 200
SEVERITY_ORDER = ("critical", "high", "medium", "low")


def parts(series: str) -> tuple[str, str, str]:
    """(severity, fingerprint, type) of an error series."""
    severity, _, rest = series.removeprefix("error:").partition(":")
    fingerprint, _, error_type = rest.partition(":")
    return severity, fingerprint, error_type or "unknown"


async def error_figures(
    q: Query, rows: list[Rollup] | None = None
) -> tuple[list[Rollup], list[dict[str, Any]], list[ErrorEvent]]:
    """The rows, the groups (largest first) and the recent events of a range."""
    span = q.span
    if rows is None:
        rows = await q.storage.rollups(
            project_id=q.project_id,
            resolution=span.resolution,
            start=span.start,
            end=span.end,
            series_prefix="error:",
        )
    recent = [
        ev
        for ev in await q.storage.events(
            "error", project_id=q.project_id, start=span.start, end=span.end, limit=RECENT
        )
        if isinstance(ev, ErrorEvent)
    ]
    latest: dict[str, ErrorEvent] = {}
    for ev in recent:
        latest.setdefault(ev.fingerprint, ev)
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = parts(r.series)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {
                "fingerprint": key[1],
                "type": key[2],
                "severity": key[0],
                "count": 0,
                "firstSeen": iso(r.bucket_start),
                "lastSeen": iso(r.bucket_start),
                "message": None,
            }
        g["count"] += r.count
        g["firstSeen"] = min(g["firstSeen"], iso(r.bucket_start))
        g["lastSeen"] = max(g["lastSeen"], iso(r.bucket_start))
    for g in groups.values():
        last = latest.get(g["fingerprint"])
        if last is not None:
            g["message"] = last.message
            g["lastSeen"] = iso(last.timestamp)
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], g["fingerprint"], g["severity"]))
    return rows, ordered, recent


async def errors(q: Query) -> dict[str, Any]:
    rows, groups, recent = await error_figures(q)
    by_type: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    for r in rows:
        severity, _, error_type = parts(r.series)
        by_type[error_type] += r.count
        by_severity[severity] += r.count
    return {
        **header(q.project_id, q.span),
        "totalErrors": sum(r.count for r in rows),
        "errorsByType": [
            {"type": t, "count": c}
            for t, c in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "errorsBySeverity": [
            {"severity": s, "count": by_severity.get(s, 0)} for s in SEVERITY_ORDER
        ],
        "errorTrend": trend(rows, q.span, lambda r: {"count": r.count}),
        "recentErrors": [recent_error(ev) for ev in recent],
        "groups": groups,
    }


def recent_error(ev: ErrorEvent) -> dict[str, Any]:
    return {
        "id": ev.id,
        "fingerprint": ev.fingerprint,
        "type": ev.error_type,
        "message": ev.message,
        "severity": ev.severity,
        "handled": ev.handled,
        "endpoint": ev.endpoint,
        "method": ev.method,
        "deploymentId": ev.deployment_id,
        "timestamp": iso(ev.timestamp),
    }
