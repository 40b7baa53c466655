"""Per-key rate-limit overrides in Redis: one hash, a JSON override per key."""

from __future__ import annotations

import json

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from asgimon.errors import StorageUnavailable
from asgimon.ratelimit.overrides import Override


class Overrides:
    prefix: str

    def _redis(self) -> aioredis.Redis:
        raise NotImplementedError

    @property
    def _overrides_key(self) -> str:
        return f"{self.prefix}:rl-overrides"

    async def rate_limit_overrides(self) -> list[Override]:
        try:
            raw = await self._redis().hgetall(self._overrides_key)
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        found = [Override.from_dict(json.loads(v)) for v in raw.values()]
        return sorted(found, key=lambda o: o.created_at)

    async def set_rate_limit_override(self, override: Override) -> None:
        value = json.dumps(override.to_dict(), separators=(",", ":"))
        try:
            await self._redis().hset(self._overrides_key, override.key, value)
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc

    async def remove_rate_limit_override(self, key: str) -> bool:
        try:
            return bool(await self._redis().hdel(self._overrides_key, key))
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
