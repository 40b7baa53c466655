"""The Redis store: writes through the script, reads of events and rollups, retention."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from asgimon import redis_pools
from asgimon.errors import StorageError, StorageRejected, StorageUnavailable
from asgimon.events import EVENT_TYPES, Event, kinds_with_users
from asgimon.pipeline.counted import Counted
from asgimon.rollups import RESOLUTIONS, Rollup, Window
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.storage.base import SumsByScan, WriteResult

from .alerts import Alerts
from .counting import COUNT, count_args
from .groups import Groups
from .members import _decode
from .overrides import Overrides
from .script import _WRITE, SCRIPT_EVENTS, SEP, SLICE_EVENTS, _Call

# Replies that say the server cannot take writes now, not that the data is bad.
# Replies about someone else's script or the server's state, even if they mention scripts.
_NOT_OURS = ("BUSY", "NOSCRIPT", "MISCONF", "NOREPLICAS", "OOM", "READONLY", "LOADING")
_UNAVAILABLE = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.MasterDownError,
    redis_errors.BusyLoadingError,
    redis_errors.NoPermissionError,
    redis_errors.TryAgainError,
)


def _classify(exc: BaseException) -> StorageError:
    """Only an error raised inside the write script itself can be about the data."""
    text = str(exc)
    # redis-py moves the reply's code (OOM, READONLY…) out of the message: put it back.
    code = getattr(exc, "status_code", None) or type(exc).__name__
    message = f"redis: {code}: {text}"
    ours = "user_script" in text and not text.upper().startswith(_NOT_OURS)
    if isinstance(exc, redis_errors.ResponseError) and not isinstance(exc, _UNAVAILABLE) and ours:
        return StorageRejected(message)
    return StorageUnavailable(message)


class RedisStorage(Groups, Overrides, Alerts, SumsByScan):
    """Events and rollups in Redis for a real-time window (24 h by default).

    >>> storage = RedisStorage("redis://127.0.0.1:6379/0")     # pip install 'asgimon[redis]'
    """

    def __init__(
        self,
        url: str,
        *,
        retention_hours: int = 24,
        prefix: str = "asgimon",
        timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.ttl = int(retention_hours * 3600)
        self.prefix = prefix
        self.timeout = timeout
        self._client: aioredis.Redis | None = None
        self._script: Any = None
        self._count_script: Any = None

    @property
    def identity(self) -> str:
        """Which store this is, for keys shared with other processes (no password)."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}#{self.prefix}"

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = redis_pools.client(self.url, timeout=self.timeout, decode=True)
            self._script = self._client.register_script(_WRITE)
            self._count_script = self._client.register_script(COUNT)
        return self._client

    async def _call(self, op: Any) -> Any:
        try:
            return await op
        except (redis_errors.RedisError, OSError) as exc:
            raise _classify(exc) from exc

    async def start(self) -> None:
        await self._call(self._redis().ping())

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def write(
        self,
        events: Sequence[Event],
        *,
        sampling: RawSampling = KEEP_ALL,
        counted: Counted | None = None,
    ) -> WriteResult:
        # Every event is encoded before anything is sent, so a bad one rejects the batch
        # before any part of it is stored. Encoding yields to the loop between slices.
        calls: list[list[Any]] = []
        for i in range(0, len(events), SCRIPT_EVENTS):
            call = _Call(self.prefix)
            chunk = events[i : i + SCRIPT_EVENTS]
            for j in range(0, len(chunk), SLICE_EVENTS):
                if i or j:
                    await asyncio.sleep(0)
                call.add(chunk[j : j + SLICE_EVENTS], sampling)
            await asyncio.sleep(0)
            calls.append(call.args(self.ttl))
        self._redis()
        fresh: list[Event] = []
        # Each call is atomic; together they stay idempotent. Each answers the positions
        # (in its own slice of the batch) of the events that were new.
        try:
            for n, args in enumerate(calls):
                first = n * SCRIPT_EVENTS
                new = await self._call(self._script(keys=[], args=args))
                fresh.extend(events[first + int(i)] for i in new)
            # Last, and apart: its marker makes it idempotent on its own.
            added = 0
            if counted is not None:
                args = await count_args(self.prefix, self.ttl, counted)
                if await self._call(self._count_script(keys=[], args=args)):
                    added = counted.count
        except StorageError as exc:
            exc.stored = tuple(fresh)  # committed by the calls before this one
            raise
        return WriteResult(len(fresh), len(events) - len(fresh), fresh, added)

    # -- reads -------------------------------------------------------------------------

    async def _projects_for(self, project_id: str | None) -> list[str]:
        return [project_id] if project_id is not None else await self.projects()

    async def _hours(
        self, kind: str, project: str, start: float | None, end: float | None
    ) -> list[str]:
        lo = "-inf" if start is None else int(start // 3600 * 3600)
        hi = "+inf" if end is None else f"({end}"
        key = f"{self.prefix}:evi:{kind}:{project}"
        hours: list[str] = await self._call(self._redis().zrangebyscore(key, lo, hi))
        return hours

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
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}")
        lo = "-inf" if start is None else start
        hi = "+inf" if end is None else f"({end}"
        found: list[tuple[float, Event]] = []
        for project in await self._projects_for(project_id):
            for hour in reversed(await self._hours(kind, project, start, end)):
                key = f"{self.prefix}:ev:{kind}:{project}:{hour}"
                # With a filter, each hour is read whole (members are JSON: Redis cannot
                # compare their fields), newest hours first, until enough are found.
                num = None if match else limit
                rows = await self._call(
                    self._redis().zrevrangebyscore(
                        key, hi, lo, start=0 if num else None, num=num, withscores=True
                    )
                )
                for member, score in rows:
                    ev = _decode(member)
                    if not match or all(getattr(ev, k) == v for k, v in match.items()):
                        found.append((score, ev))
                if match and len(found) >= limit:
                    break
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [ev for _, ev in found[:limit]]

    async def count(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}")
        lo = "-inf" if start is None else start
        hi = "+inf" if end is None else f"({end}"
        total = 0
        for project in await self._projects_for(project_id):
            for hour in await self._hours(kind, project, start, end):
                key = f"{self.prefix}:ev:{kind}:{project}:{hour}"
                total += int(await self._call(self._redis().zcount(key, lo, hi)))
        return total

    async def rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        if resolution not in RESOLUTIONS:
            raise ValueError(f"unknown resolution {resolution!r}")
        index = f"{self.prefix}:rui:{project_id}:{resolution}"
        buckets: list[str] = await self._call(self._redis().zrangebyscore(index, start, f"({end}"))
        pipe = self._redis().pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(f"{self.prefix}:ru:{project_id}:{resolution}:{bucket}")
        hashes: list[dict[str, str]] = await self._call(pipe.execute()) if buckets else []
        out: list[Rollup] = []
        for bucket, fields in zip(buckets, hashes, strict=True):
            by_series: dict[str, Rollup] = {}
            for field, raw in fields.items():
                series, _, name = field.rpartition(SEP)
                if not series.startswith(series_prefix):
                    continue
                r = by_series.get(series)
                if r is None:
                    r = by_series[series] = Rollup(project_id, series, resolution, int(bucket))
                _apply(r, name, raw)
            out.extend(sorted(by_series.values(), key=lambda r: r.series))
        return out

    async def projects(self) -> list[str]:
        found: list[str] = await self._call(self._redis().zrange(f"{self.prefix}:projects", 0, -1))
        return sorted(found)

    async def health(self) -> dict[str, Any]:
        await self._call(self._redis().ping())
        return {"ok": True, "backend": "redis", "retentionHours": self.ttl // 3600}

    # -- retention, erasure, periodic work ---------------------------------------------

    async def purge(self, *, before: Mapping[str, float], batch_size: int = 5000) -> dict[str, int]:
        """Keys expire by themselves; this honours cutoffs shorter than the window."""
        deleted: dict[str, int] = {}
        for key, cutoff in before.items():
            total = 0
            if key == "claims":
                deleted[key] = 0
                continue
            if key == "error_groups":
                deleted[key] = await self._call(self._purge_all_groups(cutoff))
                continue
            if key == "alert_history":
                deleted[key] = await self._call(self._purge_alert_history(cutoff))
                continue
            for project in await self.projects():
                if key.startswith("rollup:"):
                    total += await self._purge_rollups(project, key.split(":", 1)[1], cutoff)
                else:
                    total += await self._purge_events(key, project, cutoff)
            deleted[key] = total
        return deleted

    async def _purge_events(self, kind: str, project: str, cutoff: float) -> int:
        r = self._redis()
        total = 0
        for hour in await self._hours(kind, project, None, cutoff):
            key = f"{self.prefix}:ev:{kind}:{project}:{hour}"
            total += int(await self._call(r.zremrangebyscore(key, "-inf", f"({cutoff}")))
            if not await self._call(r.exists(key)):
                await self._call(r.zrem(f"{self.prefix}:evi:{kind}:{project}", hour))
        return total

    async def _purge_rollups(self, project: str, resolution: str, cutoff: float) -> int:
        r = self._redis()
        index = f"{self.prefix}:rui:{project}:{resolution}"
        last = cutoff - RESOLUTIONS[resolution]  # only buckets wholly older than the cutoff
        buckets: list[str] = await self._call(r.zrangebyscore(index, "-inf", last))
        total = 0
        for bucket in buckets:
            key = f"{self.prefix}:ru:{project}:{resolution}:{bucket}"
            series = {f.rpartition(SEP)[0] for f in await self._call(r.hkeys(key))}
            total += len(series)
            await self._call(r.delete(key))
            await self._call(r.zrem(index, bucket))
        return total

    async def compact(self, *, before: float, batch_size: int = 2000) -> int:
        return 0

    async def forget_user(self, user_id: str, *, batch_size: int = 5000) -> dict[str, int]:
        r = self._redis()
        key = f"{self.prefix}:usr:{user_id}"
        # Moved aside first: an event recorded for the user meanwhile starts a new set
        # instead of being deleted unseen with this one.
        work = f"{key}:erasing:{time.time_ns()}"
        try:
            await r.rename(key, work)
        except redis_errors.ResponseError:  # no such key: nothing recorded for this user
            return dict.fromkeys(kinds_with_users(), 0)
        except (redis_errors.RedisError, OSError) as exc:
            raise _classify(exc) from exc
        deleted = dict.fromkeys(kinds_with_users(), 0)
        for entry in await self._call(r.smembers(work)):
            kind, zkey, member = json.loads(entry)
            removed = int(await self._call(r.zrem(zkey, member)))
            deleted[kind] = deleted.get(kind, 0) + removed
        await self._call(r.delete(work))
        return deleted

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        key = f"{self.prefix}:claim:{job}:{period_start}"
        # Kept as long as the SQL stores keep claims (longer than any job's period).
        won = await self._call(self._redis().set(key, holder, nx=True, ex=15 * 86_400))
        return bool(won)


def _apply(r: Rollup, name: str, raw: str) -> None:
    if name == "c":
        r.count = int(raw)
    elif name == "e":
        r.error_count = int(raw)
    elif name == "n":
        r.value_count = int(raw)
    elif name == "s":
        r.value_sum = float(raw)
    elif name == "lo":
        r.value_min = float(raw)
    elif name == "hi":
        r.value_max = float(raw)
    elif name.startswith("b"):
        r.hist[int(name[1:])] = int(raw)
