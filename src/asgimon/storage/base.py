"""The storage protocol every backend implements, and what it returns."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from asgimon.alerts.records import HistoryEntry, Record
from asgimon.errortracking.state import GroupState
from asgimon.events import EVENT_TYPES, Event
from asgimon.pipeline.counted import Counted
from asgimon.ratelimit.overrides import Override
from asgimon.rollups import Rollup, Window, merge_per_series
from asgimon.sampling import KEEP_ALL, RawSampling

KINDS = tuple(EVENT_TYPES)
"""The built-in event kinds (any registered later is in :data:`~asgimon.events.EVENT_TYPES`)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """How many events of a batch were new, and how many were already stored.

    ``fresh`` holds the new events themselves (``len(fresh) == inserted``): they, and only
    they, are handed to the recorder's subscribers, so a retried batch is never seen twice.
    """

    inserted: int
    duplicates: int
    fresh: Sequence[Event] = ()
    counted: int = 0
    """The calls of a :class:`~asgimon.pipeline.counted.Counted` added now: its ``count``,
    or 0 when its marker was already there (or none was given)."""


@dataclass(frozen=True, slots=True)
class SeriesTotal:
    """One series summed over a range: counts and sums, and its first and last bucket."""

    series: str
    count: int
    error_count: int
    value_count: int
    value_sum: float
    first_bucket: int
    last_bucket: int


class EventStore(Protocol):
    """Events in and out: each batch written once, read back by kind and time."""

    async def write(
        self,
        events: Sequence[Event],
        *,
        sampling: RawSampling = KEEP_ALL,
        counted: Counted | None = None,
    ) -> WriteResult:
        """Store ``events`` (each once), and ``counted`` 's deltas unless its marker is
        there, in one transaction where the store has them."""
        ...

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
        """Raw events of one kind, newest first; with ``match``, only those whose fields
        equal its values (``{"fingerprint": fp}``: one error group's occurrences)."""
        ...

    async def count(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int: ...


class RollupReader(Protocol):
    """The rollup reads the analytics compute their figures from."""

    async def rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        """Rollups whose bucket starts in ``[start, end)``, oldest first; with a prefix (or a
        tuple of them), only the series starting with one."""
        ...

    async def totals(
        self,
        *,
        project_id: str,
        resolution: str,
        windows: Sequence[tuple[float, float]],
        series: str,
    ) -> list[Rollup]:
        """Counts and sums (no histogram) of one series in each ``[start, end)`` window, one
        per window, in order: the before/after figures around many deployments in one round
        trip (of the project's totals, e.g. ``all:api``)."""
        ...

    async def series_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[SeriesTotal]:
        """Each series' rollups in ``[start, end)`` summed (no histogram), sorted by series:
        error groups or build phases over a month without reading every bucket."""
        ...

    async def bucket_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        """The series' rollups summed per bucket in ``[start, end)`` (no histogram; series
        ``*``), oldest first: a trend across many series without a row per series and
        bucket."""
        ...

    async def series_rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        """Each series' rollups in ``[start, end)`` merged into one, histogram included,
        sorted by series (``bucket_start``: its first bucket): latency per endpoint over a
        month without a :class:`Rollup` per endpoint and day."""
        ...

    async def projects(self) -> list[str]:
        """Every project that has recorded anything, sorted."""
        ...


GroupChange = Callable[[dict[str, GroupState | None]], Iterable[GroupState]]
"""Given the held state of each asked-for group (None where nothing is held), the states to
write. Pure: it may be called again if another writer got there first."""


class ErrorGroups(Protocol):
    """Error groups' lifecycle (:class:`~asgimon.errortracking.state.GroupState`), shared by
    every worker: read, and changed atomically."""

    async def error_groups(
        self, project_id: str, fingerprints: Sequence[str] | None = None
    ) -> list[GroupState]:
        """The groups held for a project (those of ``fingerprints`` only, if given)."""
        ...

    async def change_error_groups(
        self, project_id: str, fingerprints: Sequence[str], change: GroupChange
    ) -> list[GroupState]:
        """Read the groups, apply ``change`` and write what it returns, as one atomic step
        against every other writer; each written state's ``version`` is one more than the
        one read. Returns the states written."""
        ...


class RateLimitOverrides(Protocol):
    """Per-key limits of the host's rate limit
    (:class:`~asgimon.ratelimit.overrides.Override`), the same for every worker."""

    async def rate_limit_overrides(self) -> list[Override]:
        """Every override held, expired ones included (readers skip those)."""
        ...

    async def set_rate_limit_override(self, override: Override) -> None:
        """Add the override, or replace the one held for its key."""
        ...

    async def remove_rate_limit_override(self, key: str) -> bool:
        """Remove the override of ``key``; whether there was one."""
        ...


class AlertRecords(Protocol):
    """Alert rules, states and silences (:class:`~asgimon.alerts.records.Record`), and the
    alert history, shared by every worker."""

    async def alert_records(
        self, kind: str, *, project_id: str | None = None, ids: Sequence[str] | None = None
    ) -> list[Record]:
        """The records of one kind (of one project, or with these ids), oldest first."""
        ...

    async def put_alert_record(self, record: Record, *, expect: int | None = None) -> Record | None:
        """Write the record with the held version plus one, and return it as written; with
        ``expect``, only if the held version is ``expect`` (0: none held), else None."""
        ...

    async def delete_alert_record(self, kind: str, record_id: str) -> bool:
        """Remove a record; whether there was one."""
        ...

    async def add_alert_history(self, entries: Sequence[HistoryEntry]) -> None:
        """Append entries; one whose id is already held is left as it is."""
        ...

    async def alert_history(
        self,
        project_id: str,
        *,
        rule_id: str | None = None,
        kinds: Sequence[str] | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]:
        """A project's history (of one rule, of some kinds), newest first, at most ``limit``
        entries from before ``before``."""
        ...


class Maintenance(Protocol):
    """What keeps a store bounded and lawful: retention, compaction, erasure, job claims."""

    async def purge(self, *, before: Mapping[str, float], batch_size: int = 5000) -> dict[str, int]:
        """Delete what is older than each cutoff (epoch seconds), in small batches.

        Keys are event kinds (by event time), ``rollup:minute`` / ``rollup:hour`` /
        ``rollup:day`` (by bucket start), ``claims`` (periodic-job claims) and
        ``alert_history`` (by the entry's time). Returns the
        number of rows deleted per key.
        """
        ...

    async def compact(self, *, before: float, batch_size: int = 2000) -> int:
        """Prepare hour and day buckets that ended before ``before`` for fast reads (the SQL
        stores pack their histograms); how many rows changed. Others have nothing to do."""
        ...

    async def forget_user(self, user_id: str, *, batch_size: int = 5000) -> dict[str, int]:
        """Delete every record carrying this user id; rows deleted per kind."""
        ...

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        """Claim one period of a periodic job: True for exactly one caller per period,
        across every process sharing this store."""
        ...


@runtime_checkable
class Storage(
    EventStore,
    RollupReader,
    ErrorGroups,
    RateLimitOverrides,
    AlertRecords,
    Maintenance,
    Protocol,
):
    """Where events and rollups live.

    ``write`` is atomic per batch and idempotent on ``(project_id, id)``: events already
    stored are counted as duplicates and add nothing to the rollups. Every event feeds the
    rollups; those that ``sampling`` does not keep are stored as their id alone (never
    listed by ``events``, still found when written again). Driver errors are raised
    as a subclass of :class:`~asgimon.errors.StorageError`. Time ranges are half-open,
    ``start <= t < end``, in epoch seconds.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]:
        """A cheap round trip: ``{"ok": True, ...}`` or raises ``StorageError``."""
        ...


def storage_identity(storage: object) -> str:
    """A stable name for the data a store holds (its URL without password, its schema or
    prefix), so that caches shared between processes never mix two stores' data. A store
    without one (in memory) is unique to its process."""
    identity = getattr(storage, "identity", None)
    if isinstance(identity, str):
        return identity
    return f"{type(storage).__name__}:{os.getpid()}:{id(storage)}"


def sum_per_bucket(
    project_id: str, resolution: str, rows: Iterable[tuple[int, int, int, int, float]]
) -> list[Rollup]:
    """``(bucket, count, errors, values, value sum)`` rows summed per bucket, oldest first,
    as :meth:`Storage.bucket_totals` returns them."""
    sums: dict[int, Rollup] = {}
    for bucket, n, e, vn, vs in rows:
        total = sums.get(bucket)
        if total is None:
            total = sums[bucket] = Rollup(project_id, "*", resolution, bucket)
        total.count += n
        total.error_count += e
        total.value_count += vn
        total.value_sum += vs
    return [sums[b] for b in sorted(sums)]


class SumsByScan:
    """:meth:`Storage.totals`, :meth:`Storage.series_totals`, :meth:`Storage.bucket_totals`
    and :meth:`Storage.series_rollups` for backends without server-side sums: computed from
    one covering :meth:`Storage.rollups` read."""

    async def rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        raise NotImplementedError

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
        covering = Window(
            project_id, resolution, min(lo for lo, _ in windows), max(hi for _, hi in windows)
        )
        rows = await self.rollups(covering, series)
        out = []
        for lo, hi in windows:
            total = Rollup(project_id, series, resolution, int(lo))
            for r in rows:
                if r.series == series and lo <= r.bucket_start < hi:
                    total.count += r.count
                    total.error_count += r.error_count
                    total.value_count += r.value_count
                    total.value_sum += r.value_sum
            out.append(total)
        return out

    async def series_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[SeriesTotal]:
        rows = await self.rollups(window, series_prefix)
        sums: dict[str, list[Any]] = {}
        for r in rows:
            acc = sums.setdefault(r.series, [0, 0, 0, 0.0, r.bucket_start, r.bucket_start])
            acc[0] += r.count
            acc[1] += r.error_count
            acc[2] += r.value_count
            acc[3] += r.value_sum
            acc[4] = min(acc[4], r.bucket_start)
            acc[5] = max(acc[5], r.bucket_start)
        return [SeriesTotal(series, *acc) for series, acc in sorted(sums.items())]

    async def bucket_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        rows = await self.rollups(window, series_prefix)
        return sum_per_bucket(
            window.project_id,
            window.resolution,
            ((r.bucket_start, r.count, r.error_count, r.value_count, r.value_sum) for r in rows),
        )

    async def series_rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        rows = await self.rollups(window, series_prefix)
        return merge_per_series(rows)
