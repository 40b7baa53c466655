"""``GET /api/errors/{projectId}``: error counts by type, severity and group, and their trend.

Counts come from the ``error:{severity}:{fingerprint}:{type}`` rollups, summed per group by
the store, and the trend from the project's ``all:error`` total, so they are exact over any
range; a group's message and last occurrence come from the most recent raw error events,
for the groups found among them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from asgimon import series
from asgimon.events import ErrorEvent
from asgimon.series import ERROR_TOTAL
from asgimon.storage.base import SeriesTotal

from .common import header, instant, trend
from .query import Query

RECENT = 200
SEVERITY_ORDER = ("critical", "high", "medium", "low")


async def error_figures(
    q: Query,
) -> tuple[list[SeriesTotal], list[dict[str, Any]], list[ErrorEvent]]:
    """Each group's totals, the groups (largest first) and the recent events of a range."""
    totals, found = await asyncio.gather(
        q.series_totals(series.ERROR),
        q.events("error", RECENT),
    )
    recent = [ev for ev in found if isinstance(ev, ErrorEvent)]
    latest: dict[str, ErrorEvent] = {}
    for ev in recent:
        latest.setdefault(ev.fingerprint, ev)
    groups: list[dict[str, Any]] = []
    for t in totals:
        severity, fingerprint, error_type = series.error_parts(t.series)
        last = latest.get(fingerprint)
        groups.append(
            {
                "fingerprint": fingerprint,
                "type": error_type,
                "severity": severity,
                "count": t.count,
                "first_seen": instant(t.first_bucket),
                "last_seen": instant(t.last_bucket if last is None else last.timestamp),
                "message": None if last is None else last.message,
            }
        )
    groups.sort(key=lambda g: (-g["count"], g["fingerprint"], g["severity"]))
    return totals, groups, recent


async def errors(q: Query) -> dict[str, Any]:
    (totals, groups, recent), trend_rows = await asyncio.gather(
        error_figures(q),
        q.rollups(ERROR_TOTAL),
    )
    by_type: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    for t in totals:
        severity, _, error_type = series.error_parts(t.series)
        by_type[error_type] += t.count
        by_severity[severity] += t.count
    return {
        **header(q.project_id, q.span),
        "total_errors": sum(t.count for t in totals),
        "errors_by_type": [
            {"type": t, "count": c}
            for t, c in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "errors_by_severity": [
            {"severity": s, "count": by_severity.get(s, 0)} for s in SEVERITY_ORDER
        ],
        "error_trend": trend(trend_rows, q.span, lambda r: {"count": r.count}),
        "recent_errors": [recent_error(ev) for ev in recent],
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
        "deployment_id": ev.deployment_id,
        "timestamp": instant(ev.timestamp),
    }
