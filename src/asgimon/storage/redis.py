"""The Redis store: a real-time window of events and rollups (24 h by default).

Every key expires on its own (``EXPIRE`` from the time it was written), so Redis never
needs purging to stay bounded. A batch is written by one Lua script, so it is atomic and
idempotent: an event id already seen (``SET NX``) adds nothing, neither to the event lists
nor to the rollups.

Layout, under a key prefix (``asgimon`` by default)::

    {p}:seen:{len}:{project}:{id}       the idempotency marker
    {p}:ev:{kind}:{project}:{hour}      ZSET of events (score: timestamp, member: JSON)
    {p}:evi:{kind}:{project}            ZSET of the hours that have events
    {p}:ru:{project}:{res}:{bucket}     HASH of rollup fields, "{series}\\x1f{field}"
    {p}:rui:{project}:{res}             ZSET of the buckets that have rollups
    {p}:usr:{user}                      SET of [kind, key, member] of a user's events (erasure)
    {p}:projects                        ZSET of projects (score: last write)
    {p}:claim:{job}:{period}            a periodic job's claim

What a caller gets beyond the window: nothing. Queries over older ranges answer with what
is left (empty lists, zero counts), never an error. Keys are not hash-tagged: one Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from asgimon import histogram
from asgimon.errors import StorageError, StorageRejected, StorageUnavailable
from asgimon.events import EVENT_TYPES, Event
from asgimon.rollups import RESOLUTIONS, Rollup
from asgimon.storage.base import SumsByScan, WriteResult

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Redis store needs: pip install 'asgimon[redis]'") from exc

SEP = "\x1f"
SCRIPT_EVENTS = 250
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
_FIELDS: dict[str, tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(cls)) for kind, cls in EVENT_TYPES.items()
}

_WRITE = """
local p, ttl = ARGV[1], tonumber(ARGV[2])
local widths = {minute = 60, hour = 3600, day = 86400}
local now = tonumber(ARGV[3])
local inserted = 0
for i = 4, #ARGV, 10 do
  local id, project, kind, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local member, serieslist, value = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local err, bin, user = ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  -- The project's length makes the key unambiguous whatever the project and id contain.
  local seen = p .. ":seen:" .. string.len(project) .. ":" .. project .. ":" .. id
  if redis.call("SET", seen, "1", "NX", "EX", ttl) then
    inserted = inserted + 1
    local hour = string.format("%d", math.floor(ts / 3600) * 3600)
    local zk = p .. ":ev:" .. kind .. ":" .. project .. ":" .. hour
    redis.call("ZADD", zk, ts, member)
    redis.call("EXPIRE", zk, ttl)
    local zi = p .. ":evi:" .. kind .. ":" .. project
    redis.call("ZADD", zi, tonumber(hour), hour)
    redis.call("EXPIRE", zi, ttl)
    if user ~= "" then
      local uk = p .. ":usr:" .. user
      redis.call("SADD", uk, cjson.encode({kind, zk, member}))
      redis.call("EXPIRE", uk, ttl)
    end
    for series in string.gmatch(serieslist, "[^\\30]+") do
      for res, width in pairs(widths) do
        local bucket = string.format("%d", math.floor(ts / width) * width)
        local hk = p .. ":ru:" .. project .. ":" .. res .. ":" .. bucket
        local f = series .. "\\31"
        redis.call("HINCRBY", hk, f .. "c", 1)
        if err == "1" then redis.call("HINCRBY", hk, f .. "e", 1) end
        if value ~= "" then
          local v = tonumber(value)
          redis.call("HINCRBY", hk, f .. "n", 1)
          redis.call("HINCRBYFLOAT", hk, f .. "s", value)
          local lo = redis.call("HGET", hk, f .. "lo")
          if not lo or v < tonumber(lo) then redis.call("HSET", hk, f .. "lo", value) end
          local hi = redis.call("HGET", hk, f .. "hi")
          if not hi or v > tonumber(hi) then redis.call("HSET", hk, f .. "hi", value) end
          redis.call("HINCRBY", hk, f .. "b" .. bin, 1)
        end
        redis.call("EXPIRE", hk, ttl)
        local ri = p .. ":rui:" .. project .. ":" .. res
        redis.call("ZADD", ri, tonumber(bucket), bucket)
        redis.call("EXPIRE", ri, ttl)
      end
    end
    redis.call("ZADD", p .. ":projects", now, project)
  end
end
redis.call("EXPIRE", p .. ":projects", ttl)
return inserted
"""


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


def _encode(ev: Event) -> str:
    data = {name: getattr(ev, name) for name in _FIELDS[ev.kind]}
    data["kind"] = ev.kind
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def _decode(member: str | bytes) -> Event:
    data = json.loads(member)
    kind = data.pop("kind")
    return EVENT_TYPES[kind](**data)


class RedisStorage(SumsByScan):
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

    @property
    def identity(self) -> str:
        """Which store this is, for keys shared with other processes (no password)."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}#{self.prefix}"

    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                decode_responses=True,
                health_check_interval=30,
            )
            self._script = self._client.register_script(_WRITE)
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

    async def write(self, events: Sequence[Event]) -> WriteResult:
        # Every event is encoded before anything is sent, so a bad one rejects the batch
        # before any part of it is stored.
        encoded = [self._args(ev) for ev in events]
        inserted = 0
        # A script blocks every other client of the server while it runs (the rate limiter's
        # too): a few hundred events per call keep each call short, and under the socket
        # timeout. Each call is atomic; together they stay idempotent.
        for i in range(0, len(encoded), SCRIPT_EVENTS):
            args: list[Any] = [self.prefix, self.ttl, time.time()]
            for one in encoded[i : i + SCRIPT_EVENTS]:
                args += one
            self._redis()
            inserted += int(await self._call(self._script(keys=[], args=args)))
        return WriteResult(inserted=inserted, duplicates=len(events) - inserted)

    def _args(self, ev: Event) -> list[Any]:
        value = ev.value()
        try:
            member = _encode(ev)
        except (TypeError, ValueError) as exc:
            raise StorageRejected(f"event {ev.id} cannot be encoded: {exc}") from exc
        return [
            ev.id,
            ev.project_id,
            ev.kind,
            repr(float(ev.timestamp)),
            member,
            "\x1e".join(ev.rollup_series()),
            "" if value is None else repr(float(value)),
            "1" if ev.is_error() else "0",
            "" if value is None else histogram.bin_index(value),
            getattr(ev, "user_id", None) or "",
        ]

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
    ) -> list[Event]:
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}")
        lo = "-inf" if start is None else start
        hi = "+inf" if end is None else f"({end}"
        found: list[tuple[float, Event]] = []
        for project in await self._projects_for(project_id):
            for hour in reversed(await self._hours(kind, project, start, end)):
                key = f"{self.prefix}:ev:{kind}:{project}:{hour}"
                rows = await self._call(
                    self._redis().zrevrangebyscore(key, hi, lo, start=0, num=limit, withscores=True)
                )
                found.extend((score, _decode(member)) for member, score in rows)
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
        self,
        *,
        project_id: str,
        resolution: str,
        start: float,
        end: float,
        series_prefix: str | tuple[str, ...] = "",
    ) -> list[Rollup]:
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
            return {"api_call": 0, "error": 0}
        except (redis_errors.RedisError, OSError) as exc:
            raise _classify(exc) from exc
        deleted = {"api_call": 0, "error": 0}
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
