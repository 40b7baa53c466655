"""F01/F02 for the host's rate limit: its Redis killed, hung (SIGSTOP) and restarted while
the host serves. Every request is answered by the app (no 5xx, no 503: the default fails
open), none waits much past the limiter's timeout, the breaker opens and closes again, and
what went through unchecked is counted."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import MemoryStorage, Monitor

from .redis_server import RedisServer, missing_binary

pytestmark = pytest.mark.slow

TIMEOUT_S = 0.1
# The limiter's own bound is its timeout (a backstop at twice it); the rest is this loaded
# 2-core machine scheduling eight clients.
LATENCY_BOUND_S = 2 * TIMEOUT_S + 0.15
ME = "addr:127.0.0.1"


async def item(request: Request) -> Response:
    return PlainTextResponse("ok")


@pytest.fixture
async def redis() -> AsyncIterator[RedisServer]:
    reason = missing_binary()
    if reason is not None:
        pytest.fail(reason)  # `make test` installs it: missing is a broken machine
    server = await RedisServer.create()
    try:
        yield server
    finally:
        server.destroy()


async def load(client: httpx.AsyncClient, seconds: float) -> tuple[Counter[int], float]:
    """Eight clients in a loop for ``seconds``: statuses, and the slowest answer."""
    statuses: Counter[int] = Counter()
    slowest = 0.0
    end = time.monotonic() + seconds

    async def one_client() -> None:
        nonlocal slowest
        while time.monotonic() < end:
            t0 = time.perf_counter()
            r = await client.get("/items/1")
            slowest = max(slowest, time.perf_counter() - t0)
            statuses[r.status_code] += 1
            # In process nothing waits once the breaker is open: without this, one client
            # would run the whole phase in one step and the others' requests wait for it.
            await asyncio.sleep(0)

    await asyncio.gather(*(one_client() for _ in range(8)))
    return statuses, slowest


async def until_closed(monitor: Monitor, client: httpx.AsyncClient, within: float) -> None:
    deadline = time.monotonic() + within
    while monitor.rate_limits.limiter.breaker.is_open:
        breaker = monitor.rate_limits.limiter.breaker
        assert time.monotonic() < deadline, repr((breaker.opened, monitor.rate_limits.report()))
        statuses, _ = await load(client, 0.2)
        assert set(statuses) == {200}


async def counting(monitor: Monitor, client: httpx.AsyncClient, seconds: float) -> Counter[int]:
    """Load with Redis up: it counts every request, save the few that a busy machine let
    pass the timeout, and those are counted as let through (a call that timed out may have
    reached Redis too). Nothing goes through unaccounted."""
    before, bypassed = await counted(monitor), monitor.rate_limits.limiter.bypassed
    statuses, _ = await load(client, seconds)
    assert set(statuses) == {200}, statuses
    let_through = monitor.rate_limits.limiter.bypassed - bypassed
    assert let_through <= statuses[200] // 50, (let_through, statuses)
    assert statuses[200] - let_through <= await counted(monitor) - before <= statuses[200]
    return statuses


async def counted(monitor: Monitor) -> int:
    usage = await monitor.rate_limits.usage(ME)
    assert usage is not None
    return sum(v.limit - v.remaining for u in usage for v in u.standing)


async def test_redis_killed_hung_and_restarted_under_load_never_fails_the_host(
    redis: RedisServer,
) -> None:
    monitor = Monitor(
        storage=MemoryStorage(),
        flush_interval=0.05,
        api_rate_limit=None,
        rate_limit_max=10**9,
        rate_limit_burst=0,
        rate_limit_storage_url=redis.url(),
        rate_limit_timeout_ms=TIMEOUT_S * 1000,
    )
    app = monitor.wrap(Starlette(routes=[Route("/items/{n}", item)]))
    transport = httpx.ASGITransport(app=app)
    limits = monitor.rate_limits
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/items/1")).status_code == 200  # the first connection
        statuses = await counting(monitor, client, 0.5)

        redis.pause()  # hung: connections open, nothing answers
        try:
            statuses, slowest = await load(client, 1.5)
            assert set(statuses) == {200}, statuses
            assert slowest < LATENCY_BOUND_S, slowest
            report = limits.report()
            assert report["breakerOpen"] is True
            assert report["letThrough"] > 0
            assert report["storeFailures"] >= 5
        finally:
            redis.resume()
        await until_closed(monitor, client, within=10.0)
        await counting(monitor, client, 0.3)  # counting again

        redis.kill()  # crashed: connections refused
        bypassed = limits.limiter.bypassed
        statuses, slowest = await load(client, 1.0)
        assert set(statuses) == {200}, statuses
        assert slowest < LATENCY_BOUND_S, slowest
        assert limits.limiter.bypassed - bypassed >= statuses[200] - 10  # all but the trials
        assert limits.report()["breakerOpen"] is True

        await redis.start()  # back, empty
        await until_closed(monitor, client, within=10.0)
        statuses, _ = await load(client, 0.3)
        assert await counted(monitor) >= statuses[200]
        assert monitor.rate_limits.middleware is not None
        assert monitor.rate_limits.middleware.refused_closed == 0
    health = await monitor.health()
    assert health["rateLimit"]["letThrough"] == limits.limiter.bypassed > 0
