"""``GET {mount}/metrics``: Prometheus and OpenMetrics text over asgimon's stored rollups.

Nothing is counted in process memory: each scrape reads today's rollups from storage, which
every worker and host merges into, so whichever worker answers gives the same figures and
no multiprocess directory is needed. A ``prometheus_client`` custom collector
(:class:`RollupCollector`) turns one scrape's reads into metric families, and
``prometheus_client`` encodes them in the format the ``Accept`` header asks for.

The window is the current UTC day: counters count from 00:00 UTC and start again from zero
at midnight, which Prometheus' ``rate()`` and ``increase()`` take as a counter reset (as
after a restart), losing at most the part of one scrape interval before midnight. Within
the day a counter never decreases: every backend keeps today's day bucket (Redis' 24 h
window included), and each scrape reads one row per series. A longer origin (a month)
would read a row per series and day, and would decrease when a store's retention dropped
its first days, which Prometheus would read as a reset and count everything again. For the
same reason no figure is cached in a process: another worker's fresher figure followed by
this one's older copy would read as a reset too.

Encoding a few thousand samples costs tens of milliseconds of pure Python on the host's
event loop, so families are built and encoded a few series at a time with yields between
(:mod:`asgimon._slices`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from asgimon import series
from asgimon._slices import Slicer
from asgimon._validate import project_id_problem
from asgimon.errors import StorageError
from asgimon.rollups import RESOLUTIONS, Window, bucket_start
from asgimon.storage.base import Storage

from .guard import principal_of
from .metric_families import (
    BUCKETS_S,
    FAMILIES,
    Family,
    ProjectReads,
    Row,
    Snapshot,
)
from .responses import error_response, forbidden, storage_unavailable

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

MEDIA_TYPES = ("text/plain", "application/openmetrics-text")
SYSTEM_WINDOW_S = 180
"""Process gauges average the samples of the minute buckets this far back: a process that
stopped sampling (a worker gone) drops out after it."""
PIECE_SAMPLES = 40
"""Samples built and encoded between two looks at the clock: 0.2 to 0.4 ms of work."""


async def read_project(storage: Storage, project: str, now: float) -> ProjectReads:
    origin = bucket_start(now, "day")
    today = Window(project, "day", origin, origin + RESOLUTIONS["day"])
    minute = bucket_start(now, "minute")
    recent = Window(project, "minute", minute - SYSTEM_WINDOW_S + 60, minute + 60)
    timed, totals, system = await asyncio.gather(
        storage.series_rollups(today, (series.API, series.FUNCTION)),
        storage.series_totals(
            today,
            (
                series.DEPLOY,
                series.DEPLOY_STEP,
                series.BUILD,
                series.ERROR,
                series.DOMAIN,
                series.RATE_LIMIT,
            ),
        ),
        storage.series_totals(recent, series.SYSTEM),
    )
    return ProjectReads(project, timed, totals, system)


_LES = (*(repr(b) for b in BUCKETS_S), "+Inf")


def _samples_per_row(family: Family) -> int:
    return {"histogram": len(BUCKETS_S) + 4, "summary": 3, "counter": 2}.get(family.kind, 1)


class RollupCollector:
    """A ``prometheus_client`` custom collector over one :class:`Snapshot`.

    >>> from prometheus_client import generate_latest            # doctest: +SKIP
    >>> generate_latest(RollupCollector(snapshot))                # doctest: +SKIP

    ``created`` adds each daily counter's, histogram's and summary's ``_created`` sample (the
    day's origin): native in OpenMetrics, where Prometheus reads resets from it; the classic
    text format would turn each into one more gauge series.
    """

    def __init__(self, snapshot: Snapshot, *, created: bool = False) -> None:
        self.snapshot = snapshot
        self.created = created

    def collect(self) -> Iterator[Metric]:
        for family in FAMILIES:
            yield from self.pieces(family, None)

    def pieces(self, family: Family, rows_per_piece: int | None) -> Iterator[Metric]:
        """The family, in metric families of at most ``rows_per_piece`` label sets each
        (whole if None); at least one, so an empty family still says what it is."""
        rows = iter(family.rows(self.snapshot))
        chunk = list(itertools.islice(rows, rows_per_piece))
        yield self._metric(family, chunk)
        while rows_per_piece is not None and (
            chunk := list(itertools.islice(rows, rows_per_piece))
        ):
            yield self._metric(family, chunk)

    def _metric(self, family: Family, rows: list[Row]) -> Metric:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            SummaryMetricFamily,
        )
        from prometheus_client.samples import Sample

        created = self.snapshot.origin if self.created and family.daily else None
        name, doc, labels, unit = family.name, family.doc, family.labels, family.unit

        def add_created(metric: Metric, values: Sequence[str]) -> None:
            # Histograms and summaries take no created time of their own in
            # prometheus_client: the sample goes after the label set's count and sum.
            if created is not None:
                sample_labels = dict(zip(labels, values, strict=True))
                metric.samples.append(Sample(f"{name}_created", sample_labels, created))

        if family.kind == "counter":
            counter = CounterMetricFamily(name, doc, labels=labels)
            for values, n in rows:
                counter.add_metric(values, n, created=created)
            return counter
        if family.kind == "gauge":
            gauge = GaugeMetricFamily(name, doc, labels=labels, unit=unit)
            for values, v in rows:
                gauge.add_metric(values, v)
            return gauge
        if family.kind == "histogram":
            hist = HistogramMetricFamily(name, doc, labels=labels, unit=unit)
            for values, counts, total in rows:
                hist.add_metric(values, list(zip(_LES, counts, strict=True)), total)
                add_created(hist, values)
            return hist
        summary = SummaryMetricFamily(name, doc, labels=labels, unit=unit)
        for values, n, total in rows:
            summary.add_metric(values, n, total)
            add_created(summary, values)
        return summary


class _One:
    """One metric family as a collector, for the encoder."""

    def __init__(self, metric: Metric) -> None:
        self.metric = metric

    def collect(self) -> Iterator[Metric]:
        yield self.metric


EOF = b"# EOF\n"


async def encode(
    collector: RollupCollector, encoder: Callable[[Any], bytes], *, openmetrics: bool
) -> bytes:
    """The collector's families through ``encoder``, a few series at a time with a yield
    whenever a slice of the loop is used up: each piece after a family's first loses its
    ``# HELP`` / ``# TYPE`` / ``# UNIT`` lines, so the family stays one group, and
    OpenMetrics' ``# EOF`` is written once, at the end."""
    slicer = Slicer()
    out: list[bytes] = []
    for family in FAMILIES:
        per = max(1, PIECE_SAMPLES // _samples_per_row(family))
        for n, piece in enumerate(collector.pieces(family, per)):
            text = encoder(_One(piece))
            if openmetrics:
                text = text.removesuffix(EOF)
            if n:
                # Sample lines never start with "#": label values escape their newlines.
                while text.startswith(b"# "):
                    text = text[text.index(b"\n") + 1 :]
            out.append(text)
            if slicer.due():
                await slicer.pause()
    slicer.mark()
    if openmetrics:
        out.append(EOF)
    return b"".join(out)


def process_name() -> str:
    """``host/pid``, as the system-metrics plugin names a process."""
    return f"{socket.gethostname() or 'localhost'}/{os.getpid()}"


class PrometheusMetrics:
    """The ``/metrics`` route: who may see which projects, the reads, the encoding.

    A principal sees its projects' series (``?project=`` narrows them, repeatable); an
    admin sees every project's, and this process's own health besides. Other query
    parameters are ignored, as Prometheus' own exporters do.
    """

    def __init__(
        self,
        storage: Storage,
        health: Callable[[], Awaitable[dict[str, Any]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.health = health
        self.clock = clock

    async def scrape(self, request: Request) -> Response:
        try:
            from prometheus_client.exposition import choose_encoder
        except ImportError:
            return error_response(
                501,
                "not_installed",
                "Prometheus text needs prometheus-client: pip install 'asgimon[prometheus]'",
            )
        principal = principal_of(request)
        wanted = request.query_params.getlist("project")
        for project in wanted:
            problem = project_id_problem(project)
            if problem is not None:
                detail = [{"field": "project", "message": problem}]
                return error_response(422, "invalid_query", f"project: {problem}", detail)
            if not principal.can_see(project):
                return forbidden(project)
        now = self.clock()
        snapshot = Snapshot(origin=bucket_start(now, "day"))
        try:
            if wanted:
                projects = sorted(set(wanted))
            elif principal.admin:
                projects = sorted(set(await self.storage.projects()) | principal.projects)
            else:
                projects = sorted(principal.projects)
            for project in projects:
                snapshot.projects.append(await read_project(self.storage, project, now))
            if principal.admin:
                snapshot.process, snapshot.health = process_name(), await self.health()
        except StorageError as exc:
            return storage_unavailable(exc)
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        collector = RollupCollector(snapshot, created=openmetrics)
        body = await encode(collector, encoder, openmetrics=openmetrics)
        return Response(body, headers={"content-type": content_type})
