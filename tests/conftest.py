from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asgimon import MemoryStorage, Storage
from asgimon.storage.sql import SQLStorage

PG_URL = os.environ.get("ASGIMON_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ASGIMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("ASGIMON_REQUIRE_SERVICES") == "1"


def unavailable(service: str, why: str) -> None:
    """A backend test without its server: a failure in CI, a one-line skip elsewhere."""
    message = f"{service} not reachable ({why})"
    if REQUIRED:
        pytest.fail(message + " and ASGIMON_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


async def pg_schema() -> AsyncIterator[str]:
    """A fresh schema on the shared PostgreSQL, dropped afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"asgimon_t_{uuid.uuid4().hex[:12]}"
    dsn = PG_URL
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), 3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable("PostgreSQL", f"{dsn}: {exc!r}")
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
        yield name
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await conn.close()


async def redis_prefix() -> AsyncIterator[str]:
    """A fresh key prefix on the shared Redis, its keys deleted afterwards."""
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        await client.aclose()
        unavailable("Redis", f"{REDIS_URL}: {exc!r}")
    prefix = f"asgimon-t-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(params=["memory", "sqlite", "postgresql", "redis"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """Every backend, one after the other: the conformance suite runs against each."""
    backend: Storage
    if request.param == "memory":
        backend = MemoryStorage()
        await backend.start()
        yield backend
        await backend.close()
    elif request.param == "sqlite":
        backend = SQLStorage(f"sqlite:///{tmp_path / 'conformance.db'}")
        await backend.start()
        yield backend
        await backend.close()
    elif request.param == "postgresql":
        async for schema in pg_schema():
            backend = SQLStorage(PG_URL, schema=schema)
            await backend.start()
            yield backend
            await backend.close()
    else:
        from asgimon.storage.redis import RedisStorage

        async for prefix in redis_prefix():
            backend = RedisStorage(REDIS_URL, prefix=prefix)
            await backend.start()
            yield backend
            await backend.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'asgimon.db'}"


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """(vi): whatever reaches the loop's exception handler (e.g. a task that died)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)
