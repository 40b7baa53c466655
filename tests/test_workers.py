"""A real uvicorn over loopback: F17 (two workers share one SQLite file), F21 (SIGTERM drains).

The app (``tests/apps/worker_app.py``) is configured only through the environment, as in
production: ``Monitor.from_env()`` in each worker process, the store from
``ANALYTICS_STORAGE_URL``. After the server has exited, the SQLite file itself is the
witness: every request answered is one row, and every rollup resolution counts it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from . import uvicorn_proc
from .uvicorn_proc import ItemsTraffic, Server, sigterm_and_wait

pytestmark = pytest.mark.slow

N_REQUESTS = 10_000
CONCURRENCY = 32
RECONNECT_EVERY = 50  # a few connections per client: the kernel may give one worker a burst
ITEMS_ENDPOINT = "/items/{item_id}"
BACKGROUND_S = 0.2  # tests/apps/worker_app.py BACKGROUND_S


def uvicorn_server(
    tmp_path: Path, db: Path, *, workers: int, extra_env: dict[str, str] | None = None
) -> contextlib.AbstractAsyncContextManager[Server]:
    """``uvicorn tests.apps.worker_app:create_app --factory`` on the SQLite file ``db``."""
    return uvicorn_proc.uvicorn_server(
        "tests.apps.worker_app:create_app",
        f"sqlite:///{db}",
        tmp_path / "uvicorn.log",
        workers=workers,
        env=extra_env,
    )


async def send_items(base_url: str, n: int) -> ItemsTraffic:
    """``n`` GETs of ``/items/{i}`` from ``CONCURRENCY`` clients, one connection each."""
    return await uvicorn_proc.send_items(
        [base_url],
        n,
        concurrency=CONCURRENCY,
        reconnect_every=RECONNECT_EVERY,
        send_request_ids=False,
    )


async def poll_dashboard(base_url: str, stop: asyncio.Event) -> Counter[int]:
    """The dashboard reads the same file every 100 ms while the workers write to it."""
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        while not stop.is_set():
            response = await client.get("/analytics/api/summary")
            statuses[response.status_code] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await stop.wait()
    return statuses


@dataclass(frozen=True)
class FileReport:
    rows: int
    ids_by_worker: Counter[str]
    rollups: dict[str, int]
    integrity: str
    journal_mode: str


def read_database(db: Path, endpoint: str) -> FileReport:
    """What the file holds for ``endpoint``, read once every writer has exited."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        ids = conn.execute(
            "SELECT id FROM asgimon_api_calls WHERE endpoint = ?", (endpoint,)
        ).fetchall()
        rollups = conn.execute(
            "SELECT resolution, sum(count) FROM asgimon_rollups WHERE series = ? "
            "GROUP BY resolution",
            (f"api:GET {endpoint}",),
        ).fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        journal_mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    # Event ids are "<random per-process prefix>-<counter>": the prefix names the worker.
    return FileReport(
        rows=len(ids),
        ids_by_worker=Counter(event_id.split("-", 1)[0] for (event_id,) in ids),
        rollups=dict(rollups),
        integrity=integrity,
        journal_mode=journal_mode,
    )


async def test_two_workers_persist_every_request_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "workers.db"
    async with uvicorn_server(tmp_path, db, workers=2) as server:
        stop_polling = asyncio.Event()
        async with asyncio.timeout(240):
            poller = asyncio.create_task(poll_dashboard(server.base_url, stop_polling))
            try:
                report = await send_items(server.base_url, N_REQUESTS)
            finally:
                stop_polling.set()
                dashboard = await poller
        # Straight after the last answer: the last ~0.2 s of events are still queued.
        await sigterm_and_wait(server)

    assert report.statuses == Counter({200: N_REQUESTS}), server.output()
    assert not report.bad_bodies
    assert len(report.by_worker) == 2, f"one worker served everything: {report.by_worker}"
    assert set(dashboard) == {200}, (dashboard, server.output())

    held = read_database(db, ITEMS_ENDPOINT)
    assert held.integrity == "ok"
    assert held.rows == N_REQUESTS, (held, server.output())
    assert held.rollups == {"minute": N_REQUESTS, "hour": N_REQUESTS, "day": N_REQUESTS}, held
    # Each worker stored exactly the requests it answered.
    assert sorted(held.ids_by_worker.values()) == sorted(report.by_worker.values()), held
    assert held.journal_mode == "wal"


async def test_background_task_counts_in_total_not_duration(tmp_path: Path) -> None:
    db = tmp_path / "background.db"
    n = 5
    async with uvicorn_server(tmp_path, db, workers=1) as server:
        async with asyncio.timeout(60):
            for _ in range(n):
                # A fresh connection each time: the next request on a kept-alive one would
                # wait for the previous background task.
                async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as client:
                    t0 = time.perf_counter()
                    response = await client.get("/background")
                    elapsed = time.perf_counter() - t0
                assert response.status_code == 200
                assert response.text == "sent"
                assert elapsed < BACKGROUND_S, "the response waited for its background task"
            await asyncio.sleep(BACKGROUND_S * 2)  # let the last background task finish
        await sigterm_and_wait(server)

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT status, duration_ms, ttfb_ms, total_ms FROM asgimon_api_calls "
            "WHERE endpoint = '/background'"
        ).fetchall()
    assert len(rows) == n, json.dumps(rows)
    for status, duration_ms, ttfb_ms, total_ms in rows:
        assert status == 200
        assert ttfb_ms is not None
        assert 0 <= ttfb_ms <= duration_ms
        assert total_ms >= BACKGROUND_S * 1000 - 5, rows
        assert total_ms - duration_ms >= BACKGROUND_S * 1000 - 5, rows


async def test_two_workers_on_redis_count_exactly(tmp_path: Path) -> None:
    """The same load on the Redis store: its Lua writes merge both workers exactly."""
    from asgimon.rollups import Window
    from asgimon.storage.redis import RedisStorage

    from .conftest import REDIS_URL, redis_prefix

    n = 4000
    async for prefix in redis_prefix():
        env = {"ANALYTICS_STORAGE_URL": REDIS_URL, "ANALYTICS_REDIS_KEY_PREFIX": prefix}
        async with uvicorn_server(
            tmp_path, tmp_path / "unused.db", workers=2, extra_env=env
        ) as server:
            async with asyncio.timeout(120):
                report = await send_items(server.base_url, n)
            await sigterm_and_wait(server)
        assert report.statuses == Counter({200: n}), server.output()
        assert len(report.by_worker) == 2, report.by_worker
        store = RedisStorage(REDIS_URL, prefix=prefix)
        try:
            assert await store.count("api_call") == n
            now = time.time()
            for resolution in ("minute", "hour", "day"):
                rows = await store.rollups(Window("default", resolution, 0, now + 86_400))
                assert sum(r.count for r in rows if r.series.endswith(ITEMS_ENDPOINT)) == n
        finally:
            await store.close()
