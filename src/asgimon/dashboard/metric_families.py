"""Metric families from one scrape's rollups: names, labels and the figures behind them.

Pure, and free of ``prometheus_client``: a :class:`Snapshot` of what a scrape read becomes,
through each :class:`Family`'s rows, the figures
:class:`~asgimon.dashboard.metrics.RollupCollector` makes metric families of. HTTP requests and
function invocations are OpenTelemetry's instruments (``http.server.request.duration`` and
``faas.invoke_duration`` as Prometheus names them, with their advised bucket bounds); the
rest are asgimon's own, prefixed ``asgimon_``. Bucket counts come from the rollups' log
histogram, so a duration up to 2 % above a bound may count within it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgimon import histogram, series
from asgimon.rollups import Rollup
from asgimon.storage.base import SeriesTotal

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""OpenTelemetry's advised bounds for ``http.server.request.duration`` and
``faas.invoke_duration``, in seconds."""
MB = 1024 * 1024

Row = tuple[Any, ...]
"""``(labels, value)`` for counters and gauges, ``(labels, cumulative counts, sum)`` for
histograms (the last count is +Inf), ``(labels, count, sum)`` for summaries."""


@dataclass(frozen=True, slots=True)
class ProjectReads:
    """What one scrape read of one project."""

    project: str
    timed: list[Rollup]  # today's api: and fn: series, histograms included
    totals: list[SeriesTotal]  # today's deployment, build, error, domain, rate-limit series
    system: list[SeriesTotal]  # the last minutes' sys: series


@dataclass(slots=True)
class Snapshot:
    """One scrape's reads: the projects', from ``origin`` (00:00 UTC today), and, for an
    admin, the answering process's own health (``process`` names it: ``host/pid``)."""

    origin: float
    projects: list[ProjectReads] = field(default_factory=list)
    process: str = ""
    health: dict[str, Any] | None = None


def cumulative(r: Rollup, bounds_ms: Sequence[float]) -> list[int]:
    """Observations at most each bound (to the histogram's 2 % bins, as
    :meth:`~asgimon.rollups.Rollup.count_at_most`), then all of them: one pass over the
    bins where a ``count_at_most`` per bound would walk them all for each."""
    limits = [histogram.bin_index(b) for b in bounds_ms]
    per = [0] * (len(limits) + 1)
    for i, c in r.full_hist().items():
        per[bisect.bisect_left(limits, i)] += c
    out = list(itertools.accumulate(per))
    out[-1] = r.value_count
    return out


# -- rows of each family, from a snapshot ------------------------------------------------

_BOUNDS_MS = tuple(b * 1000.0 for b in BUCKETS_S)


def _timed(snap: Snapshot, prefix: str) -> Iterator[tuple[str, Rollup]]:
    for p in snap.projects:
        for r in p.timed:
            if r.series.startswith(prefix):
                yield p.project, r


def _totals(snap: Snapshot, prefix: str) -> Iterator[tuple[str, SeriesTotal]]:
    for p in snap.projects:
        for t in p.totals:
            if t.series.startswith(prefix):
                yield p.project, t


def http_durations(snap: Snapshot) -> Iterator[Row]:
    for project, r in _timed(snap, series.API):
        labels = (project, *series.api_parts(r.series))
        yield labels, cumulative(r, _BOUNDS_MS), r.value_sum / 1000.0


def http_errors(snap: Snapshot) -> Iterator[Row]:
    for project, r in _timed(snap, series.API):
        yield (project, *series.api_parts(r.series)), r.error_count


def faas_durations(snap: Snapshot) -> Iterator[Row]:
    for project, r in _timed(snap, series.FUNCTION):
        labels = (project, series.function_id(r.series))
        yield labels, cumulative(r, _BOUNDS_MS), r.value_sum / 1000.0


def faas_invocations(snap: Snapshot) -> Iterator[Row]:
    for project, r in _timed(snap, series.FUNCTION):
        yield (project, series.function_id(r.series)), r.count - r.error_count


def faas_errors(snap: Snapshot) -> Iterator[Row]:
    for project, r in _timed(snap, series.FUNCTION):
        yield (project, series.function_id(r.series)), r.error_count


def errors(snap: Snapshot) -> Iterator[Row]:
    # One series per error group in storage; summed per severity and type here, which is
    # what bounds the labels.
    for p in snap.projects:
        sums: dict[tuple[str, str], int] = {}
        for t in p.totals:
            if t.series.startswith(series.ERROR):
                severity, _, error_type = series.error_parts(t.series)
                sums[severity, error_type] = sums.get((severity, error_type), 0) + t.count
        for (severity, error_type), n in sorted(sums.items()):
            yield (p.project, severity, error_type), n


def deployments(snap: Snapshot) -> Iterator[Row]:
    for project, t in _totals(snap, series.DEPLOY):
        framework = series.deploy_framework(t.series)
        yield (project, framework, "success"), t.count - t.error_count
        yield (project, framework, "failure"), t.error_count


def deployment_durations(snap: Snapshot) -> Iterator[Row]:
    for project, t in _totals(snap, series.DEPLOY):
        yield (project, series.deploy_framework(t.series)), t.value_count, t.value_sum / 1000.0


def deployment_events(snap: Snapshot) -> Iterator[Row]:
    for p in snap.projects:
        completed = 0
        for t in p.totals:
            if t.series.startswith(series.DEPLOY_STEP):
                yield (p.project, t.series.removeprefix(series.DEPLOY_STEP)), t.count
            elif t.series.startswith(series.DEPLOY):
                completed += t.count
        yield (p.project, "completed"), completed


def builds(snap: Snapshot) -> Iterator[Row]:
    for project, t in _totals(snap, series.BUILD):
        phase, framework = series.build_parts(t.series)
        yield (project, phase, framework, "success"), t.count - t.error_count
        yield (project, phase, framework, "failure"), t.error_count


def build_durations(snap: Snapshot) -> Iterator[Row]:
    for project, t in _totals(snap, series.BUILD):
        yield (project, *series.build_parts(t.series)), t.value_count, t.value_sum / 1000.0


def domain_events(snap: Snapshot) -> Iterator[Row]:
    for project, t in _totals(snap, series.DOMAIN):
        yield (project, t.series.removeprefix(series.DOMAIN)), t.count


def rate_limit_denials(snap: Snapshot) -> Iterator[Row]:
    # The rollups' sum is the number of requests: one event stands for a run of refusals.
    for project, t in _totals(snap, series.RATE_LIMIT):
        shadow, rule = series.rate_limit_parts(t.series)
        yield (project, rule, "shadow" if shadow else "enforced"), int(t.value_sum)


def _system(snap: Snapshot, metric: str, scale: float) -> Iterator[Row]:
    for p in snap.projects:
        for t in p.system:
            name, process = series.system_parts(t.series)
            if name == metric and t.value_count:
                yield (p.project, process), t.value_sum / t.value_count * scale


def memory(snap: Snapshot) -> Iterator[Row]:
    return _system(snap, "memory", MB)


def cpu(snap: Snapshot) -> Iterator[Row]:
    return _system(snap, "cpu", 0.01)


def _recorder(key: str) -> Callable[[Snapshot], Iterator[Row]]:
    def rows(snap: Snapshot) -> Iterator[Row]:
        if snap.health is not None:
            yield (snap.process,), snap.health["recorder"][key]

    return rows


def dropped(snap: Snapshot) -> Iterator[Row]:
    if snap.health is not None:
        for reason, n in sorted(snap.health["recorder"]["dropped"].items()):
            yield (snap.process, reason), n


def storage_up(snap: Snapshot) -> Iterator[Row]:
    if snap.health is not None:
        yield (snap.process,), 1 if snap.health["storage"].get("ok") else 0


def active_requests(snap: Snapshot) -> Iterator[Row]:
    if snap.health is not None:
        yield (snap.process,), snap.health["inFlight"]


# -- the families ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family: its name (counters with ``_total``), type, help, labels, unit,
    its rows, and whether it counts from the day's origin (``_created`` in OpenMetrics)."""

    name: str
    kind: str  # counter, gauge, histogram or summary
    doc: str
    labels: tuple[str, ...]
    rows: Callable[[Snapshot], Iterable[Row]]
    unit: str = ""
    daily: bool = True


HTTP = ("project", "http_request_method", "http_route")
FAAS = ("project", "faas_name")
PROCESS = ("process",)

FAMILIES: tuple[Family, ...] = (
    Family(
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP server requests until the response was complete (today, UTC)",
        HTTP,
        http_durations,
        "seconds",
    ),
    Family(
        "asgimon_http_server_errors_total",
        "counter",
        "HTTP server requests answered with a status of 500 or more (today, UTC)",
        HTTP,
        http_errors,
    ),
    Family(
        "faas_invoke_duration_seconds",
        "histogram",
        "Duration of function invocations (today, UTC)",
        FAAS,
        faas_durations,
        "seconds",
    ),
    Family(
        "faas_invocations_total",
        "counter",
        "Successful function invocations (today, UTC)",
        FAAS,
        faas_invocations,
    ),
    Family(
        "faas_errors_total",
        "counter",
        "Function invocations that failed (today, UTC)",
        FAAS,
        faas_errors,
    ),
    Family(
        "asgimon_errors_total",
        "counter",
        "Errors captured, by severity and exception type (today, UTC)",
        ("project", "severity", "error_type"),
        errors,
    ),
    Family(
        "asgimon_deployments_total",
        "counter",
        "Deployments completed, by framework and outcome (today, UTC)",
        ("project", "framework", "status"),
        deployments,
    ),
    Family(
        "asgimon_deployment_duration_seconds",
        "summary",
        "Duration of completed deployments that reported one (today, UTC)",
        ("project", "framework"),
        deployment_durations,
        "seconds",
    ),
    Family(
        "asgimon_deployment_events_total",
        "counter",
        "Deployment events by type: started, in_progress, completed (today, UTC)",
        ("project", "type"),
        deployment_events,
    ),
    Family(
        "asgimon_build_phases_total",
        "counter",
        "Build phases finished, by phase, framework and outcome (today, UTC)",
        ("project", "phase", "framework", "status"),
        builds,
    ),
    Family(
        "asgimon_build_phase_duration_seconds",
        "summary",
        "Duration of build phases (today, UTC)",
        ("project", "phase", "framework"),
        build_durations,
        "seconds",
    ),
    Family(
        "asgimon_domain_events_total",
        "counter",
        "Domain and certificate events by type (today, UTC)",
        ("project", "type"),
        domain_events,
    ),
    Family(
        "asgimon_rate_limit_denied_requests_total",
        "counter",
        "Requests the host's rate limit refused (mode enforced) or would have (shadow) "
        "(today, UTC)",
        ("project", "rule", "mode"),
        rate_limit_denials,
    ),
    Family(
        "asgimon_process_resident_memory_bytes",
        "gauge",
        "Resident memory of each sampled process, averaged over the last minutes",
        ("project", "process"),
        memory,
        "bytes",
        daily=False,
    ),
    Family(
        "asgimon_process_cpu_cores",
        "gauge",
        "CPU time per second of each sampled process (1 is one core busy), averaged over "
        "the last minutes",
        ("project", "process"),
        cpu,
        daily=False,
    ),
    Family(
        "asgimon_recorder_recorded_events_total",
        "counter",
        "Events handed to this process's recorder since it started",
        PROCESS,
        _recorder("recorded"),
        daily=False,
    ),
    Family(
        "asgimon_recorder_written_events_total",
        "counter",
        "Events this process's recorder wrote to storage",
        PROCESS,
        _recorder("written"),
        daily=False,
    ),
    Family(
        "asgimon_recorder_duplicate_events_total",
        "counter",
        "Events this process's recorder found already stored",
        PROCESS,
        _recorder("duplicates"),
        daily=False,
    ),
    Family(
        "asgimon_recorder_dropped_events_total",
        "counter",
        "Events this process's recorder dropped, by reason",
        (*PROCESS, "reason"),
        dropped,
        daily=False,
    ),
    Family(
        "asgimon_recorder_queued_events",
        "gauge",
        "Events waiting in this process's recorder queue",
        PROCESS,
        _recorder("pending"),
        daily=False,
    ),
    Family(
        "asgimon_recorder_queued_bytes",
        "gauge",
        "Estimated size of the events waiting in this process's recorder queue",
        PROCESS,
        _recorder("pendingBytes"),
        "bytes",
        daily=False,
    ),
    Family(
        "asgimon_recorder_retries_total",
        "counter",
        "Batch writes this process's recorder retried",
        PROCESS,
        _recorder("retries"),
        daily=False,
    ),
    Family(
        "asgimon_recorder_internal_errors_total",
        "counter",
        "Failures inside asgimon in this process, logged and swallowed",
        PROCESS,
        _recorder("internalErrors"),
        daily=False,
    ),
    Family(
        "asgimon_storage_up",
        "gauge",
        "Whether this process's storage answered its health probe (1) or not (0)",
        PROCESS,
        storage_up,
        daily=False,
    ),
    Family(
        "http_server_active_requests",
        "gauge",
        "HTTP server requests in flight in this process",
        PROCESS,
        active_requests,
        daily=False,
    ),
)
