"""``GET /api/errors/{projectId}``: error groups with their lifecycle, counts by type and
severity, and their trend, with filters.

Counts come from the ``error:{severity}:{fingerprint}:{type}`` rollups, summed per group by
the store, so they are exact over any range; a group's status, first occurrence and
regressions from its stored lifecycle; its message and last occurrence from the most recent
raw error events. Filters by type, severity and status narrow the rollups; filters by
endpoint or deployment need each error's own fields, so those count the raw error events of
the range (all of them up to :data:`RAW_LIMIT`; ``exact`` says whether that was all).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from asgimon import series
from asgimon.errortracking.state import SEVERITY_RANK, GroupState, effective
from asgimon.events import ErrorEvent
from asgimon.rollups import Rollup, Window
from asgimon.series import ERROR_TOTAL
from asgimon.storage.base import SeriesTotal

from .common import header, instant, trend
from .query import Query
from .ranges import BadQuery
from .releases import Releases

RECENT = 200
RAW_LIMIT = 10_000
SEVERITY_ORDER = ("critical", "high", "medium", "low")
STATUSES = ("unresolved", "resolved", "ignored", "regressed")
SPIKE_FACTOR = 2.0
SPIKE_MIN = 5
"""A group spikes when its count in the range is over twice the previous range's, and at
least this many: a first occurrence is new, not a spike."""

PARAMS = {
    "status": "groups in this state: " + ", ".join(STATUSES),
    "type": "errors of this type",
    "severity": "errors of this severity: " + ", ".join(SEVERITY_ORDER),
    "endpoint": "errors at this endpoint template (counted from raw errors)",
    "deployment": "errors that happened in this deployment (counted from raw errors)",
    "newSince": "groups first seen since this deployment went live",
    "firstSeenIn": "groups first seen in this deployment",
}


@dataclass(frozen=True, slots=True)
class Filters:
    status: str | None
    type: str | None
    severity: str | None
    endpoint: str | None
    deployment: str | None
    new_since: str | None
    first_seen_in: str | None

    @classmethod
    def of(cls, q: Query) -> Filters:
        def text(name: str) -> str | None:
            raw = q.params.get(name)
            if raw is not None and not 0 < len(raw) <= 400:
                raise BadQuery(name, "must be 1 to 400 characters")
            return raw

        def choice(name: str, choices: tuple[str, ...]) -> str | None:
            raw = text(name)
            if raw is not None and raw not in choices:
                raise BadQuery(name, "must be one of " + ", ".join(choices))
            return raw

        return cls(
            status=choice("status", STATUSES),
            type=text("type"),
            severity=choice("severity", SEVERITY_ORDER),
            endpoint=text("endpoint"),
            deployment=text("deployment"),
            new_since=text("newSince"),
            first_seen_in=text("firstSeenIn"),
        )

    @property
    def by_event(self) -> bool:
        return self.endpoint is not None or self.deployment is not None

    @property
    def by_release(self) -> bool:
        return any(v is not None for v in (self.deployment, self.new_since, self.first_seen_in))


NO_FILTERS = Filters(None, None, None, None, None, None, None)


def _keeps_series(f: Filters, name: str) -> bool:
    severity, _, error_type = series.error_parts(name)
    return (f.type is None or error_type == f.type) and (
        f.severity is None or severity == f.severity
    )


def status_of(state: GroupState | None, now: float) -> tuple[str, bool]:
    if state is None:
        return "unresolved", False
    current = effective(state, now)
    return current.status, current.regressed


async def _event_totals(
    q: Query, f: Filters, releases: Releases
) -> tuple[list[SeriesTotal], list[ErrorEvent], bool]:
    """Series totals counted from raw errors, for the filters rollups cannot apply."""
    match = {"endpoint": f.endpoint} if f.endpoint is not None else None
    found = await q.events("error", RAW_LIMIT, match)
    evs = [ev for ev in found if isinstance(ev, ErrorEvent)]
    if f.deployment is not None:
        evs = [ev for ev in evs if releases.contains(f.deployment, ev)]
    sums: dict[str, list[Any]] = {}
    width = q.span.width
    for ev in evs:
        name = series.error(ev.severity, ev.fingerprint, ev.error_type)
        bucket = int((ev.timestamp - q.span.start) // width * width + q.span.start)
        acc = sums.setdefault(name, [0, bucket, bucket])
        acc[0] += 1
        acc[1] = min(acc[1], bucket)
        acc[2] = max(acc[2], bucket)
    totals = [SeriesTotal(s, n, n, 0, 0.0, lo, hi) for s, (n, lo, hi) in sorted(sums.items())]
    return totals, evs, len(found) < RAW_LIMIT


def _event_trend(q: Query, evs: list[ErrorEvent]) -> list[Rollup]:
    width = q.span.width
    by: dict[int, Rollup] = {}
    for ev in evs:
        bucket = int((ev.timestamp - q.span.start) // width * width + q.span.start)
        r = by.get(bucket) or by.setdefault(
            bucket, Rollup(q.project_id, "*", q.span.resolution, bucket)
        )
        r.count += 1
        r.error_count += 1
    return [by[b] for b in sorted(by)]


@dataclass(slots=True)
class ErrorFigures:
    """The series totals kept, the groups (largest first) and the recent events; with an
    endpoint or deployment filter, the raw errors counted and whether they were all."""

    totals: list[SeriesTotal]
    groups: list[dict[str, Any]]
    recent: list[ErrorEvent]
    raw: list[ErrorEvent] | None
    exact: bool


async def error_figures(q: Query, f: Filters | None = None) -> ErrorFigures:
    f = f or Filters.of(q)
    span = q.span
    previous = Window(
        q.project_id, span.resolution, span.start - (span.end - span.start), span.start
    )
    totals, before, found, states = await asyncio.gather(
        q.series_totals(series.ERROR),
        q.storage.series_totals(previous, series.ERROR),
        q.events("error", RECENT),
        q.error_groups(),
    )
    releases = (
        await Releases.load(q.storage, q.project_id, span.end) if f.by_release else Releases([])
    )
    recent = [ev for ev in found if isinstance(ev, ErrorEvent)]
    exact = True
    raw: list[ErrorEvent] | None = None
    if f.by_event:
        totals, raw, exact = await _event_totals(q, f, releases)
        recent = raw[:RECENT]
    totals = [t for t in totals if _keeps_series(f, t.series)]
    recent = [ev for ev in recent if _keeps_series(f, _series_of(ev))]
    held = {s.fingerprint: s for s in states}
    groups = _groups(totals, before, recent, held, q.now)
    groups = [g for g in groups if _keeps_group(g, f, releases)]
    kept = {g["fingerprint"] for g in groups}
    totals = [t for t in totals if series.error_parts(t.series)[1] in kept]
    recent = [ev for ev in recent if ev.fingerprint in kept]
    if raw is not None:
        raw = [ev for ev in raw if ev.fingerprint in kept and _keeps_series(f, _series_of(ev))]
    return ErrorFigures(totals, groups, recent, raw, exact)


def _series_of(ev: ErrorEvent) -> str:
    return series.error(ev.severity, ev.fingerprint, ev.error_type)


def _groups(
    totals: list[SeriesTotal],
    before: list[SeriesTotal],
    recent: list[ErrorEvent],
    held: dict[str, GroupState],
    now: float,
) -> list[dict[str, Any]]:
    latest: dict[str, ErrorEvent] = {}
    for ev in recent:
        latest.setdefault(ev.fingerprint, ev)
    previous: Counter[str] = Counter()
    for t in before:
        previous[series.error_parts(t.series)[1]] += t.count
    merged: dict[str, dict[str, Any]] = {}
    for t in totals:
        severity, fingerprint, error_type = series.error_parts(t.series)
        g = merged.get(fingerprint)
        if g is None:
            g = merged[fingerprint] = {
                "fingerprint": fingerprint,
                "type": error_type,
                "severity": severity,
                "count": 0,
                "first_bucket": t.first_bucket,
                "last_bucket": t.last_bucket,
            }
        g["count"] += t.count
        g["first_bucket"] = min(g["first_bucket"], t.first_bucket)
        g["last_bucket"] = max(g["last_bucket"], t.last_bucket)
        if SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(g["severity"], 0):
            g["severity"] = severity
    groups = []
    for fingerprint, g in merged.items():
        state = held.get(fingerprint)
        last = latest.get(fingerprint)
        status, regressed = status_of(state, now)
        before_count = previous.get(fingerprint, 0)
        first_seen = g.pop("first_bucket")
        last_seen = g.pop("last_bucket") if last is None else last.timestamp
        g.pop("last_bucket", None)
        if state is not None:
            # Exact, where a bucket's start only bounds it: which deployment brought a
            # group turns on the second.
            first_seen = state.first_seen
        groups.append(
            {
                **g,
                "message": last.message if last is not None else (state.message if state else None),
                "first_seen": instant(first_seen),
                "last_seen": instant(last_seen),
                "status": status,
                "regressed": regressed,
                "regressions": state.regressions if state else 0,
                "previous_count": before_count,
                "spike": g["count"] >= SPIKE_MIN and g["count"] > SPIKE_FACTOR * before_count,
                "total_count": state.count if state else g["count"],
                "first_release": state.first_release if state else None,
                "last_release": state.last_release if state else None,
                "resolved_at": instant(state.resolved_at) if state and state.resolved_at else None,
                "ignore_until": (
                    instant(state.ignore_until) if state and state.ignore_until else None
                ),
                "ignore_count": state.ignore_count if state else None,
                "_first_seen": first_seen,
                "_first_release": state.first_release if state else None,
            }
        )
    groups.sort(key=lambda g: (-g["count"], g["fingerprint"]))
    return groups


def _keeps_group(g: dict[str, Any], f: Filters, releases: Releases) -> bool:
    first_seen, first_release = g.pop("_first_seen"), g.pop("_first_release")
    if f.status is not None:
        if f.status == "regressed":
            if not g["regressed"]:
                return False
        elif g["status"] != f.status:
            return False
    if f.new_since is not None:
        live = releases.window(f.new_since)
        if live is None or first_seen < live.start:
            return False
    return (
        f.first_seen_in is None
        or releases.first_seen_in(first_seen, first_release) == f.first_seen_in
    )


async def errors(q: Query) -> dict[str, Any]:
    f = Filters.of(q)
    plain = f == NO_FILTERS
    if plain:
        figures, trend_rows = await asyncio.gather(error_figures(q, f), q.rollups(ERROR_TOTAL))
    else:
        figures = await error_figures(q, f)
        if figures.raw is not None:
            trend_rows = _event_trend(q, figures.raw)
        elif figures.totals:
            trend_rows = await q.bucket_totals(tuple(t.series for t in figures.totals))
        else:
            trend_rows = []
    by_type: Counter[str] = Counter()
    by_severity: Counter[str] = Counter()
    for t in figures.totals:
        severity, _, error_type = series.error_parts(t.series)
        by_type[error_type] += t.count
        by_severity[severity] += t.count
    return {
        **header(q.project_id, q.span),
        "total_errors": sum(t.count for t in figures.totals),
        "exact": figures.exact,
        "errors_by_type": [
            {"type": t, "count": c}
            for t, c in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "errors_by_severity": [
            {"severity": s, "count": by_severity.get(s, 0)} for s in SEVERITY_ORDER
        ],
        "error_trend": trend(trend_rows, q.span, lambda r: {"count": r.count}),
        "recent_errors": [recent_error(ev) for ev in figures.recent],
        "groups": figures.groups,
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
        "user_id": ev.user_id,
        "timestamp": instant(ev.timestamp),
    }
