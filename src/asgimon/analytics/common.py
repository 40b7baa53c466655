"""Pieces every analytics computation shares: instants, rates, trends and latency figures.

Analytics answer plain figures: snake_case names, instants as aware ``datetime`` and days as
``date``, usable as they are by alert rules and pages; the JSON API shapes them into its
camelCase wire form (``dashboard/wire.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

from asgimon.rollups import Rollup

from .ranges import TimeRange


class Verbatim:
    """A figure whose keys are data (variable names, context keys), not names of ours: the
    wire form leaves it as it is."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def instant(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def day(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def header(project_id: str, span: TimeRange) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "start": instant(span.start),
        "end": instant(span.end),
        "resolution": span.resolution,
    }


def trend(
    rows: Iterable[Rollup],
    span: TimeRange,
    figures: Callable[[Rollup], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One point per bucket of the range (hour or day), empty buckets included."""
    merged: dict[int, Rollup] = {}
    for r in rows:
        into = merged.get(r.bucket_start)
        if into is None:
            into = merged[r.bucket_start] = Rollup(r.project_id, "*", r.resolution, r.bucket_start)
        into.merge(r)
    points = []
    bucket = int(span.start)
    while bucket < span.end:
        r = merged.get(bucket) or Rollup("*", "*", span.resolution, bucket)
        points.append({"time": instant(bucket), **figures(r)})
        bucket += span.width
    return points


def latency(r: Rollup) -> dict[str, Any]:
    """Count, error rate, average and percentiles (ms) of one merged rollup."""
    p50, p95, p99 = r.quantiles((0.5, 0.95, 0.99))
    return {
        "count": r.count,
        "errors": r.error_count,
        "error_rate": ratio(r.error_count, r.count),
        "avg": r.avg,
        "p50": p50,
        "p95": p95,
        "p99": p99,
    }


def group(rows: Iterable[Rollup], key: Callable[[Rollup], str]) -> dict[str, Rollup]:
    """Rollups merged per ``key`` (e.g. per endpoint across buckets), sorted by key."""
    out: dict[str, Rollup] = {}
    for r in rows:
        k = key(r)
        into = out.get(k)
        if into is None:
            into = out[k] = Rollup(r.project_id, k, r.resolution, 0)
        into.merge(r)
    return dict(sorted(out.items()))
