"""Error groups' lifecycle in Redis: one hash per project, a JSON state per group.

A change is optimistic: read the groups (HMGET), compute, then one script writes them only
if each still holds the version read; if another worker wrote one meanwhile, the change is
computed again from what that worker left. Two round trips, and no connection held between
them (a WATCH would pin one while the change is computed, starving the writer on a slow
link).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from asgimon.errors import StorageUnavailable
from asgimon.errortracking.state import GroupState
from asgimon.storage.base import GroupChange

MAX_ATTEMPTS = 20

# KEYS[1]: a project's hash; ARGV[1]: the cutoff. Deletes the groups last seen before it.
_PURGE = """
local doomed = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if cjson.decode(fields[i + 1])['last_seen'] < tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], fields[i])
    doomed = doomed + 1
  end
end
return doomed
"""

# KEYS[1]: the project's hash; ARGV: n, then n fingerprints, the n versions they were read
# at (0: absent) and the n states to write. All or nothing: 0 if any changed meanwhile.
_CAS = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local held = redis.call('HGET', KEYS[1], ARGV[1 + i])
  local version = 0
  if held then version = cjson.decode(held)['version'] end
  if version ~= tonumber(ARGV[1 + n + i]) then return 0 end
end
for i = 1, n do
  redis.call('HSET', KEYS[1], ARGV[1 + i], ARGV[1 + 2 * n + i])
end
return 1
"""


def groups_key(prefix: str, project_id: str) -> str:
    return f"{prefix}:groups:{project_id}"


def _decode(raw: str | bytes | None) -> GroupState | None:
    return None if raw is None else GroupState.from_dict(json.loads(raw))


def _encode(state: GroupState) -> str:
    return json.dumps(state.to_dict(), separators=(",", ":"))


class Groups:
    prefix: str

    def _redis(self) -> aioredis.Redis:
        raise NotImplementedError

    async def error_groups(
        self, project_id: str, fingerprints: Sequence[str] | None = None
    ) -> list[GroupState]:
        r = self._redis()
        key = groups_key(self.prefix, project_id)
        try:
            raw: list[str | bytes | None]
            if fingerprints is None:
                raw = list((await r.hgetall(key)).values())
            else:
                wanted = list(dict.fromkeys(fingerprints))
                raw = await r.hmget(key, wanted) if wanted else []
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        return [s for s in map(_decode, raw) if s is not None]

    async def change_error_groups(
        self, project_id: str, fingerprints: Sequence[str], change: GroupChange
    ) -> list[GroupState]:
        wanted = list(dict.fromkeys(fingerprints))
        if not wanted:
            return []
        key = groups_key(self.prefix, project_id)
        r = self._redis()
        try:
            for _ in range(MAX_ATTEMPTS):
                raw = await r.hmget(key, wanted)
                held = dict(zip(wanted, map(_decode, raw), strict=True))
                written = []
                for state in change(held):
                    if state.fingerprint not in held:
                        raise ValueError(f"{state.fingerprint!r} was not asked for")
                    before = held[state.fingerprint]
                    state.version = (before.version if before else 0) + 1
                    written.append(state)
                if not written:
                    return []
                args: list[Any] = [len(written)]
                args += [s.fingerprint for s in written]
                args += [s.version - 1 for s in written]
                args += [_encode(s) for s in written]
                if await r.eval(_CAS, 1, key, *args):
                    return written
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        raise StorageUnavailable(f"redis: {key} kept changing; gave up after {MAX_ATTEMPTS} tries")

    async def _purge_all_groups(self, cutoff: float) -> int:
        # Every project's hash, found by its key: a project's groups may outlive its events.
        # The age is judged inside the script, so a group seen meanwhile is kept.
        r = self._redis()
        total = 0
        async for key in r.scan_iter(match=groups_key(self.prefix, "*"), count=500):
            total += int(await r.eval(_PURGE, 1, key, cutoff))
        return total
