"""The host's rate limit across two uvicorn workers sharing Redis: one count, exact."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from . import uvicorn_proc
from .conftest import REDIS_URL, redis_prefix
from .limit_headers import remaining

pytestmark = pytest.mark.slow


async def test_two_workers_sharing_redis_allow_exactly_the_limit(tmp_path: Path) -> None:
    async for prefix in redis_prefix():
        env = {
            "RATE_LIMIT_ENABLED": "true",
            "RATE_LIMIT_MAX": "5",
            "RATE_LIMIT_BURST": "0",
            "RATE_LIMIT_STORAGE_URL": REDIS_URL,
            # Generous: under a loaded machine the default 100 ms rightly lets requests through.
            "RATE_LIMIT_TIMEOUT_MS": "2000",
            "ANALYTICS_REDIS_KEY_PREFIX": prefix,
        }
        async with uvicorn_proc.uvicorn_server(
            "tests.apps.worker_app:create_app",
            f"sqlite:///{tmp_path / 'w.db'}",
            tmp_path / "uvicorn.log",
            workers=2,
            env=env,
        ) as server:
            # A connection per request, so the kernel spreads them over both workers.
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=server.base_url, limits=limits) as client:
                answers = await asyncio.gather(
                    *(client.get("/items/1", timeout=30) for _ in range(100))
                )
            statuses = Counter(r.status_code for r in answers)
            assert statuses == {200: 5, 429: 95}, server.output()
            allowed = [r for r in answers if r.status_code == 200]
            left = sorted(remaining(r) for r in allowed)
            assert left == [0, 1, 2, 3, 4]  # each request's own count, exact
            for r in answers:
                assert r.headers["ratelimit-policy"] == '"default";q=5;w=60'
            refused = [r for r in answers if r.status_code == 429]
            assert {r.headers["x-ratelimit-remaining"] for r in refused} == {"0"}
            assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
            pids = {r.headers["x-worker-pid"] for r in allowed}
            assert pids  # served by the app itself, not refused
