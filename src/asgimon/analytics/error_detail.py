"""``GET /api/errors/{projectId}/groups/{fingerprint}``: one error group, whole.

Its lifecycle, its counts over the range and the one before (the spike), its trend, the
latest occurrence with its stack (the app's own frames marked) and context, the recent
occurrences, and who and what it touched: users, endpoints, deployments.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from asgimon import series
from asgimon.events import ErrorEvent
from asgimon.rollups import Window

from .common import Verbatim, header, instant, trend
from .error_groups import SEVERITY_ORDER, SPIKE_FACTOR, SPIKE_MIN, status_of
from .query import Query
from .releases import Releases

OCCURRENCES = 500
LISTED = 50
TOP = 20  # endpoints and deployments listed, the most frequent first


def exception_chain(ev: ErrorEvent) -> list[dict[str, Any]]:
    """The stored chain (outermost first), or [] for a report without frames."""
    if not ev.exception:
        return []
    try:
        chain = json.loads(ev.exception)
    except ValueError:
        return []
    return chain if isinstance(chain, list) else []


async def error_group(q: Query, fingerprint: str) -> dict[str, Any] | None:
    """The group's figures over the range, or None if the project has no such group."""
    span = q.span
    length = span.end - span.start
    previous = Window(q.project_id, span.resolution, span.start - length, span.start)
    names = tuple(f"{series.ERROR}{s}:{fingerprint}:" for s in SEVERITY_ORDER)
    totals, before, found, states, releases = await asyncio.gather(
        q.series_totals(names),
        q.storage.series_totals(previous, names),
        q.events("error", OCCURRENCES, {"fingerprint": fingerprint}),
        q.storage.error_groups(q.project_id, [fingerprint]),
        Releases.load(q.storage, q.project_id, span.end),
    )
    occurrences = [ev for ev in found if isinstance(ev, ErrorEvent)]
    state = states[0] if states else None
    if not totals and not occurrences and state is None:
        return None
    rows = await q.rollups(tuple(t.series for t in totals)) if totals else []
    count = sum(t.count for t in totals)
    before_count = sum(t.count for t in before)
    latest = occurrences[0] if occurrences else None
    status, regressed = status_of(state, q.now)
    users = {ev.user_id for ev in occurrences if ev.user_id}
    endpoints = Counter((ev.method, ev.endpoint) for ev in occurrences if ev.endpoint)
    deployments = Counter(releases.of(ev) for ev in occurrences)
    severities = [series.error_parts(t.series)[0] for t in totals]
    first_bucket = min((t.first_bucket for t in totals), default=None)
    first_seen = state.first_seen if state else first_bucket
    last_seen = latest.timestamp if latest else (state.last_seen if state else None)
    return {
        **header(q.project_id, span),
        "fingerprint": fingerprint,
        "type": latest.error_type if latest else (state.error_type if state else ""),
        "message": latest.message if latest else (state.message if state else ""),
        "severity": _highest(severities + ([state.severity] if state else [])),
        "status": status,
        "regressed": regressed,
        "regressions": state.regressions if state else 0,
        "count": count,
        "previous_count": before_count,
        "spike": count >= SPIKE_MIN and count > SPIKE_FACTOR * before_count,
        "total_count": state.count if state else count,
        "first_seen": instant(first_seen) if first_seen is not None else None,
        "last_seen": instant(last_seen) if last_seen is not None else None,
        "first_release": releases.first_seen_in(first_seen, state.first_release)
        if state and first_seen is not None
        else None,
        "last_release": state.last_release if state else None,
        "resolved_at": _at(state.resolved_at if state else None),
        "ignore_until": _at(state.ignore_until if state else None),
        "ignore_count": state.ignore_count if state else None,
        "ignored_seen": state.ignored_seen if state else 0,
        "changed_at": _at(state.changed_at if state else None),
        "changed_by": state.changed_by if state else None,
        "trend": trend(rows, span, lambda r: {"count": r.count}),
        "users_affected": len(users),
        "endpoints": [
            {"method": m, "endpoint": e, "count": c}
            for (m, e), c in sorted(endpoints.items(), key=lambda kv: (-kv[1], str(kv[0])))[:TOP]
        ],
        "deployments": [
            {"deployment_id": d, "count": c}
            for d, c in sorted(deployments.items(), key=lambda kv: (-kv[1], str(kv[0])))[:TOP]
        ],
        "latest": latest,
        "exception": Verbatim(exception_chain(latest)) if latest else Verbatim([]),
        "occurrences": [_occurrence(ev, releases) for ev in occurrences[:LISTED]],
        "exact": len(found) < OCCURRENCES,
    }


def _highest(severities: list[str]) -> str:
    return min(severities, key=SEVERITY_ORDER.index) if severities else "low"


def _at(ts: float | None) -> Any:
    return instant(ts) if ts is not None else None


def _occurrence(ev: ErrorEvent, releases: Releases) -> dict[str, Any]:
    return {
        "id": ev.id,
        "timestamp": instant(ev.timestamp),
        "message": ev.message,
        "severity": ev.severity,
        "handled": ev.handled,
        "endpoint": ev.endpoint,
        "method": ev.method,
        "user_id": ev.user_id,
        "request_id": ev.request_id,
        "deployment_id": releases.of(ev),
    }
