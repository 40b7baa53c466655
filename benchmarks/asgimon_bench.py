"""asgimon as an ``--extra`` variant of the shared peer harness (``peerbench.py``).

    PYTHONPATH=path/to/asgimon/benchmarks .venv/bin/python peerbench.py --mode ab \\
        --extra asgimon=asgimon_bench:wrap --md results/ab_asgimon.md

Over HTTP (uvicorn + wrk, req/s and p99), asgimon on each store beside the bare app, the
hand-written timer and the Prometheus instrumentator, in one run:

    PYTHONPATH=path/to/asgimon/benchmarks .venv/bin/python peerbench.py --mode http \
        --variants starlette,raw-asgi-timing,pfi-starlette --rounds-http 3 --duration 8 \
        --extra asgimon-memory=asgimon_bench:wrap_memory \
        --extra asgimon-sqlite=asgimon_bench:wrap_sqlite \
        --extra asgimon-postgresql=asgimon_bench:wrap_postgresql

Each server process writes its ``/api/health`` figures at shutdown (the recorder's ledger and
``eventLoop``: timer lag, the writer's longest stretch, the longest GC pause) to
``$ASGIMON_BENCH_REPORTS/<label>-<pid>.json`` when that variable names a directory.

``wrap(app)`` returns the bare Starlette app behind asgimon's middleware on a MemoryStorage;
the harness drives the lifespan, which starts the monitor and its flush task, and shuts it
down (draining the queue) before it reads ``peerbench_probe``.

The probe reports the recorder's ledger and how many batches it wrote. peerbench's driver
never returns to the event loop between requests, so the flush task runs only when
something else yields: in ``--mode inproc`` that is shutdown (one queue of
every request), in ``--mode ab`` it is also the BaseHTTPMiddleware-based variants (anyio
streams), which then pay for asgimon's conversion. Either way asgimon's own row times its
request path; ``benchmarks/overhead.py`` times the flush too.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from starlette.types import ASGIApp

from asgimon import AsgimonMiddleware, MemoryStorage, Monitor, Storage
from asgimon.storage.sql import SQLStorage

PG_URL = os.environ.get("ASGIMON_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class ProbedMiddleware(AsgimonMiddleware):
    """asgimon's middleware plus the optional attribute peerbench reads after the run."""

    peerbench_probe: Callable[[], str]


def wrap(app: ASGIApp, **settings: Any) -> ASGIApp:
    # The rate limit applied to every request (its cost is part of the figure), never refusing.
    options: dict[str, Any] = {"rate_limit_max": 10**9, **settings}
    monitor = Monitor(storage=MemoryStorage(), flush_interval=1.0, **options)

    def probe() -> str:
        s = monitor.stats()
        return (
            f"recorded={s.recorded} written={s.written} dropped={s.dropped_total} "
            f"pending={s.pending} batches={s.batches}"
        )

    wrapped = ProbedMiddleware(app, monitor=monitor)
    wrapped.peerbench_probe = probe
    return wrapped


def _served(label: str, storage: Storage, app: ASGIApp, **settings: Any) -> ASGIApp:
    """``app`` behind the whole of asgimon (``Monitor.wrap``), reporting at shutdown."""
    monitor = Monitor(storage=storage, **{"rate_limit_max": 10**9, **settings})
    reports = os.environ.get("ASGIMON_BENCH_REPORTS")
    if reports:
        stop = monitor.stop

        async def stop_and_report() -> None:
            health = await monitor.health()
            await stop()
            stats = monitor.stats()
            health["recorder"].update(written=stats.written, pending=stats.pending)
            out = Path(reports, f"{label}-{os.getpid()}.json")
            out.write_text(json.dumps(health))  # noqa: ASYNC240 -- once, as the server exits

        monitor.stop = stop_and_report  # type: ignore[method-assign]
    return monitor.wrap(app)


def wrap_memory(app: ASGIApp) -> ASGIApp:
    """asgimon on a MemoryStorage, over HTTP (``wrap`` is the in-process flavour)."""
    return _served("memory", MemoryStorage(), app)


def wrap_sqlite(app: ASGIApp) -> ASGIApp:
    """asgimon on its default store, a SQLite file (fresh, in a temp directory)."""
    path = Path(tempfile.mkdtemp(prefix="asgimon-bench-"), "asgimon.db")
    return _served("sqlite", SQLStorage(f"sqlite:///{path}"), app)


async def _pg(sql: str) -> None:
    conn: Any = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def wrap_postgresql(app: ASGIApp) -> ASGIApp:
    """asgimon on PostgreSQL, in a schema of its own that is dropped when the server exits."""
    schema = f"asgimon_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg(f'CREATE SCHEMA "{schema}"'))
    atexit.register(lambda: asyncio.run(_pg(f'DROP SCHEMA "{schema}" CASCADE')))
    return _served("postgresql", SQLStorage(PG_URL, schema=schema), app)


def wrap_sqlite_unfrozen(app: ASGIApp) -> ASGIApp:
    """The SQLite default with ``gc_freeze=False``: what the start-up heap's freeze buys."""
    path = Path(tempfile.mkdtemp(prefix="asgimon-bench-"), "asgimon.db")
    monitor_storage = SQLStorage(f"sqlite:///{path}")
    return _served("sqlite-unfrozen", monitor_storage, app, gc_freeze=False)


def wrap_memory_unlimited(app: ASGIApp) -> ASGIApp:
    """``wrap_memory`` with the host's rate limit off: what the limit itself costs."""
    return _served("memory-unlimited", MemoryStorage(), app, rate_limit_enabled=False)


def wrap_memory_limit_quiet(app: ASGIApp) -> ASGIApp:
    """``wrap_memory`` with no limit header on allowed responses (``RATE_LIMIT_HEADERS=none``):
    what writing the IETF pair a response costs the server."""
    return _served("memory-limit-quiet", MemoryStorage(), app, rate_limit_headers="none")


def wrap_memory_limit_all(app: ASGIApp) -> ASGIApp:
    """``wrap_memory`` with every limit header on allowed responses (``RATE_LIMIT_HEADERS=all``):
    the IETF pair and the three ``X-RateLimit-*``."""
    return _served("memory-limit-all", MemoryStorage(), app, rate_limit_headers="all")


def wrap_memory_redis_limit(app: ASGIApp) -> ASGIApp:
    """``wrap_memory`` with the rate limit counted in Redis (``ASGIMON_BENCH_REDIS_URL``,
    default the loopback one), as several workers would share it."""
    url = os.environ.get("ASGIMON_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"asgimon-bench-{uuid.uuid4().hex[:8]}"
    return _served(
        "memory-redis-limit",
        MemoryStorage(),
        app,
        rate_limit_storage_url=url,
        redis_key_prefix=prefix,
    )


def wrap_unlimited(app: ASGIApp) -> ASGIApp:
    """``wrap`` with the host's rate limit off, in process: what the limit itself costs."""
    return wrap(app, rate_limit_enabled=False)
