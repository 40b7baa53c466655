"""API calls counted without a row each: a batch's rollup deltas stored under one marker.

Most API calls are ordinary (fast, not failing) and sampling keeps only a share of them as
raw rows; the rest feed the rollups alone. Turning each of those into an event object, a
row and an id marker was most of what the writer spent per request, on the host's loop.
So the recorder adds them up straight from the middleware's records into per-minute
rollups (:class:`Tally`), and the store writes the batch's deltas under one marker
(:class:`Counted`) in the same transaction: a retried batch finds its marker and adds
nothing, so counts stay exact with one marker per batch instead of one per call.

A call that is kept raw (every error and slow call, ``rate`` of the rest) is still an event
of its own, with its own id, written and deduplicated as before.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from asgimon._slices import Slicer, chunks
from asgimon.events import ApiCall
from asgimon.rollups import Rollup
from asgimon.sampling import RawSampling
from asgimon.series import API_TOTAL

MARKER_PREFIX = "batch:"
"""Counted batches' markers are stored among the ids of the API calls not kept raw (and
purged with them); with a random part of 64 bits, no event id meets one."""

MARKER_TTL_S = 86_400
"""How long a marker is kept, whatever the API calls' retention: far longer than a batch is
ever retried (the recorder gives up after ``RETRY_DEADLINE``), and at one marker per batch
per worker a second, far fewer rows than keeping them for months."""

_DURATIONS_PER_RUN = 256  # about 40 µs of binning between two looks at the clock

# Positions in the middleware's record (asgimon.pipeline.records.RawRequest).
_STATUS, _T0, _COMPLETE, _END, _WALL, _FIGURES = 6, 7, 9, 10, 11, 16


@dataclass(slots=True)
class Counted:
    """The calls of one batch that have no row: ``count`` of them, as rollup deltas.

    Written at most once: a store that finds ``marker`` already there adds nothing.
    ``events`` are the counted calls that carry figures (statements a request ran): no
    row either, but the recorder's subscribers read them once the batch is stored.
    """

    marker: str
    project_id: str
    """The project the marker is filed under, so it is purged with that project's ids."""
    at: float
    """Epoch seconds: when the batch was counted, the marker's time."""
    count: int
    minutes: list[Rollup]
    """Minute rollups (the project totals included); a store derives hours and days from
    them as from its events' (:meth:`~asgimon.rollups.Aggregator.merge_minutes`)."""
    events: list[ApiCall] = field(default_factory=list)


class RawBudget:
    """How many ordinary calls may still be kept raw this second: at high traffic a share
    of every call is far more rows than anyone reads, and rows are what a write costs
    most. Seconds are the calls' own (their wall-clock start)."""

    __slots__ = ("_left", "_second", "per_s")

    def __init__(self, per_s: int) -> None:
        self.per_s = per_s
        """0: no bound."""
        self._second = -1
        self._left = 0

    def spend(self, wall: float) -> bool:
        if not self.per_s:
            return True
        second = int(wall)
        if second != self._second:
            self._second, self._left = second, self.per_s
        if self._left <= 0:
            return False
        self._left -= 1
        return True


UNBOUNDED = RawBudget(0)


class Tally:
    """Adds up one batch's ordinary API calls; :meth:`take` tells which it counted.

    Per record only its durations are gathered, by what the record says of its endpoint
    and by minute; the series are named and the rollups built once per group, when the
    batch is :meth:`counted`. That is most of what keeps a counted call cheap.
    """

    __slots__ = (
        "_budget",
        "_convert",
        "_groups",
        "_minutes",
        "_random",
        "_rate",
        "_series_of",
        "_slow_ms",
        "error",
        "events",
        "failed",
    )

    def __init__(
        self,
        sampling: RawSampling,
        series_of: Callable[[tuple[Any, ...]], tuple[str, str]],
        convert: Callable[[Any], ApiCall],
        rng: Callable[[], float],
        budget: RawBudget = UNBOUNDED,
    ) -> None:
        self._budget = budget
        self._rate = sampling.rate
        self._slow_ms = sampling.slow_ms
        self._series_of = series_of
        self._convert = convert
        self._random = rng
        # (project, method, endpoint, route, root0, root_end) -> minute -> durations
        self._groups: dict[tuple[Any, ...], dict[int, list[float]]] = {}
        self._minutes: dict[tuple[str, str, int], Rollup] = {}
        self.events: list[ApiCall] = []
        self.failed = 0
        """Calls taken that :meth:`counted` could not name a series for (``error``)."""
        self.error: Exception | None = None

    def take(self, item: tuple[Any, ...]) -> bool:
        """Count a middleware record if sampling would not keep it raw; False if it would.

        The choice is made once, here: a retry writes the batch as it was made.
        """
        ms = ((item[_COMPLETE] or item[_END]) - item[_T0]) * 1000.0
        if item[_STATUS] >= 500 or ms >= self._slow_ms:
            return False
        if self._random() < self._rate and self._budget.spend(item[_WALL]):
            return False
        minute = int(item[_WALL] // 60) * 60
        if item[_FIGURES]:
            self.events.append(self._convert(item))
        else:
            where = item[:6]
            try:
                by_minute = self._groups.get(where)
            except TypeError:  # an unhashable value from a resolver, or a route past the table
                pass
            else:
                if by_minute is None:
                    self._groups[where] = {minute: [ms]}
                else:
                    durations = by_minute.get(minute)
                    if durations is None:
                        by_minute[minute] = [ms]
                    else:
                        durations.append(ms)
                return True
        project, series = self._series_of(item[:6])
        self._add(project, series, minute, ms, False)
        return True

    def take_event(self, ev: ApiCall) -> None:
        """Count an API call recorded by hand that sampling does not keep raw."""
        if ev.figures:
            self.events.append(ev)
        self._add(ev.project_id, ev.rollup_series()[0], int(ev.timestamp // 60) * 60, *_of(ev))

    def _add(self, project: str, series: str, minute: int, value: float, error: bool) -> None:
        self._rollup(project, series, minute).add(value, error)

    def _rollup(self, project: str, series: str, minute: int) -> Rollup:
        key = (project, series, minute)
        r = self._minutes.get(key)
        if r is None:
            r = self._minutes[key] = Rollup(project, series, "minute", minute)
        return r

    async def counted(self, marker: str, at: float, slicer: Slicer | None = None) -> Counted | None:
        """What the batch counted, None if nothing; yields to the loop as ``slicer`` says."""
        slicer = slicer or Slicer()
        for where, by_minute in self._groups.items():
            try:
                project, series = self._series_of(where)
            except Exception as exc:  # a bug of ours costs these calls, not the batch
                self.failed += sum(map(len, by_minute.values()))
                self.error = exc
                continue
            for minute, durations in by_minute.items():
                into = self._rollup(project, series, minute)
                for run in chunks(durations, _DURATIONS_PER_RUN):
                    into.add_many(run)
                    if slicer.due():
                        await slicer.pause()
        self._groups.clear()
        if not self._minutes:
            return None
        minutes = list(self._minutes.values())
        totals: dict[tuple[str, int], Rollup] = {}
        for (project, _, minute), r in self._minutes.items():
            total = totals.get((project, minute))
            if total is None:
                total = totals[(project, minute)] = Rollup(project, API_TOTAL, "minute", minute)
            total.merge(r)
        minutes.extend(totals.values())
        first = next(iter(self._minutes))[0]
        count = sum(r.count for r in totals.values())
        return Counted(marker, first, at, count, minutes, self.events)


def _of(ev: ApiCall) -> tuple[float, bool]:
    return ev.duration_ms, ev.status >= 500


def markers() -> Callable[[], str]:
    """Batch markers unique across processes (a random 64-bit prefix, then a counter)."""
    prefix = MARKER_PREFIX + os.urandom(8).hex()
    n = count(1)
    return lambda: f"{prefix}-{next(n):x}"


def sampler() -> Callable[[], float]:
    """The draw that picks the share of ordinary calls kept raw: a generator of its own."""
    return random.Random().random
