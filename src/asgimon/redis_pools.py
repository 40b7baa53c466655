"""Redis connections, made one way for every part that talks to Redis.

The Monitor owns one :class:`RedisPools`: the rollup cache and the API's rate limiter share
its pool for ``ANALYTICS_REDIS_URL`` and it is closed once, after them. The Redis store
makes its own client with :func:`client` (its replies decoded, its own timeout), since its
lifetime is the store's.
"""

from __future__ import annotations

from typing import Any

from .errors import require_extra

HELPER_TIMEOUT_S = 0.1
"""For optional helpers (cache, limiter): a slow Redis must cost a request 100 ms at most."""


def _redis() -> Any:
    require_extra("redis", "redis", "ANALYTICS_REDIS_URL", "(set)")
    import redis.asyncio as aioredis

    return aioredis


def pool(url: str, *, timeout: float, decode: bool = False) -> Any:
    """A connection pool with asgimon's timeouts (connect and every reply)."""
    return _redis().ConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=decode,
        health_check_interval=30,
    )


def client(url: str, *, timeout: float, decode: bool = False) -> Any:
    """A client over a pool of its own (closing the client closes the pool)."""
    return _redis().Redis.from_pool(pool(url, timeout=timeout, decode=decode))


class RedisPools:
    """The pools of one owner, one per URL, made on first use and closed together."""

    def __init__(self, timeout: float = HELPER_TIMEOUT_S) -> None:
        self.timeout = timeout
        self._pools: dict[str, Any] = {}

    def pool(self, url: str) -> Any:
        found = self._pools.get(url)
        if found is None:
            found = self._pools[url] = pool(url, timeout=self.timeout)
        return found

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            await p.disconnect()
