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
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as Strategy

from asgimon import redis_pools as pools
from asgimon.breaker import CircuitBreaker

from .counters import Counters
from .headers import Standing
from .policy import Rule
from .redis_moving import RedisMovingWindow
from .redis_sliding import RedisSlidingWindow
from .redis_window import RedisFixedWindow, RedisScript
from .windows import MovingWindows, SlidingCounters

log = logging.getLogger("asgimon.ratelimit")

TIMEOUT_S = 0.1
T = TypeVar("T")
STRATEGIES: dict[str, type[Strategy]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
LOG_EVERY_S = 60.0
Local = Counters | SlidingCounters | MovingWindows
REMOTE: dict[str, type[RedisScript]] = {
    "fixed-window": RedisFixedWindow,
    "moving-window": RedisMovingWindow,
    "sliding-window-counter": RedisSlidingWindow,
}
LOCAL: dict[str, type[Local]] = {
    "fixed-window": Counters,
    "moving-window": MovingWindows,
    "sliding-window-counter": SlidingCounters,
}


# Not frozen: made on every request, and a frozen dataclass takes 4x as long to make.
@dataclass(slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    window_s: int = 0
    index: int = 0  # the deciding limit's, among its rule's


class RateLimiter:
    def __init__(
        self,
        rate: str = "",
        *,
        redis_url: str | None = None,
        redis_pool: Any = None,
        key_prefix: str = "asgimon",
        strategy: str = "sliding-window-counter",
        timeout: float = TIMEOUT_S,
        namespace: str = "api-limit",
    ):
        """Counts in Redis when ``redis_url`` is given, over ``redis_pool`` (its owner's,
        who closes it; without one, a pool of the limiter's own), else in memory."""
        self.timeout = timeout
        self.items: list[RateLimitItem] = parse_many(rate) if rate else []
        self.rule = Rule("api", tuple(self.items))  # the analytics API's own, for check()
        self._pool: Any = None  # its own, closed with it
        # ``limits``' own strategy and storage, for the administration's reads and resets of
        # Redis's counters; in memory the counters below answer those themselves.
        self._limits: tuple[Strategy, Storage] | None = None
        if redis_url:
            if redis_pool is None:
                redis_pool = self._pool = pools.pool(redis_url, timeout=timeout)
            scheme, _, rest = redis_url.partition("://")
            storage = RedisStorage(
                {"unix": "async+redis+unix"}.get(scheme, "async+" + scheme) + "://" + rest,
                implementation="redispy",
                key_prefix=f"{key_prefix}:{namespace}",
                wrap_exceptions=True,
                connection_pool=redis_pool,
            )
            self._limits = (STRATEGIES[strategy](storage), storage)
        self.remote = bool(redis_url)
        # In Redis, one script per strategy: every limit of a rule spent at once, or none.
        self._remote = (
            REMOTE[strategy](redis_pool, f"{key_prefix}:{namespace}") if redis_url else None
        )
        # In memory, counted here: ``limits``' own memory storage sweeps every key on the loop.
        self.local: Local | None = None if redis_url else LOCAL[strategy]()
        self.breaker = CircuitBreaker()
        self.failures = 0
        self.bypassed = 0  # calls let through unchecked: the store failed, or its breaker
        self._last_log = -LOG_EVERY_S
        self._abandoned: set[asyncio.Future[Any]] = set()
        self.last_error: str | None = None

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    def headers(self, verdict: Verdict) -> list[tuple[bytes, bytes]]:
        """The headers of a :meth:`check`'s verdict, as the host's limit writes a refusal's:
        the IETF pair, ``X-RateLimit-*``, and ``Retry-After`` when it refused."""
        rule = self.rule
        return Standing(
            rule.name,
            verdict.limit,
            verdict.window_s,
            verdict.remaining,
            verdict.reset_s,
            verdict.allowed,
            rule.listed,
            rule.names[verdict.index],
        ).headers("all")

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
            self.bypassed += 1
            return None
        try:
            # Memory cannot hang: no timeout (a task per call) for what never waits.
            answer = await (self._bounded(call) if self.remote else call)
        except Exception as exc:  # the limiter must never fail a request
            self.failures += 1
            self.bypassed += 1
            self.last_error = repr(exc)[:300]
            self.breaker.failure()
            now = time.monotonic()
            if now - self._last_log >= LOG_EVERY_S:  # once per interval, never per request
                self._last_log = now
                log.warning(
                    "rate limiter unavailable (%d failures, %d let through): %r",
                    self.failures,
                    self.bypassed,
                    exc,
                )
            return None
        self.breaker.success()
        return answer

    async def _bounded(self, call: Coroutine[Any, Any, T]) -> T:
        """The call's answer within the timeout, else TimeoutError at the timeout. Not
        ``wait_for``: it waits for the cancelled call to unwind, and a client talking to a
        hung Redis took the whole hang to (1.5 s measured under SIGSTOP). The call is left
        to finish, or fail, on its own."""
        task = asyncio.ensure_future(call)
        await asyncio.wait({task}, timeout=self.timeout)
        if not task.done():
            task.cancel()
            self._abandoned.add(task)  # held until done, or asyncio may collect it pending
            task.add_done_callback(self._abandoned.discard)
            task.add_done_callback(_consume)
            raise TimeoutError(f"no answer within {self.timeout * 1000:g} ms")
        return task.result()

    async def _exhausted(self, key: str) -> bool:
        if self.local is not None:
            return any(left <= 0 for left, _ in self.local.standing(self.rule.counters, key))
        limiter, _ = self._limits_in_redis()
        for item in self.items:
            if not await limiter.test(item, "api", key):
                return True
        return False

    def decide_now(self, rule: Rule, key: str, cost: int = 1) -> Verdict | None:
        """:meth:`decide` without an await when the counters are in this process's memory,
        which cannot fail or hang; None when they are elsewhere."""
        if self.local is None:
            return None
        index, allowed, remaining, resets = self.local.spend(rule.counters, key, cost)
        return self.verdict_of(rule, index, remaining, resets, allowed)

    @staticmethod
    def verdict_of(
        rule: Rule, index: int, remaining: int, resets: float, allowed: bool = False
    ) -> Verdict:
        """The verdict of ``rule``'s limit at ``index``, as the counters answered it."""
        _, _, window, amount = rule.counters[index]
        return Verdict(allowed, amount, max(0, remaining), _seconds_until(resets), window, index)

    async def decide(self, rule: Rule, key: str, cost: int = 1) -> Verdict | None:
        """Spend ``cost`` of ``key`` against every limit of ``rule`` (counted under its
        name): the tightest verdict, or None when the store failed."""
        return self.decide_now(rule, key, cost) or await self._guarded(
            self._decide(rule, key, cost)
        )

    async def usage(self, rule: Rule, key: str) -> list[Verdict] | None:
        """Where ``key`` stands against each limit of ``rule`` now, spending nothing (None
        when the store failed)."""
        return await self._guarded(self._usage(rule, key))

    async def reset(self, rule: Rule, key: str) -> bool:
        """Forget what ``key`` spent against ``rule``; False when the store failed."""
        return await self._guarded(self._reset(rule, key)) is True

    async def _usage(self, rule: Rule, key: str) -> list[Verdict]:
        if self.local is not None:
            return [
                self._verdict(item, left > 0, left, resets, index)
                for index, (item, (left, resets)) in enumerate(
                    zip(rule.items, self.local.standing(rule.counters, key), strict=True)
                )
            ]
        limiter, storage = self._limits_in_redis()
        out = []
        for index, item in enumerate(rule.items):
            if isinstance(limiter, FixedWindowRateLimiter):
                counter = item.key_for(rule.name, key)
                count = await storage.get(counter)
                reset_at = await storage.get_expiry(counter)
                left = item.amount - count
            else:
                stats = await limiter.get_window_stats(item, rule.name, key)
                left, reset_at = stats.remaining, stats.reset_time
            out.append(self._verdict(item, left > 0, left, reset_at, index))
        return out

    async def _reset(self, rule: Rule, key: str) -> bool:
        if self.local is not None:
            self.local.forget(rule.counters, key)
            return True
        limiter, storage = self._limits_in_redis()
        for item in rule.items:
            if isinstance(limiter, FixedWindowRateLimiter):
                await storage.clear(item.key_for(rule.name, key))
            else:
                await limiter.clear(item, rule.name, key)
        return True

    def _limits_in_redis(self) -> tuple[Strategy, Storage]:
        assert self._limits is not None  # not in memory, where the counters answer
        return self._limits

    async def _check(self, key: str) -> Verdict:
        return await self._decide(self.rule, key, 1)

    async def _decide(self, rule: Rule, key: str, cost: int) -> Verdict:
        if (now := self.decide_now(rule, key, cost)) is not None:
            return now
        return await self._spend_remote(rule, key, cost)

    @staticmethod
    def _verdict(
        item: RateLimitItem, allowed: bool, remaining: int, reset_at: float, index: int = 0
    ) -> Verdict:
        return Verdict(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, remaining),
            reset_s=_seconds_until(reset_at),
            window_s=item.get_expiry(),
            index=index,
        )

    async def _spend_remote(self, rule: Rule, key: str, cost: int) -> Verdict:
        """Every limit of ``rule`` spent in one round trip to Redis, or none."""
        assert self._remote is not None  # not in memory: in Redis
        counters = [
            (head + key + tail, window, amount) for head, tail, window, amount in rule.counters
        ]
        refused, found = await self._remote.spend(counters, cost)
        items = rule.items
        if refused is not None:
            ((left, resets),) = found
            return self._verdict(items[refused], False, left, resets, refused)
        verdicts = [
            self._verdict(i, True, left, resets, index)
            for index, (i, (left, resets)) in enumerate(zip(items, found, strict=True))
        ]
        return min(verdicts, key=lambda v: v.remaining)


def _consume(task: asyncio.Future[Any]) -> None:
    """Read an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _seconds_until(moment: float) -> int:
    return max(0, math.ceil(moment - time.time()))
