"""Time ranges of the analytics API: ``range=1h|24h|7d|30d|90d`` or ``start`` & ``end``.

A range is widened to whole rollup buckets: whole hours up to two days, whole days beyond,
so every figure is read from complete rollups and matches what raw events in the widened
range give.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from asgimon._validate import iso_instant

RANGES = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "90d": 90 * 86_400}
DEFAULT_RANGE = "7d"
MAX_SPAN_S = 366 * 86_400
HOURLY_UP_TO_S = 2 * 86_400
EARLIEST, LATEST = 0.0, 221_845_392_000.0  # 1970-01-01 and 9000-01-01, so widening stays valid


class BadQuery(ValueError):
    """A query parameter is wrong: ``field`` names it for the 422 body."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: float
    end: float
    resolution: str  # "hour" or "day": the rollups the range is read from

    @property
    def width(self) -> int:
        return 3600 if self.resolution == "hour" else 86_400


def instant_param(field: str, raw: str) -> float:
    parsed = iso_instant(raw)
    if parsed is None:
        raise BadQuery(field, "must be an ISO 8601 timestamp with a UTC offset")
    if parsed.tzinfo is None:
        raise BadQuery(field, "must carry a UTC offset (e.g. 2026-11-27T10:00:00Z)")
    ts = parsed.timestamp()
    if not EARLIEST <= ts <= LATEST:
        raise BadQuery(field, "must be between 1970 and 9000")
    return ts


def parse_range(query: Mapping[str, str], now: float | None = None) -> TimeRange:
    """The range a query asks for, widened to whole buckets; :class:`BadQuery` if wrong."""
    now = time.time() if now is None else now
    has_range = "range" in query
    has_start, has_end = "start" in query, "end" in query
    if has_range and (has_start or has_end):
        raise BadQuery("range", "give either range, or start and end, not both")
    if has_start != has_end:
        raise BadQuery("end" if has_start else "start", "start and end go together")
    if has_start:
        start = instant_param("start", query["start"])
        end = instant_param("end", query["end"])
        if end <= start:
            raise BadQuery("end", "must be after start")
    else:
        name = query.get("range", DEFAULT_RANGE)
        if name not in RANGES:
            raise BadQuery("range", "must be one of " + ", ".join(RANGES))
        start, end = now - RANGES[name], now
    if end - start > MAX_SPAN_S:
        raise BadQuery("end", "a range spans at most 366 days")
    resolution = "hour" if end - start <= HOURLY_UP_TO_S else "day"
    width = 3600 if resolution == "hour" else 86_400
    return TimeRange(
        start=math.floor(start / width) * width,
        end=math.ceil(end / width) * width,
        resolution=resolution,
    )
