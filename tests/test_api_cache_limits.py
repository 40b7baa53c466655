"""The analytics API's cache (closed buckets only, per project, in process and in Redis) and
its own rate limit (per principal, shared through Redis, failing open)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import ApiCall, ConfigError, MemoryStorage, Monitor, Storage
from asgimon.settings import Settings

from .conftest import REDIS_URL, redis_prefix
from .limit_headers import remaining
from .tokens import JWT_SETTINGS, mint

HOUR = 3600


async def close_unstarted(monitor: Monitor) -> None:
    """What stop() would close, for a monitor whose dashboard was used without starting it."""
    await monitor.dashboard.aclose()
    await monitor.redis.aclose()


def call(project: str, ts: float, ms: float = 10.0) -> ApiCall:
    return ApiCall(project_id=project, timestamp=ts, endpoint="/x", duration_ms=ms, total_ms=ms)


def local(monitor: Monitor) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def requests_count(c: httpx.AsyncClient, project: str) -> int:
    """The project's API calls in the last 24 hours, as the performance view shows them
    twice: from the per-bucket totals and from the endpoints merged over the range (cached
    apart)."""
    response = await c.get(f"/analytics/api/performance/{project}?range=24h")
    assert response.status_code == 200, response.text
    body = response.json()
    count: int = body["requests"]
    assert sum(e["count"] for e in body["endpoints"]) == count
    return count


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    async for p in redis_prefix():
        yield p


async def test_closed_buckets_are_cached_and_the_open_one_is_always_live() -> None:
    storage = MemoryStorage()
    now = time.time()
    old = now // HOUR * HOUR - 5 * HOUR + 60  # a bucket that closed hours ago
    await storage.write([call("p", old)])
    monitor = Monitor(storage=storage, api_rate_limit=None)
    async with local(monitor) as c:
        assert await requests_count(c, "p") == 1
        # Live: this hour is read from storage on every request.
        await storage.write([call("p", now)])
        assert await requests_count(c, "p") == 2
        # Cached: a late event in a closed bucket shows once the entry expires.
        await storage.write([call("p", old + 1)])
        assert await requests_count(c, "p") == 2
        stats = monitor.dashboard.api.cache.stats()
        assert stats["hits"]["local"] >= 1
        monitor.dashboard.api.cache.clear()
        assert await requests_count(c, "p") == 3


async def test_a_zero_ttl_turns_the_local_cache_off() -> None:
    storage = MemoryStorage()
    old = time.time() // HOUR * HOUR - 5 * HOUR
    await storage.write([call("p", old)])
    monitor = Monitor(storage=storage, api_rate_limit=None, local_cache_ttl=0)
    async with local(monitor) as c:
        assert await requests_count(c, "p") == 1
        await storage.write([call("p", old + 1)])
        assert await requests_count(c, "p") == 2


async def test_entries_are_per_project_and_never_cross_tenants() -> None:
    storage = MemoryStorage()
    old = time.time() // HOUR * HOUR - 5 * HOUR
    await storage.write([call("a", old), call("b", old), call("b", old + 1)])
    monitor = Monitor(storage=storage, api_rate_limit=None, **JWT_SETTINGS)
    alice = mint({"sub": "alice", "projects": ["a"]})
    bob = mint({"sub": "bob", "projects": ["b"]})
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("198.51.100.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
        path = "/analytics/api/performance/{}?range=24h"
        a = await c.get(path.format("a"), headers={"authorization": f"Bearer {alice}"})
        b = await c.get(path.format("b"), headers={"authorization": f"Bearer {bob}"})
        bob_on_a = await c.get(path.format("a"), headers={"authorization": f"Bearer {bob}"})
    assert (a.json()["requests"], b.json()["requests"]) == (1, 2)
    assert bob_on_a.status_code == 403


async def test_the_redis_tier_is_shared_between_workers(prefix: str) -> None:
    storage = MemoryStorage()
    old = time.time() // HOUR * HOUR - 5 * HOUR
    await storage.write([call("p", old)])
    settings = Settings(redis_url=REDIS_URL, redis_key_prefix=prefix, api_rate_limit=None)
    first, second = Monitor(settings, storage=storage), Monitor(settings, storage=storage)
    async with local(first) as c:
        assert await requests_count(c, "p") == 1
    await storage.write([call("p", old + 1)])  # a late event, not yet visible through the cache
    async with local(second) as c:
        assert await requests_count(c, "p") == 1
    assert second.dashboard.api.cache.stats()["hits"]["redis"] >= 1
    await close_unstarted(first)
    await close_unstarted(second)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_a_dead_redis_costs_the_cache_and_the_limiter_nothing_but_speed() -> None:
    storage = MemoryStorage()
    await storage.write([call("p", time.time() // HOUR * HOUR - 5 * HOUR)])
    monitor = Monitor(
        storage=storage,
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        api_rate_limit="1/minute",
    )
    async with local(monitor) as c:
        for _ in range(3):  # over the limit: the limiter cannot count, so it lets through
            assert await requests_count(c, "p") == 1
    assert monitor.dashboard.api.cache.stats()["failures"] >= 1
    assert monitor.dashboard.throttle is not None
    assert monitor.dashboard.throttle.failures >= 1
    await close_unstarted(monitor)


# -- the API's own rate limit ------------------------------------------------------------


async def test_past_the_limit_a_429_with_retry_after_and_headers() -> None:
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit="3/minute")
    async with local(monitor) as c:
        answers = [await c.get("/analytics/api/overview") for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    # The host's limit's headers: the IETF pair and X-RateLimit-*.
    assert [remaining(r) for r in answers[:4]] == [2, 1, 0, 0]
    assert answers[0].headers["ratelimit-policy"] == '"api";q=3;w=60'
    assert [r.headers["x-ratelimit-remaining"] for r in answers[:3]] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit"] == "3"
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_each_principal_has_its_own_budget() -> None:
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit="2/minute", **JWT_SETTINGS)
    tokens = {who: mint({"sub": who, "admin": True}) for who in ("alice", "bob")}
    async with local(monitor) as c:

        async def get(who: str) -> int:
            headers = {"authorization": f"Bearer {tokens[who]}"}
            return (await c.get("/analytics/api/overview", headers=headers)).status_code

        assert [await get("alice") for _ in range(3)] == [200, 200, 429]
        assert await get("bob") == 200


async def test_workers_share_the_limit_through_redis(prefix: str) -> None:
    settings = Settings(redis_url=REDIS_URL, redis_key_prefix=prefix, api_rate_limit="3/minute")
    storage: Storage = MemoryStorage()
    workers = [Monitor(settings, storage=storage) for _ in range(2)]
    statuses = []
    for i in range(4):
        async with local(workers[i % 2]) as c:
            statuses.append((await c.get("/analytics/api/health")).status_code)
    assert statuses == [200, 200, 200, 429]
    for w in workers:
        await close_unstarted(w)


def test_a_bad_limit_fails_at_start_up() -> None:
    with pytest.raises(ConfigError, match="ANALYTICS_API_RATE_LIMIT"):
        Settings.from_env({"ANALYTICS_API_RATE_LIMIT": "lots"})
    assert Settings.from_env({"ANALYTICS_API_RATE_LIMIT": ""}).api_rate_limit is None


async def test_two_stores_sharing_one_redis_never_share_entries(prefix: str) -> None:
    """Staging and production on one Redis, both with the default project id."""
    old = time.time() // HOUR * HOUR - 5 * HOUR
    prod, staging = MemoryStorage(), MemoryStorage()
    await prod.write([call("default", old)])
    settings = Settings(redis_url=REDIS_URL, redis_key_prefix=prefix, api_rate_limit=None)
    first, second = Monitor(settings, storage=prod), Monitor(settings, storage=staging)
    async with local(first) as c:
        assert await requests_count(c, "default") == 1
    async with local(second) as c:
        assert await requests_count(c, "default") == 0
    await close_unstarted(first)
    await close_unstarted(second)


async def test_a_hung_redis_costs_a_few_timeouts_then_nothing() -> None:
    """A server that accepts and never answers: the breaker stops asking after five."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = MemoryStorage()
    await storage.write([call("p", time.time() // HOUR * HOUR - 5 * HOUR)])
    monitor = Monitor(
        storage=storage,
        redis_url=f"redis://127.0.0.1:{port}/0",
        api_rate_limit="100/minute",
        local_cache_ttl=0,
    )
    took = []
    async with local(monitor) as c:
        for _ in range(12):
            started = time.perf_counter()
            assert await requests_count(c, "p") == 1
            took.append(time.perf_counter() - started)
    assert sum(took) < 3.0
    assert max(took[-4:]) < 0.1  # the breakers are open: no waiting at all
    assert monitor.dashboard.api.cache.stats()["redisCircuitOpen"]
    assert monitor.dashboard.throttle is not None
    assert monitor.dashboard.throttle.breaker.is_open
    await close_unstarted(monitor)
    for writer in accepted:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_an_address_that_keeps_failing_to_authenticate_is_slowed() -> None:
    """Guessing tokens, or hammering the host's auth hook, is rate limited too."""
    calls = 0

    def hook(request: object) -> None:
        nonlocal calls
        calls += 1

    monitor = Monitor(storage=MemoryStorage(), auth=hook, api_rate_limit="3/minute")
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("198.51.100.7", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
        statuses = [(await c.get("/analytics/api/overview")).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    assert calls == 3  # the hook was not asked again once the address was out of tries
