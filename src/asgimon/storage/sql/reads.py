"""Reading events, rollups and their sums, one statement per question."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    Select,
    TextClause,
    bindparam,
    case,
    false,
    func,
    select,
    text,
    union_all,
)

from asgimon import histogram
from asgimon.events import EVENT_TYPES, Event
from asgimon.rollups import Rollup, Window
from asgimon.series import TOTAL_SERIES
from asgimon.storage.base import SeriesTotal, sum_per_bucket
from asgimon.storage.sql import tables as s
from asgimon.storage.sql.rows import from_row, us

from .base import SQLBase


class Reads(SQLBase):
    def _where(
        self, kind: str, project_id: str | None, start: float | None, end: float | None
    ) -> tuple[Any, list[Any]]:
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}")
        t = s.table_of(kind)
        cond = []
        if project_id is not None:
            cond.append(t.c.project_id == project_id)
        if start is not None:
            cond.append(t.c.created_at >= us(start))
        if end is not None:
            cond.append(t.c.created_at < us(end))
        return t, cond

    async def events(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 1000,
        match: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        t, cond = self._where(kind, project_id, start, end)
        for name, value in (match or {}).items():
            cond.append(t.c[name] == value)
        stmt = select(t).where(*cond).order_by(t.c.created_at.desc()).limit(limit)
        return [from_row(kind, row) for row in await self._fetch(stmt)]

    async def count(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        t, cond = self._where(kind, project_id, start, end)
        rows = await self._fetch(select(func.count()).select_from(t).where(*cond))
        return int(rows[0][0])

    async def rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        stmt, params = _rollup_read("rows", project_id, resolution, start, end, series_prefix)
        loads, from_bytes = histogram.loads, histogram.Packed.from_bytes
        # Plain tuples: a month of a busy project is thousands of rows, and attribute access
        # on each row cost more than the query.
        out = [
            Rollup(
                project_id,
                series,
                resolution,
                bucket,
                count,
                errors,
                value_count,
                value_sum,
                value_min,
                value_max,
                {} if packed is not None else loads(hist),
                None if packed is None else from_bytes(packed),
            )
            for (
                series,
                bucket,
                count,
                errors,
                value_count,
                value_sum,
                value_min,
                value_max,
                packed,
                hist,
            ) in cast("list[tuple[Any, ...]]", await self._fetch(stmt, params))
        ]
        # Sorted here: an ORDER BY on the bucket leads SQLite to its bucket index, which
        # walks every series of the project in the range.
        out.sort(key=_bucket_then_series)
        return out

    async def series_rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        stmt, params = _rollup_read("rows", project_id, resolution, start, end, series_prefix)
        loads, merge_into = histogram.loads, histogram.merge_into
        merged: dict[str, Rollup] = {}
        # Merged as the rows come: no object per row outlives its turn, where a Rollup and
        # a Packed per row (1,500 for a month of 50 endpoints) lived through the request
        # and pushed the collector into full collections.
        for (
            series,
            bucket,
            count,
            errors,
            value_count,
            value_sum,
            value_min,
            value_max,
            packed,
            hist,
        ) in cast("list[tuple[Any, ...]]", await self._fetch(stmt, params)):
            into = merged.get(series)
            if into is None:
                into = merged[series] = Rollup(project_id, series, resolution, bucket)
            elif bucket < into.bucket_start:
                into.bucket_start = bucket
            into.count += count
            into.error_count += errors
            into.value_count += value_count
            into.value_sum += value_sum
            if value_min is not None and (into.value_min is None or value_min < into.value_min):
                into.value_min = value_min
            if value_max is not None and (into.value_max is None or value_max > into.value_max):
                into.value_max = value_max
            if packed is None:
                merge_into(into.hist, loads(hist))
            elif into.packed is None:
                into.packed = histogram.Packed.from_bytes(packed)
            else:
                into.packed.add_bytes(packed)
        return [merged[series] for series in sorted(merged)]

    async def totals(
        self,
        *,
        project_id: str,
        resolution: str,
        windows: Sequence[tuple[float, float]],
        series: str,
    ) -> list[Rollup]:
        if not windows:
            return []
        rows: dict[int, Any] = {}
        # SQLite caps a compound SELECT at 500 terms.
        for first in range(0, len(windows), 200):
            chunk = windows[first : first + 200]
            params: dict[str, Any] = {"p": project_id, "r": resolution, "s": series}
            for i, (lo, hi) in enumerate(chunk):
                params[f"lo{i}"] = math.ceil(lo)
                params[f"hi{i}"] = math.ceil(hi)
            stmt = _totals_sql(len(chunk))
            rows.update((first + r.w, r) for r in await self._fetch(stmt, params))
        out = []
        for i, (lo, _) in enumerate(windows):
            total = Rollup(project_id, series, resolution, int(lo))
            r = rows.get(i)
            if r is not None:
                total.count, total.error_count = int(r.n), int(r.e)
                total.value_count, total.value_sum = int(r.vn), float(r.vs)
            out.append(total)
        return out

    async def series_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[SeriesTotal]:
        project_id, resolution, start, end = window
        stmt, params = _rollup_read("sums", project_id, resolution, start, end, series_prefix)
        totals = [
            SeriesTotal(series, int(n), int(e), int(vn), float(vs), int(lo), int(hi))
            for series, n, e, vn, vs, lo, hi in cast(
                "list[tuple[Any, ...]]", await self._fetch(stmt, params)
            )
        ]
        return sorted(totals, key=attrgetter("series"))

    async def bucket_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        stmt, params = _rollup_read("buckets", project_id, resolution, start, end, series_prefix)
        rows = cast("list[tuple[int, int, int, int, float]]", await self._fetch(stmt, params))
        return sum_per_bucket(project_id, resolution, rows)

    async def projects(self) -> list[str]:
        # A loose index scan: one index seek per project, where DISTINCT read every rollup
        # row (0.2 s at ten million calls).
        return [r[0] for r in await self._fetch(_PROJECTS_SQL)]

    async def health(self) -> dict[str, Any]:
        await self._fetch(select(1))
        return {"ok": True, "backend": self.dialect, "walBytes": self.wal_bytes()}


def _rollup_columns() -> Select[Any]:
    t = s.rollups
    # A packed histogram is read instead of the JSON one, never both.
    json_hist = case((t.c.hist_packed.is_(None), t.c.hist), else_=None)
    return select(
        t.c.series,
        t.c.bucket_start,
        t.c["count"],
        t.c.error_count,
        t.c.value_count,
        t.c.value_sum,
        t.c.value_min,
        t.c.value_max,
        t.c.hist_packed,
        json_hist,
    )


def _bucket_then_series(r: Rollup) -> tuple[int, str]:
    return r.bucket_start, r.series


def _series_total_columns() -> Select[Any]:
    t = s.rollups
    return select(
        t.c.series,
        func.sum(t.c["count"]),
        func.sum(t.c.error_count),
        func.sum(t.c.value_count),
        func.sum(t.c.value_sum),
        func.min(t.c.bucket_start),
        func.max(t.c.bucket_start),
    ).group_by(t.c.series)


def _bucket_total_columns() -> Select[Any]:
    t = s.rollups
    # Summed by the caller: with a GROUP BY on the bucket, SQLite reads through its bucket
    # index, every series of the project in the range, for the order it gives.
    return select(t.c.bucket_start, t.c["count"], t.c.error_count, t.c.value_count, t.c.value_sum)


_COLUMNS: dict[str, Callable[[], Select[Any]]] = {
    "rows": _rollup_columns,
    "sums": _series_total_columns,
    "buckets": _bucket_total_columns,
}


def _rollup_read(
    kind: str,
    project_id: str,
    resolution: str,
    start: float,
    end: float,
    series_prefix: str | tuple[str, ...],
) -> tuple[Select[Any] | CompoundSelect[Any], dict[str, Any]]:
    """A read of the rollups of a range (``kind``: ``rows``, ``sums`` per series or
    ``buckets``, sums per bucket): the statement, made once per shape, and its parameters."""
    params: dict[str, Any] = {
        "p": project_id,
        "r": resolution,
        "lo": math.ceil(start),
        "hi": math.ceil(end),
    }
    prefixes = (series_prefix,) if isinstance(series_prefix, str) else series_prefix
    if not prefixes:  # no prefix at all: no series
        return _COLUMNS[kind]().where(false()), params
    if not all(prefixes):  # "" is every series
        return _rollup_read_sql(kind, 0, 0), params
    ranges = sorted(p for p in prefixes if p not in TOTAL_SERIES)
    # A prefix inside another reads nothing more, and would read its rows twice.
    ranges = [p for i, p in enumerate(ranges) if not any(p.startswith(q) for q in ranges[:i])]
    exact = [p for p in prefixes if p in TOTAL_SERIES and not p.startswith(tuple(ranges))]
    params.update((f"x{i}", series) for i, series in enumerate(exact))
    for i, prefix in enumerate(ranges):
        params[f"s{i}"], params[f"e{i}"] = prefix, _after_prefix(prefix)
    return _rollup_read_sql(kind, len(exact), len(ranges)), params


@functools.lru_cache(maxsize=64)
def _rollup_read_sql(kind: str, exact: int, ranges: int) -> Select[Any] | CompoundSelect[Any]:
    """One SELECT per kind of series joined by UNION ALL, so each finds its rows through the
    primary key (an OR of them would not). Made once: building the expression costs more
    than running it."""
    t = s.rollups
    columns = _COLUMNS[kind]
    common = [
        t.c.project_id == bindparam("p"),
        t.c.resolution == bindparam("r"),
        t.c.bucket_start >= bindparam("lo"),
        t.c.bucket_start < bindparam("hi"),
    ]
    if not exact and not ranges:
        return columns().where(*common)
    wanted: list[Any] = [bindparam(f"x{i}") for i in range(exact)]
    branches = [columns().where(*common, t.c.series.in_(wanted))] if exact else []
    for i in range(ranges):
        found = _series_between(bindparam(f"s{i}"), bindparam(f"e{i}"), f"series_{i}")
        branches.append(columns().where(*common, t.c.series.in_(found)))
    return branches[0] if len(branches) == 1 else union_all(*branches)


def _series_between(first: Any, stop: Any, name: str) -> Select[Any]:
    """The project's series from ``first`` (inclusive) to ``stop``, by a loose index scan:
    one seek per series in the primary key ``(project_id, resolution, series,
    bucket_start)``.

    A read of a series range walks every bucket of every series in it (a year of day
    buckets, to keep a month), and the index on the bucket every series in the time range:
    given the series one by one, the database seeks each one's range of buckets. Series
    compare byte by byte (schema version 4), so a prefix's series lie between the prefix
    and :func:`_after_prefix`.
    """
    t, inner = s.rollups, s.rollups.alias()
    walk = (
        select(func.min(t.c.series).label("series"))
        .where(
            t.c.project_id == bindparam("p"),
            t.c.resolution == bindparam("r"),
            t.c.series >= first,
            t.c.series < stop,
        )
        .cte(name, recursive=True)
    )
    following = (
        select(func.min(inner.c.series))
        .where(
            inner.c.project_id == bindparam("p"),
            inner.c.resolution == bindparam("r"),
            inner.c.series > walk.c.series,
            inner.c.series < stop,
        )
        .scalar_subquery()
    )
    walk = walk.union_all(select(following).where(walk.c.series.is_not(None)))
    return select(walk.c.series).where(walk.c.series.is_not(None))


def _after_prefix(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix``, in the byte
    order of UTF-8 (that of code points)."""
    # Nothing follows the last code point: the bound comes from the characters before it.
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        raise ValueError(f"series prefix {prefix!r} has no upper bound")
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters UTF-8 can carry
        following = 0xE000
    return stem[:-1] + chr(following)


_PROJECTS_SQL = text(
    f"WITH RECURSIVE p(id) AS ("
    f" SELECT MIN(project_id) FROM {s.rollups.name}"
    f" UNION ALL"
    f" SELECT (SELECT MIN(project_id) FROM {s.rollups.name} WHERE project_id > p.id)"
    f" FROM p WHERE p.id IS NOT NULL"
    f") SELECT id FROM p WHERE id IS NOT NULL ORDER BY id"
)


@functools.lru_cache(maxsize=256)
def _totals_sql(windows: int) -> TextClause:
    """Sums per window in one round trip, as text: building the same expression with
    SQLAlchemy's constructs costs more than running it."""
    part = (
        'SELECT {i} AS w, COALESCE(SUM("count"), 0) AS n, COALESCE(SUM(error_count), 0) AS e,'
        " COALESCE(SUM(value_count), 0) AS vn, COALESCE(SUM(value_sum), 0) AS vs"
        f" FROM {s.rollups.name} WHERE project_id = :p AND resolution = :r AND series = :s"
        " AND bucket_start >= :lo{i} AND bucket_start < :hi{i}"
    )
    return text(" UNION ALL ".join(part.format(i=i) for i in range(windows)))
