"""The in-memory store: the reference implementation and a test double for host apps."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from asgimon._slices import Slicer
from asgimon.errortracking.state import GroupState
from asgimon.events import EVENT_TYPES, Event, kinds_with_users
from asgimon.pipeline.counted import MARKER_PREFIX, MARKER_TTL_S, Counted
from asgimon.ratelimit.overrides import Override
from asgimon.rollups import RESOLUTIONS, Aggregator, Rollup, Window
from asgimon.sampling import KEEP_ALL, RawSampling

from .base import GroupChange, SumsByScan, WriteResult
from .memory_alerts import MemoryAlerts

K = TypeVar("K")
V = TypeVar("V")


def _drop(table: dict[K, V], doomed: list[K]) -> int:
    for k in doomed:
        del table[k]
    return len(doomed)


def _is_marker(key: str) -> bool:
    return key.startswith(MARKER_PREFIX)


def _in_range(ts: float, start: float | None, end: float | None) -> bool:
    return (start is None or ts >= start) and (end is None or ts < end)


class MemoryStorage(MemoryAlerts, SumsByScan):
    """Keeps everything in dicts, for tests and demos. Not shared between processes.

    >>> storage = MemoryStorage()
    >>> monitor = Monitor(storage=storage)        # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._events: defaultdict[str, dict[tuple[str, str], Event]] = defaultdict(dict)
        # What sampling left out: (kind, project, id) -> timestamp, for dedupe and purge.
        self._ids: dict[tuple[str, str, str], float] = {}
        self._rollups: dict[tuple[str, str, str, int], Rollup] = {}
        self._claims: dict[tuple[str, int], tuple[int, str]] = {}
        self._groups: dict[tuple[str, str], GroupState] = {}
        self._overrides: dict[str, Override] = {}
        self.closed = False
        MemoryAlerts.__init__(self)

    async def start(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    async def write(
        self,
        events: Sequence[Event],
        *,
        sampling: RawSampling = KEEP_ALL,
        counted: Counted | None = None,
    ) -> WriteResult:
        # Sliced like the SQL stores' writes: this runs on the host's loop too.
        # The work is done in slices, the change in one stretch at the end, so that a write
        # cancelled at a yield stores nothing (events without their rollups would never
        # get them: the retry finds the events and counts them as duplicates).
        slicer = Slicer()
        fresh: list[Event] = []
        raw: list[Event] = []
        ids: list[Event] = []
        seen: set[tuple[str, str, str]] = set()
        agg = Aggregator()
        keeps = sampling.keeps

        def keep(run: Sequence[Event]) -> None:
            new = []
            for ev in run:
                key = (ev.kind, ev.project_id, ev.id)
                if (
                    key not in seen
                    and key not in self._ids
                    and (ev.project_id, ev.id) not in self._events[ev.kind]
                ):
                    seen.add(key)
                    new.append(ev)
                    (raw if keeps(ev) else ids).append(ev)
            agg.add(new)
            fresh.extend(new)

        await slicer.each(keep, events)
        marker = None if counted is None else ("api_call", counted.project_id, counted.marker)
        new_count = marker is not None and marker not in self._ids
        if counted is not None and new_count:
            agg.merge_minutes(counted.minutes)
        deltas = agg.deltas()
        for ev in raw:
            self._events[ev.kind][(ev.project_id, ev.id)] = ev
        for ev in ids:
            self._ids[(ev.kind, ev.project_id, ev.id)] = ev.timestamp
        self._merge(deltas)
        if counted is not None and new_count:
            assert marker is not None
            self._ids[marker] = counted.at
        slicer.mark()
        added = counted.count if counted is not None and new_count else 0
        return WriteResult(len(fresh), len(events) - len(fresh), fresh, added)

    def _merge(self, deltas: Sequence[Rollup]) -> None:
        for delta in deltas:
            held = self._rollups.get(delta.key)
            if held is None:
                self._rollups[delta.key] = delta
            else:
                held.merge(delta)

    def _select(
        self, kind: str, project_id: str | None, start: float | None, end: float | None
    ) -> list[Event]:
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}")
        return [
            ev
            for ev in self._events[kind].values()
            if (project_id is None or ev.project_id == project_id)
            and _in_range(ev.timestamp, start, end)
        ]

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
        found = self._select(kind, project_id, start, end)
        if match:
            found = [ev for ev in found if all(getattr(ev, k) == v for k, v in match.items())]
        found.sort(key=lambda ev: ev.timestamp, reverse=True)
        return found[:limit]

    async def count(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        return len(self._select(kind, project_id, start, end))

    async def rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        found = [
            r
            for (p, _s, res, b), r in self._rollups.items()
            if p == project_id
            and res == resolution
            and start <= b < end
            and r.series.startswith(series_prefix)
        ]
        found.sort(key=lambda r: (r.bucket_start, r.series))
        # Copies: a caller that keeps them (a cache) must not see later writes merge in.
        return [dataclasses.replace(r, hist=dict(r.hist)) for r in found]

    async def projects(self) -> list[str]:
        return sorted({key[0] for key in self._rollups})

    async def health(self) -> dict[str, Any]:
        return {"ok": not self.closed, "backend": "memory"}

    async def purge(self, *, before: Mapping[str, float], batch_size: int = 5000) -> dict[str, int]:
        deleted: dict[str, int] = {}
        for key, cutoff in before.items():
            if key.startswith("rollup:"):
                res = key.split(":", 1)[1]
                last = cutoff - RESOLUTIONS[res]  # only buckets wholly older than the cutoff
                doomed = [k for k in self._rollups if k[2] == res and k[3] <= last]
                deleted[key] = _drop(self._rollups, doomed)
            elif key == "claims":
                deleted[key] = _drop(self._claims, [k for k in self._claims if k[1] < cutoff])
            elif key == "alert_history":
                deleted[key] = self._purge_alert_history(cutoff)
            elif key == "error_groups":
                doomed_groups = [k for k, g in self._groups.items() if g.last_seen < cutoff]
                deleted[key] = _drop(self._groups, doomed_groups)
            else:
                table = self._events[key]
                doomed_ev = [k for k, ev in table.items() if ev.timestamp < cutoff]
                # Counted batches' markers outlive their use within a day.
                markers = max(cutoff, time.time() - MARKER_TTL_S)
                doomed_ids = [
                    k
                    for k, ts in self._ids.items()
                    if k[0] == key and (ts < cutoff or (ts < markers and _is_marker(k[2])))
                ]
                deleted[key] = _drop(table, doomed_ev) + _drop(self._ids, doomed_ids)
        return deleted

    async def compact(self, *, before: float, batch_size: int = 2000) -> int:
        return 0

    async def forget_user(self, user_id: str, *, batch_size: int = 5000) -> dict[str, int]:
        deleted: dict[str, int] = {}
        for kind in kinds_with_users():
            table = self._events[kind]
            mine = [k for k, ev in table.items() if getattr(ev, "user_id", None) == user_id]
            deleted[kind] = _drop(table, mine)
        return deleted

    async def error_groups(
        self, project_id: str, fingerprints: Sequence[str] | None = None
    ) -> list[GroupState]:
        if fingerprints is None:
            found = [g for (p, _), g in self._groups.items() if p == project_id]
        else:
            found = [
                g for fp in dict.fromkeys(fingerprints) if (g := self._groups.get((project_id, fp)))
            ]
        return [dataclasses.replace(g) for g in found]

    async def change_error_groups(
        self, project_id: str, fingerprints: Sequence[str], change: GroupChange
    ) -> list[GroupState]:
        # No await between the read and the write: atomic on the one loop that uses it.
        held: dict[str, GroupState | None] = {}
        for fp in dict.fromkeys(fingerprints):
            g = self._groups.get((project_id, fp))
            held[fp] = None if g is None else dataclasses.replace(g)
        written = []
        for state in list(change(held)):
            if state.fingerprint not in held:
                raise ValueError(f"{state.fingerprint!r} was not asked for")
            before = held[state.fingerprint]
            state = dataclasses.replace(state, version=(before.version if before else 0) + 1)
            written.append(state)
        for state in written:
            self._groups[(project_id, state.fingerprint)] = dataclasses.replace(state)
        return written

    async def rate_limit_overrides(self) -> list[Override]:
        return list(self._overrides.values())

    async def set_rate_limit_override(self, override: Override) -> None:
        self._overrides[override.key] = override

    async def remove_rate_limit_override(self, key: str) -> bool:
        return self._overrides.pop(key, None) is not None

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        key = (job, period_start)
        if key in self._claims:
            return False
        self._claims[key] = (period_start, holder)
        return True
