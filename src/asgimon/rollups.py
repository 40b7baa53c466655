"""Pre-aggregation of events per (project, series, minute / hour / day).

Pure functions: a batch of events becomes a set of :class:`Rollup` deltas that a storage
backend adds to what it holds (SQL by UPSERT, so many workers merge into one row). The
dashboard reads rollups, never scans raw events, for figures over long ranges.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import histogram
from .events import Event

RESOLUTIONS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}

RollupKey = tuple[str, str, str, int]
"""(project_id, series, resolution, bucket_start in epoch seconds)."""


@dataclass(frozen=True, slots=True)
class Window:
    """What a rollup read covers: one project's buckets of one resolution starting in
    ``[start, end)`` (epoch seconds)."""

    project_id: str
    resolution: str
    start: float
    end: float

    def __iter__(self) -> Iterator[Any]:
        """``project_id, resolution, start, end = window``."""
        return iter((self.project_id, self.resolution, self.start, self.end))


@dataclass(slots=True)
class Rollup:
    """Counts, sums and a latency histogram for one series in one time bucket."""

    project_id: str
    series: str
    resolution: str
    bucket_start: int
    count: int = 0
    error_count: int = 0
    value_count: int = 0
    value_sum: float = 0.0
    value_min: float | None = None
    value_max: float | None = None
    hist: histogram.Histogram = field(default_factory=dict)
    # Read from a closed bucket, the histogram may come packed: the whole histogram is then
    # ``hist`` and ``packed`` together (see :class:`~asgimon.histogram.Packed`).
    packed: histogram.Packed | None = None

    @property
    def key(self) -> RollupKey:
        return (self.project_id, self.series, self.resolution, self.bucket_start)

    @property
    def avg(self) -> float | None:
        return self.value_sum / self.value_count if self.value_count else None

    def add(self, value: float | None, error: bool) -> None:
        self.count += 1
        if error:
            self.error_count += 1
        if value is not None:
            self.value_count += 1
            self.value_sum += value
            if self.value_min is None or value < self.value_min:
                self.value_min = value
            if self.value_max is None or value > self.value_max:
                self.value_max = value
            i = histogram.bin_index(value)
            self.hist[i] = self.hist.get(i, 0) + 1

    def add_many(self, values: Sequence[float]) -> None:
        """``add`` of each of ``values``, none an error: a batch's durations at once."""
        if not values:
            return
        n = len(values)
        self.count += n
        self.value_count += n
        self.value_sum += sum(values)
        lo, hi = min(values), max(values)
        if self.value_min is None or lo < self.value_min:
            self.value_min = lo
        if self.value_max is None or hi > self.value_max:
            self.value_max = hi
        hist = self.hist
        for i in map(histogram.bin_index, values):
            hist[i] = hist.get(i, 0) + 1

    def merge(self, other: Rollup) -> None:
        self.count += other.count
        self.error_count += other.error_count
        self.value_count += other.value_count
        self.value_sum += other.value_sum
        if other.value_min is not None and (
            self.value_min is None or other.value_min < self.value_min
        ):
            self.value_min = other.value_min
        if other.value_max is not None and (
            self.value_max is None or other.value_max > self.value_max
        ):
            self.value_max = other.value_max
        histogram.merge_into(self.hist, other.hist)
        if other.packed is not None:
            if self.packed is None:
                self.packed = other.packed.copy()
            else:
                self.packed.add(other.packed)

    def _packed_whole(self) -> histogram.Packed | None:
        if self.packed is None:
            return None
        if self.hist:
            # Folded once, for the several reads that follow; the same histogram still.
            whole = histogram.Packed.from_hist(self.hist)
            whole.add(self.packed)
            self.packed, self.hist = whole, {}
        return self.packed

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        whole = self._packed_whole()
        return histogram.quantiles(self.hist, qs) if whole is None else whole.quantiles(qs)

    def quantile(self, q: float) -> float | None:
        return self.quantiles((q,))[0]

    def count_at_most(self, threshold: float) -> int:
        """How many values were at most ``threshold``, to bin accuracy (Apdex)."""
        whole = self._packed_whole()
        if whole is None:
            return histogram.count_at_most(self.hist, threshold)
        return whole.count_at_most(threshold)

    def full_hist(self) -> histogram.Histogram:
        """The whole histogram as a dict, packed part included."""
        if self.packed is None:
            return self.hist
        return histogram.merged([self.hist, self.packed.to_hist()])


def merge_per_series(rows: Iterable[Rollup]) -> list[Rollup]:
    """One rollup per series, merging its buckets, sorted by series; ``bucket_start`` is
    the series' first bucket. The rows given are not changed."""
    out: dict[str, Rollup] = {}
    for r in rows:
        into = out.get(r.series)
        if into is None:
            into = out[r.series] = Rollup(r.project_id, r.series, r.resolution, r.bucket_start)
        elif r.bucket_start < into.bucket_start:
            into.bucket_start = r.bucket_start
        into.merge(r)
    return [out[series] for series in sorted(out)]


def bucket_start(ts: float, resolution: str) -> int:
    width = RESOLUTIONS[resolution]
    return int(ts // width) * width


class Aggregator:
    """Adds events up into minute rollups a few at a time, so a writer can yield between
    runs; :meth:`deltas` then derives the hour and day rollups from the minutes."""

    __slots__ = ("_minutes",)

    def __init__(self) -> None:
        self._minutes: dict[tuple[str, str, int], Rollup] = {}

    def add(self, events: Iterable[Event]) -> None:
        minutes = self._minutes
        for ev in events:
            start = int(ev.timestamp // 60) * 60
            value, error = ev.value(), ev.is_error()
            for series in ev.rollup_series():
                mkey = (ev.project_id, series, start)
                r = minutes.get(mkey)
                if r is None:
                    r = minutes[mkey] = Rollup(ev.project_id, series, "minute", start)
                r.add(value, error)

    def merge_minutes(self, rollups: Iterable[Rollup]) -> None:
        """Add minute rollups summed elsewhere (a batch's counted calls); they are left as
        they are, so that a retried write adds the same again."""
        minutes = self._minutes
        for r in rollups:
            mkey = (r.project_id, r.series, r.bucket_start)
            into = minutes.get(mkey)
            if into is None:
                into = minutes[mkey] = Rollup(r.project_id, r.series, "minute", r.bucket_start)
            into.merge(r)

    def deltas(self) -> list[Rollup]:
        """Every rollup delta of the events added, at all three resolutions."""
        out = list(self._minutes.values())
        for resolution in ("hour", "day"):
            coarse: dict[RollupKey, Rollup] = {}
            for m in self._minutes.values():
                start = bucket_start(m.bucket_start, resolution)
                key = (m.project_id, m.series, resolution, start)
                c = coarse.get(key)
                if c is None:
                    c = coarse[key] = Rollup(m.project_id, m.series, resolution, start)
                c.merge(m)
            out.extend(coarse.values())
        return out


def aggregate(events: Iterable[Event]) -> list[Rollup]:
    """Every rollup delta a batch of events contributes, at all three resolutions."""
    agg = Aggregator()
    agg.add(events)
    return agg.deltas()


def combine(rollups: Iterable[Rollup], *, series: str = "*", bucket: int = 0) -> Rollup:
    """Merge several rollups into one summary (e.g. all endpoints over a range)."""
    total = Rollup("*", series, "*", bucket)
    for r in rollups:
        total.merge(r)
    return total
