"""Caching of rollups for the analytics API: in process, then in Redis.

Only *closed* buckets are cached: those that ended more than :data:`SETTLE_S` ago, which the
recorder has long written. The open bucket (this hour, or today) is read from storage on
every request, and so are the lists of recent events, so real-time figures are never stale.
What can be stale is a closed bucket that changes after it was cached: events ingested
with old timestamps, a recorder backlog older than ``SETTLE_S``, a purge. That staleness is
bounded by the TTL: ``ANALYTICS_LOCAL_CACHE_TTL`` (5 minutes) in process and
``ANALYTICS_CACHE_TTL`` (1 hour) in Redis.

Keys carry the store's identity, the project id, the resolution, the series prefix and the
closed span, and the API authorises the caller for the project before it reads anything, so
an entry is only ever served to principals who may see that project, of that store. Redis
calls time out after 100 ms and a circuit breaker stops trying after five failures in a
row, so a Redis outage costs speed only, briefly, and never fails a request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from asgimon import histogram
from asgimon.breaker import CircuitBreaker
from asgimon.errortracking.state import GroupState
from asgimon.events import Event
from asgimon.rollups import RESOLUTIONS, Rollup, Window, merge_per_series
from asgimon.storage.base import SeriesTotal, Storage

log = logging.getLogger("asgimon.dashboard")

SETTLE_S = 120
LOCAL_MAX_ENTRIES = 256
LOCAL_MAX_ROWS = 200_000  # about 100 MB of rollups at worst, packed far less
MAX_ENTRY_ROWS = 50_000
FORMAT = "v1"  # in every Redis key: a new encoding never reads an old one


def _packed(r: Rollup) -> str | None:
    return None if r.packed is None else base64.b64encode(r.packed.to_bytes()).decode()


def _unpacked(text: str | None) -> histogram.Packed | None:
    return None if text is None else histogram.Packed.from_bytes(base64.b64decode(text))


def _encode(rows: list[Rollup]) -> str:
    return json.dumps(
        [
            [
                r.series,
                r.bucket_start,
                r.count,
                r.error_count,
                r.value_count,
                r.value_sum,
                r.value_min,
                r.value_max,
                histogram.dumps(r.hist),
                _packed(r),
            ]
            for r in rows
        ],
        separators=(",", ":"),
    )


def _decode(project_id: str, resolution: str, text: str | bytes) -> list[Rollup]:
    return [
        Rollup(
            project_id,
            series,
            resolution,
            bucket,
            count,
            errors,
            vn,
            vs,
            lo,
            hi,
            histogram.loads(h),
            _unpacked(packed),
        )
        for series, bucket, count, errors, vn, vs, lo, hi, h, packed in json.loads(text)
    ]


class RollupCache:
    """Closed-bucket rollups, cached in a bounded in-process LRU and optionally in Redis.

    ``scope`` names the store (see :func:`~asgimon.storage.base.storage_identity`): two
    apps sharing one Redis, each with its own database, never see each other's entries.
    """

    def __init__(
        self,
        *,
        local_ttl: float,
        scope: str,
        redis_pool: Any = None,
        redis_ttl: int = 3600,
        key_prefix: str = "asgimon",
    ) -> None:
        self.local_ttl = local_ttl
        self.redis_ttl = redis_ttl
        digest = hashlib.sha256(scope.encode()).hexdigest()[:16]
        self.key_prefix = f"{key_prefix}:cache:{FORMAT}:{digest}:"
        self._local: OrderedDict[str, tuple[float, list[Rollup]]] = OrderedDict()
        self._local_rows = 0
        self._redis: Any = None
        if redis_pool is not None and redis_ttl > 0:
            import redis.asyncio as aioredis

            # On its owner's pool, which the owner closes.
            self._redis = aioredis.Redis(connection_pool=redis_pool)
        self.breaker = CircuitBreaker()
        self.hits = {"local": 0, "redis": 0}
        self.misses = 0
        self.failures = 0

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def clear(self) -> None:
        self._local.clear()
        self._local_rows = 0

    async def get(self, key: str, project_id: str, resolution: str) -> list[Rollup] | None:
        now = time.monotonic()
        found = self._local.get(key)
        if found is not None and found[0] > now:
            self._local.move_to_end(key)
            self.hits["local"] += 1
            return found[1]
        if self._redis is not None and self.breaker.allow():
            name = self.key_prefix + key
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    raw, left_ms = await pipe.get(name).pttl(name).execute()
                rows = None if raw is None else _decode(project_id, resolution, raw)
            except Exception as exc:  # a cache outage, or a bad entry, costs speed only
                self._failed(exc)
            else:
                self.breaker.success()
                if rows is not None:
                    # Never kept locally past the moment it leaves Redis.
                    self._remember(key, rows, max(0, left_ms) / 1000)
                    self.hits["redis"] += 1
                    return rows
        self.misses += 1
        return None

    async def put(self, key: str, rows: list[Rollup]) -> None:
        if len(rows) > MAX_ENTRY_ROWS:
            return  # a huge range: cheaper to read again than to hold
        self._remember(key, rows, self.local_ttl)
        if self._redis is not None and self.breaker.allow():
            try:
                await self._redis.set(self.key_prefix + key, _encode(rows), ex=self.redis_ttl)
            except Exception as exc:
                self._failed(exc)
            else:
                self.breaker.success()

    def _remember(self, key: str, rows: list[Rollup], ttl: float) -> None:
        ttl = min(ttl, self.local_ttl)
        if ttl <= 0:
            return
        old = self._local.pop(key, None)
        if old is not None:
            self._local_rows -= len(old[1])
        self._local[key] = (time.monotonic() + ttl, rows)
        self._local_rows += len(rows)
        while len(self._local) > LOCAL_MAX_ENTRIES or self._local_rows > LOCAL_MAX_ROWS:
            _, (_, dropped) = self._local.popitem(last=False)
            self._local_rows -= len(dropped)

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.breaker.failure()
        if self.failures == 1 or self.failures % 1000 == 0:
            log.warning("analytics cache unavailable (%d failures): %r", self.failures, exc)

    def stats(self) -> dict[str, Any]:
        return {
            "entries": len(self._local),
            "rows": self._local_rows,
            "hits": dict(self.hits),
            "misses": self.misses,
            "failures": self.failures,
            "redis": self._redis is not None,
            "redisCircuitOpen": self.breaker.is_open,
        }


class CachedStorage:
    """A storage whose :meth:`rollups` and :meth:`series_rollups` serve closed buckets from
    a :class:`RollupCache`.

    Raw events and sums (no histograms: one row per window, series or bucket) are read
    through, uncached.
    """

    def __init__(self, storage: Storage, cache: RollupCache, now: float | None = None) -> None:
        self._storage = storage
        self._cache = cache
        self._now = now

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
        return await self._storage.events(
            kind, project_id=project_id, start=start, end=end, limit=limit, match=match
        )

    async def error_groups(
        self, project_id: str, fingerprints: Sequence[str] | None = None
    ) -> list[GroupState]:
        return await self._storage.error_groups(project_id, fingerprints)

    async def projects(self) -> list[str]:
        return await self._storage.projects()

    async def series_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[SeriesTotal]:
        return await self._storage.series_totals(window, series_prefix)

    async def bucket_totals(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        return await self._storage.bucket_totals(window, series_prefix)

    async def rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        read, closed_end = self._reader(
            self._storage.rollups, project_id, resolution, end, series_prefix
        )
        if closed_end <= start:
            return await read(start, end)
        key = json.dumps([project_id, resolution, series_prefix, start, closed_end])
        cached = await self._cache.get(key, project_id, resolution)
        if cached is not None:
            return [*cached, *await read(closed_end, end)]
        # One read for the whole range: a second round trip for the open buckets costs more
        # than splitting the rows here.
        rows = await read(start, end)
        await self._cache.put(key, [r for r in rows if r.bucket_start < closed_end])
        return rows

    async def series_rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        project_id, resolution, start, end = window
        read, closed_end = self._reader(
            self._storage.series_rollups, project_id, resolution, end, series_prefix
        )
        if closed_end <= start:
            return await read(start, end)
        # The closed buckets merged: a row per series to keep, not one per series and bucket.
        key = json.dumps(["merged", project_id, resolution, series_prefix, start, closed_end])
        cached = await self._cache.get(key, project_id, resolution)
        if cached is None:
            closed, live = await asyncio.gather(read(start, closed_end), read(closed_end, end))
            await self._cache.put(key, closed)
        else:
            closed, live = cached, await read(closed_end, end)
        # A new list either way: the cached one is not the caller's to change.
        return merge_per_series([*closed, *live]) if live else list(closed)

    def _reader(
        self,
        method: Callable[..., Awaitable[list[Rollup]]],
        project_id: str,
        resolution: str,
        end: float,
        series_prefix: str | tuple[str, ...],
    ) -> tuple[Callable[[float, float], Awaitable[list[Rollup]]], float]:
        """A read of ``[lo, hi)`` through ``method``, and where the closed buckets of a range
        ending at ``end`` end (minute buckets are never cached: ``-inf``)."""
        now = time.time() if self._now is None else self._now
        width = RESOLUTIONS[resolution]
        closed_end = (
            -math.inf if resolution == "minute" else min(end, (now - SETTLE_S) // width * width)
        )

        async def read(lo: float, hi: float) -> list[Rollup]:
            if hi <= lo:
                return []
            return await method(Window(project_id, resolution, lo, hi), series_prefix)

        return read, closed_end

    async def totals(
        self,
        *,
        project_id: str,
        resolution: str,
        windows: Sequence[tuple[float, float]],
        series: str,
    ) -> list[Rollup]:
        return await self._storage.totals(
            project_id=project_id,
            resolution=resolution,
            windows=windows,
            series=series,
        )
