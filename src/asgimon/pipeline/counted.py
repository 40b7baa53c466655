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
    them as from its events' (:meth:`~asgimon.rollups.Aggregator.merge_minute`)."""
    events: list[ApiCall] = field(default_factory=list)


class Tally:
    """Adds up one batch's ordinary API calls; :meth:`take` tells which it counted."""

    __slots__ = ("_convert", "_minutes", "_random", "_rate", "_series_of", "_slow_ms", "events")

    def __init__(
        self,
        sampling: RawSampling,
        series_of: Callable[[tuple[Any, ...]], tuple[str, str]],
        convert: Callable[[Any], ApiCall],
        rng: Callable[[], float],
    ) -> None:
        self._rate = sampling.rate
        self._slow_ms = sampling.slow_ms
        self._series_of = series_of
        self._convert = convert
        self._random = rng
        self._minutes: dict[tuple[str, str, int], Rollup] = {}
        self.events: list[ApiCall] = []

    def take(self, item: tuple[Any, ...]) -> bool:
        """Count a middleware record if sampling would not keep it raw; False if it would.

        The choice is made once, here: a retry writes the batch as it was made.
        """
        status = item[_STATUS]
        t0 = item[_T0]
        ms = ((item[_COMPLETE] or item[_END]) - t0) * 1000.0
        if status >= 500 or ms >= self._slow_ms or self._random() < self._rate:
            return False
        project, series = self._series_of(item)
        if item[_FIGURES]:
            self.events.append(self._convert(item))
        self._add(project, series, int(item[_WALL] // 60) * 60, ms, status >= 500)
        return True

    def take_event(self, ev: ApiCall) -> None:
        """Count an API call recorded by hand that sampling does not keep raw."""
        if ev.figures:
            self.events.append(ev)
        self._add(ev.project_id, ev.rollup_series()[0], int(ev.timestamp // 60) * 60, *_of(ev))

    def _add(self, project: str, series: str, minute: int, value: float, error: bool) -> None:
        key = (project, series, minute)
        r = self._minutes.get(key)
        if r is None:
            r = self._minutes[key] = Rollup(project, series, "minute", minute)
        r.add(value, error)

    def counted(self, marker: str, at: float) -> Counted | None:
        """What the batch counted, None if nothing."""
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
