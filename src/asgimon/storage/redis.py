"""The Redis store: a real-time window of events and rollups (24 h by default).

Every key expires on its own (``EXPIRE`` from the time it was written), so Redis never
needs purging to stay bounded. A batch is written by one Lua script per thousand events, each
atomic and idempotent: an event id already seen (``SET NX``) adds nothing, neither to the
event lists nor to the rollups. The script sums the rollups of the new events per series and
bucket, then reads and writes each rollup hash once.

Layout, under a key prefix (``asgimon`` by default)::

    {p}:seen:{len}:{project}:{id}       the idempotency marker (all that is kept of an API
                                        call that sampling left out)
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

import asyncio
import dataclasses
import json
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

from asgimon import histogram
from asgimon.errors import StorageError, StorageRejected, StorageUnavailable
from asgimon.events import EVENT_TYPES, Event, kinds_with_users
from asgimon.rollups import RESOLUTIONS, Rollup
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.storage.base import SumsByScan, WriteResult

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("the Redis store needs: pip install 'asgimon[redis]'") from exc

SEP = "\x1f"
# A script blocks every other client of the server while it runs (the rate limiter's too):
# a thousand events take some 10-25 ms, far under the socket timeout, and the more events per
# call, the more of their rollup fields are merged before they are written.
SCRIPT_EVENTS = 1000
# Events encoded between two yields to the event loop: about a millisecond of Python.
SLICE_EVENTS = 100
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
# -- members: an event as the JSON object stored in its ZSET ---------------------------------

_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_json_any: Callable[[Any], str] = _JSON.encode
if c_make_encoder is not None:
    # One C encoder for every call: ``json.dumps`` with options builds a new one each time.
    # No circularity markers (a failed encode would leave stale ones behind): a cycle ends
    # in RecursionError instead, rejected like any other bad event.
    _c_encode = c_make_encoder(
        None, _JSON.default, encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def _json_any(value: Any) -> str:
        return "".join(_c_encode(value, 0))


def _json_float(value: float) -> str:
    if value - value != 0.0:  # inf and nan
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    return float.__repr__(value)


# Exactly what the JSON encoder writes for these types; anything else goes through it.
_JSON_SCALAR: dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii,
    int: int.__repr__,
    float: _json_float,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _: "null",
}


def _member_encoder(kind: str) -> Callable[[Event], str]:
    """What ``json.dumps({field: value, ..., "kind": kind}, separators=(",", ":"),
    allow_nan=False)`` writes for an event of this kind, its keys written once: ASCII only, so
    no member holds a newline."""
    names = tuple(f.name for f in dataclasses.fields(EVENT_TYPES[kind]))
    keys = [("," if i else "{") + encode_basestring_ascii(n) + ":" for i, n in enumerate(names)]
    tail = "," + encode_basestring_ascii("kind") + ":" + encode_basestring_ascii(kind) + "}"
    template = "%s".join(k.replace("%", "%%") for k in keys) + "%s" + tail.replace("%", "%%")
    get = operator.attrgetter(*names)
    scalar, other = _JSON_SCALAR.get, _json_any

    def encode(ev: Event) -> str:
        return template % tuple([scalar(type(v), other)(v) for v in get(ev)])

    return encode


class _Members(dict[str, Callable[[Event], str]]):
    """Each kind's encoder, made on first use (a kind may be registered after import)."""

    def __missing__(self, kind: str) -> Callable[[Event], str]:
        encode = self[kind] = _member_encoder(kind)
        return encode


_MEMBER = _Members()


# -- the write script and its arguments ------------------------------------------------------

# ARGV: prefix, ttl, now; a JSON array [zsets, hashes, groups]; the rows, one flat JSON array
# of six values per event; the events' members, each ended by a newline (a member is ASCII
# JSON, so it holds none).
#
#   zset   {key, index key, hour, kind}                   the events of one kind, project, hour
#   hash   {key, index key, bucket}                       the rollups of one project and bucket
#   group  {seen-key prefix, zset, {series field prefixes}, minute hash, hour hash, day hash,
#           project}                                      the events of one kind, project,
#                                                         rollup series and minute
#   row    id, group (negative for an error), timestamp, user or "", value or false, bin
#
# Rollups are summed per group over the events whose SET NX succeeded, so a retried batch or
# an id repeated inside it adds nothing; each hash is then read once and written once, where
# one HINCRBY per event and field would take most of the script's time. All in one script: an
# event is never stored without its rollups, nor its rollups without it.
_WRITE = """
local p, ttl, now = ARGV[1], ARGV[2], ARGV[3]
local meta = cjson.decode(ARGV[4])
local zsets, hashes, groups = meta[1], meta[2], meta[3]
local rows, blob = cjson.decode(ARGV[5]), ARGV[6]
local call, find, sub, encode, unpack, min = redis.call, string.find, string.sub, cjson.encode,
  unpack, math.min
-- unpack() is bounded by Lua's C stack (about 8000 values): long lists go in slices.
local function each_slice(list, n, size, fn)
  for a = 1, n, size do fn(a, min(a + size - 1, n)) end
end

local ng = #groups
local cnt, errs, nv, sum, lo, hi, bins = {}, {}, {}, {}, {}, {}, {}
for g = 1, ng do cnt[g], errs[g], nv[g], sum[g] = 0, 0, 0, 0 end
local zmembers, zcount, users, userkeys = {}, {}, {}, {}
local fresh, pos = {}, 1
for i = 1, #rows, 6 do
  local stop = find(blob, "\\n", pos, true)
  local g = rows[i + 1]
  local err = g < 0
  if err then g = -g end
  local grp = groups[g]
  if call("SET", grp[1] .. rows[i], "1", "NX", "EX", ttl) then
    fresh[#fresh + 1] = (i - 1) / 6
    local member = sub(blob, pos, stop - 1)
    -- An empty member: an event sampling did not keep, which only feeds the rollups.
    if member ~= "" then
      local z = grp[2]
      local zm, n = zmembers[z], zcount[z]
      if not zm then zm, n = {}, 0; zmembers[z] = zm end
      zm[n + 1], zm[n + 2] = rows[i + 2], member
      zcount[z] = n + 2
    end
    local user = rows[i + 3]
    if user ~= "" then
      local uk = p .. ":usr:" .. user
      local entries = users[uk]
      if not entries then entries = {}; users[uk] = entries; userkeys[#userkeys + 1] = uk end
      local zset = zsets[grp[2]]
      entries[#entries + 1] = encode({zset[4], zset[1], member})
    end
    cnt[g] = cnt[g] + 1
    if err then errs[g] = errs[g] + 1 end
    local v = rows[i + 4]
    if v then
      nv[g] = nv[g] + 1
      sum[g] = sum[g] + v
      local l, h = lo[g], hi[g]
      if not l or v < l then lo[g] = v end
      if not h or v > h then hi[g] = v end
      local b = bins[g]
      if not b then b = {}; bins[g] = b end
      local k = rows[i + 5]
      b[k] = (b[k] or 0) + 1
    end
  end
  pos = stop + 1
end

for z, zm in pairs(zmembers) do
  local zset = zsets[z]
  local zk, zi, hour = zset[1], zset[2], zset[3]
  each_slice(zm, zcount[z], 1000, function(a, b) call("ZADD", zk, unpack(zm, a, b)) end)
  call("EXPIRE", zk, ttl)
  call("ZADD", zi, hour, hour)
  call("EXPIRE", zi, ttl)
end
for _, uk in ipairs(userkeys) do
  local entries = users[uk]
  each_slice(entries, #entries, 1000, function(a, b) call("SADD", uk, unpack(entries, a, b)) end)
  call("EXPIRE", uk, ttl)
end

-- Per hash, each field once: its name, then its delta (kind 0), or the least (1) or greatest
-- (2) value. A series' fields are named once per group and go to its three hashes.
local hnames, hvals, hkinds, projects, listed = {}, {}, {}, {}, {}
for h = 1, #hashes do hnames[h], hvals[h], hkinds[h] = {}, {}, {} end
for g = 1, ng do
  local c = cnt[g]
  if c > 0 then
    local grp = groups[g]
    local project = grp[7]
    if not listed[project] then
      listed[project] = true
      projects[#projects + 1] = now
      projects[#projects + 1] = project
    end
    local e, n, b = errs[g], nv[g], bins[g]
    local fields = grp[3]
    for s = 1, #fields do
      local pre = fields[s]
      local fn, fd, fk = {pre .. "c"}, {c}, {0}
      if e > 0 then fn[2], fd[2], fk[2] = pre .. "e", e, 0 end
      if n > 0 then
        local m = #fn
        fn[m + 1], fd[m + 1], fk[m + 1] = pre .. "n", n, 0
        fn[m + 2], fd[m + 2], fk[m + 2] = pre .. "s", sum[g], 0
        fn[m + 3], fd[m + 3], fk[m + 3] = pre .. "lo", lo[g], 1
        fn[m + 4], fd[m + 4], fk[m + 4] = pre .. "hi", hi[g], 2
        m = m + 4
        for k, count in pairs(b) do
          m = m + 1
          fn[m], fd[m], fk[m] = pre .. "b" .. k, count, 0
        end
      end
      for j = 4, 6 do
        local h = grp[j]
        local names, vals, kinds = hnames[h], hvals[h], hkinds[h]
        for q = 1, #fn do
          local f, d = fn[q], fd[q]
          local old = vals[f]
          if old == nil then
            names[#names + 1] = f
            vals[f], kinds[f] = d, fk[q]
          else
            local k = fk[q]
            if k == 0 then vals[f] = old + d
            elseif (k == 1 and d < old) or (k == 2 and d > old) then vals[f] = d end
          end
        end
      end
    end
  end
end

for h = 1, #hashes do
  local names = hnames[h]
  if #names > 0 then
    local vals, kinds = hvals[h], hkinds[h]
    local hash = hashes[h]
    local hk, ri, bucket = hash[1], hash[2], hash[3]
    -- A new bucket has nothing to read back.
    local exists = call("EXISTS", hk) == 1
    each_slice(names, #names, 500, function(a, b)
      local olds = exists and call("HMGET", hk, unpack(names, a, b))
      local out, m = {}, 0
      for k = a, b do
        local f = names[k]
        local v, old = vals[f], olds and olds[k - a + 1]
        if old then
          old = tonumber(old)
          local kind = kinds[f]
          if kind == 0 then v = v + old
          elseif (kind == 1 and v >= old) or (kind == 2 and v <= old) then v = nil end
        end
        if v then out[m + 1], out[m + 2], m = f, v, m + 2 end
      end
      if m > 0 then call("HSET", hk, unpack(out, 1, m)) end
    end)
    call("EXPIRE", hk, ttl)
    call("ZADD", ri, bucket, bucket)
    call("EXPIRE", ri, ttl)
  end
end

local pk = p .. ":projects"
each_slice(projects, #projects, 1000, function(a, b) call("ZADD", pk, unpack(projects, a, b)) end)
call("EXPIRE", pk, ttl)
return fresh
"""

_WIDTHS = tuple(RESOLUTIONS.items())


class _Call:
    """The arguments of one script call, built a slice of events at a time."""

    __slots__ = (
        "_gindex",
        "_hindex",
        "_zindex",
        "groups",
        "hashes",
        "members",
        "prefix",
        "rows",
        "zsets",
    )

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.zsets: list[list[str]] = []
        self.hashes: list[list[str]] = []
        self.groups: list[list[Any]] = []
        # Encoded a slice at a time: JSON fragments of the rows, newline-joined members.
        self.rows: list[str] = []
        self.members: list[str] = []
        self._zindex: dict[tuple[str, str, int], int] = {}
        self._hindex: dict[tuple[str, str, int], int] = {}
        self._gindex: dict[tuple[str, str, tuple[str, ...], int], int] = {}

    def add(self, events: Sequence[Event], sampling: RawSampling) -> None:
        """Encode a slice of events; an event that cannot be stored rejects the batch."""
        gindex = self._gindex
        rows: list[Any] = []
        members: list[str] = []
        bin_index, member = histogram.bin_index, _MEMBER
        keeps = None if sampling.keeps_all else sampling.keeps
        for ev in events:
            try:
                kind = ev.kind
                raw = keeps is None or keeps(ev)
                members.append(member[kind](ev) if raw else "")
                ts = ev.timestamp
                key = (kind, ev.project_id, ev.rollup_series(), int(ts // 60) * 60)
                g = gindex.get(key) or self._group(key)
                if ev.is_error():
                    g = -g
                user = (getattr(ev, "user_id", None) or "") if raw else ""
                value = ev.value()
                if value is None:
                    rows += (ev.id, g, ts, user, False, 0)
                else:
                    value = float(value)
                    rows += (ev.id, g, ts, user, value, bin_index(value))
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise StorageRejected(f"event {ev.id} cannot be encoded: {exc}") from exc
        if rows:
            try:
                self.rows.append(_JSON.encode(rows)[1:-1])
            except (TypeError, ValueError, RecursionError) as exc:
                raise StorageRejected(f"a batch cannot be encoded: {exc}") from exc
            self.members.append("\n".join(members))

    def _group(self, key: tuple[str, str, tuple[str, ...], int]) -> int:
        kind, project, series, minute = key
        p = self.prefix
        hour = minute // 3600 * 3600
        zkey = (kind, project, hour)
        z = self._zindex.get(zkey)
        if z is None:
            z = self._zindex[zkey] = len(self.zsets) + 1
            self.zsets.append(
                [f"{p}:ev:{kind}:{project}:{hour}", f"{p}:evi:{kind}:{project}", str(hour), kind]
            )
        hashes = [self._hash(project, res, minute // width * width) for res, width in _WIDTHS]
        # The project's length (in bytes, as the key holds it) makes the key unambiguous
        # whatever the project and id contain.
        seen = f"{p}:seen:{len(project.encode())}:{project}:"
        fields = [f"{s}{SEP}" for s in series]
        self.groups.append([seen, z, fields, *hashes, project])
        g = self._gindex[key] = len(self.groups)
        return g

    def _hash(self, project: str, resolution: str, bucket: int) -> int:
        key = (project, resolution, bucket)
        h = self._hindex.get(key)
        if h is None:
            h = self._hindex[key] = len(self.hashes) + 1
            p = self.prefix
            self.hashes.append(
                [
                    f"{p}:ru:{project}:{resolution}:{bucket}",
                    f"{p}:rui:{project}:{resolution}",
                    str(bucket),
                ]
            )
        return h

    def args(self, ttl: int) -> list[Any]:
        meta = _JSON.encode([self.zsets, self.hashes, self.groups])
        rows = "[" + ",".join(self.rows) + "]"
        members = "\n".join(self.members) + "\n"
        return [self.prefix, ttl, time.time(), meta, rows, members]


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

    async def write(
        self, events: Sequence[Event], *, sampling: RawSampling = KEEP_ALL
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
        except StorageError as exc:
            exc.stored = tuple(fresh)  # committed by the calls before this one
            raise
        return WriteResult(len(fresh), len(events) - len(fresh), fresh)

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
