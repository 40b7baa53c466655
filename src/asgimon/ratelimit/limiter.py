"""A rate limiter on the ``limits`` library that fails open.

A sliding-window counter per key, in memory, or in Redis so that every worker shares the
count. If the counter's store fails or is slow (100 ms) the call is let through, and after
five failures in a row a circuit breaker stops asking it for a while: a broken limiter must
not take down what it guards. The analytics API's own limit (``ANALYTICS_API_RATE_LIMIT``,
per principal, else per client address) runs on it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from asgimon import redis_pools as pools
from asgimon.breaker import CircuitBreaker

log = logging.getLogger("asgimon.ratelimit")

TIMEOUT_S = 0.1
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, self.reset_s))
        return out


class RateLimiter:
    def __init__(
        self,
        rate: str,
        *,
        redis_url: str | None = None,
        redis_pool: Any = None,
        key_prefix: str = "asgimon",
    ):
        """Counts in Redis when ``redis_url`` is given, over ``redis_pool`` (its owner's,
        who closes it; without one, a pool of the limiter's own), else in memory."""
        self.items: list[RateLimitItem] = parse_many(rate)
        storage: Storage
        self._pool: Any = None  # its own, closed with it
        if redis_url:
            if redis_pool is None:
                redis_pool = self._pool = pools.pool(redis_url, timeout=TIMEOUT_S)
            scheme, _, rest = redis_url.partition("://")
            storage = RedisStorage(
                {"unix": "async+redis+unix"}.get(scheme, "async+" + scheme) + "://" + rest,
                implementation="redispy",
                key_prefix=f"{key_prefix}:api-limit",
                wrap_exceptions=True,
                connection_pool=redis_pool,
            )
        else:
            storage = MemoryStorage()
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.breaker = CircuitBreaker()
        self.failures = 0

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    async def check(self, key: str) -> Verdict | None:
        """The verdict of the tightest limit, or None when the store failed (let through)."""
        return await self._guarded(self._check(key))

    async def exhausted(self, key: str) -> bool:
        """Whether ``key`` has no request left, without spending one (False on failure)."""
        return await self._guarded(self._exhausted(key)) is True

    async def _guarded(self, call: Coroutine[Any, Any, T]) -> T | None:
        """The call's answer; None when the store fails, is slow or its breaker is open."""
        if not self.breaker.allow():
            call.close()
            return None
        try:
            answer = await asyncio.wait_for(call, TIMEOUT_S * 2)
        except Exception as exc:  # the limiter must never fail a request
            self.failures += 1
            self.breaker.failure()
            if self.failures == 1 or self.failures % 1000 == 0:
                log.warning("API rate limiter unavailable (%d failures): %r", self.failures, exc)
            return None
        self.breaker.success()
        return answer

    async def _exhausted(self, key: str) -> bool:
        for item in self.items:
            if not await self.limiter.test(item, "api", key):
                return True
        return False

    async def _check(self, key: str) -> Verdict:
        tightest: Verdict | None = None
        for item in self.items:
            allowed = await self.limiter.hit(item, "api", key)
            stats = await self.limiter.get_window_stats(item, "api", key)
            verdict = Verdict(
                allowed=allowed,
                limit=item.amount,
                remaining=max(0, stats.remaining),
                reset_s=max(0, math.ceil(stats.reset_time - time.time())),
            )
            if not allowed:
                return verdict
            if tightest is None or verdict.remaining < tightest.remaining:
                tightest = verdict
        assert tightest is not None
        return tightest
