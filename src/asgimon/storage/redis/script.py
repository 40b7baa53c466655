"""The write script (Lua) and the arguments of one call of it, built a slice at a time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from asgimon import histogram
from asgimon.errors import StorageRejected
from asgimon.events import Event
from asgimon.rollups import RESOLUTIONS
from asgimon.sampling import RawSampling

from .members import _JSON, _MEMBER

SEP = "\x1f"
# A script blocks every other client of the server while it runs (the rate limiter's too):
# a thousand events take some 10-25 ms, far under the socket timeout, and the more events per
# call, the more of their rollup fields are merged before they are written.
SCRIPT_EVENTS = 1000
# Events encoded between two yields to the event loop: about a millisecond of Python.
SLICE_EVENTS = 100

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
# What both scripts begin with: ARGV's first three, and adding fields to a rollup hash.
# ``names`` lists the fields, ``vals`` and ``kinds`` map each to its delta (kind 0), or to
# the least (1) or greatest (2) value seen.
PRELUDE = """
local p, ttl, now = ARGV[1], ARGV[2], ARGV[3]
local call, find, sub, encode, unpack, min = redis.call, string.find, string.sub, cjson.encode,
  unpack, math.min
-- unpack() is bounded by Lua's C stack (about 8000 values): long lists go in slices.
local function each_slice(list, n, size, fn)
  for a = 1, n, size do fn(a, min(a + size - 1, n)) end
end
local function merge_hash(hk, ri, bucket, names, vals, kinds)
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
"""

_WRITE = (
    PRELUDE
    + """
local meta = cjson.decode(ARGV[4])
local zsets, hashes, groups = meta[1], meta[2], meta[3]
local rows, blob = cjson.decode(ARGV[5]), ARGV[6]

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
    local hash = hashes[h]
    merge_hash(hash[1], hash[2], hash[3], names, hvals[h], hkinds[h])
  end
end

local pk = p .. ":projects"
each_slice(projects, #projects, 1000, function(a, b) call("ZADD", pk, unpack(projects, a, b)) end)
call("EXPIRE", pk, ttl)
return fresh
"""
)

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
