"""Error groups' lifecycle in Redis: one hash per project, a JSON state per group.

A change is an optimistic transaction: WATCH the project's hash, read the groups, compute,
MULTI / EXEC; if another worker wrote the hash meanwhile, EXEC fails and the change is
computed again from what that worker left.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from asgimon.errors import StorageUnavailable
from asgimon.errortracking.state import GroupState
from asgimon.storage.base import GroupChange

MAX_ATTEMPTS = 20


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
        try:
            async with self._redis().pipeline(transaction=True) as pipe:
                for _ in range(MAX_ATTEMPTS):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.hmget(key, wanted)
                        held = dict(zip(wanted, map(_decode, raw), strict=True))
                        written = []
                        for state in change(held):
                            if state.fingerprint not in held:
                                raise ValueError(f"{state.fingerprint!r} was not asked for")
                            before = held[state.fingerprint]
                            state.version = (before.version if before else 0) + 1
                            written.append(state)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if written:
                            pipe.hset(key, mapping={s.fingerprint: _encode(s) for s in written})
                        await pipe.execute()
                        return written
                    except redis_errors.WatchError:
                        continue
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        raise StorageUnavailable(f"redis: {key} kept changing; gave up after {MAX_ATTEMPTS} tries")

    async def _purge_all_groups(self, cutoff: float) -> int:
        # Every project's hash, found by its key: a project's groups may outlive its events.
        r = self._redis()
        total = 0
        async for key in r.scan_iter(match=groups_key(self.prefix, "*"), count=500):
            doomed = [
                fp
                for fp, raw in (await r.hgetall(key)).items()
                if (state := _decode(raw)) is not None and state.last_seen < cutoff
            ]
            if doomed:
                total += int(await r.hdel(key, *doomed))
        return total
