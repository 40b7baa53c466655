"""Sustained ingest: events/s into each storage backend through asgimon's recorder.

    .venv/bin/python benchmarks/ingest.py                   # everything, a few minutes
    .venv/bin/python benchmarks/ingest.py --quick           # smoke run, well under a minute
    .venv/bin/python benchmarks/ingest.py --backends sqlite,postgresql --batch-sizes 1000
    .venv/bin/python benchmarks/ingest.py --md out.md --json out.json --profile prof/

Each measurement builds ``ApiCall`` events up front (20 endpoints, log-normal durations per
endpoint, some 4xx and ~2 % 5xx, timestamps over the last hour in arrival order; ``--order
random`` shuffles them), then times a ``Monitor(storage=..., batch_size=B,
flush_interval=0.05)`` from the first ``recorder.put(event)`` until ``await
recorder.flush()`` has written the last one. The events go in chunks of 1000 with a yield to
the loop between chunks, so the flush task drains the queue while it fills. events/s is
N / wall time. Every measurement gets a fresh store (a temp SQLite file, a PostgreSQL schema
of its own, a Redis key prefix of its own), and the recorder's ledger and the store's row
count and day rollups are checked against N afterwards.

With ``--procs 4`` that many processes (spawned, each with its own monitor and event loop)
write into the same store at once; they start together on a barrier and the figure is the
aggregate: all events / (last finish - first start).

Besides wall time each row carries CPU per event: the client processes' (loop thread plus
driver threads, e.g. aiosqlite's) and the rest of the machine's (/proc/stat busy time minus
the client's: the database server, mostly).

The latency part wraps a small Starlette app in asgimon on PostgreSQL and drives it with
httpx.ASGITransport at a steady rate, three phases in one run: the bare app, asgimon with a
healthy PostgreSQL, and asgimon while a ``BEFORE INSERT ... FOR EACH STATEMENT`` trigger
on ``asgimon_api_calls`` sleeps 200 ms per statement (only in the private schema).

PostgreSQL and Redis are the machine's shared servers: this only ever creates, uses and
drops its own schema (``asgimon_ingest_*``) and its own key prefix (``asgimon-ingest-*``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import multiprocessing
import os
import platform
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis.asyncio as aioredis
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgimon import (
    ApiCall,
    AsgimonMiddleware,
    Event,
    MemoryStorage,
    Monitor,
    Settings,
    Storage,
    WriteResult,
)
from asgimon.pipeline.counted import Counted
from asgimon.pipeline.records import sequential_ids
from asgimon.rollups import Window
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.series import API_TOTAL
from asgimon.storage.redis import RedisStorage
from asgimon.storage.sql import SQLStorage

BACKENDS = ("sqlite", "postgresql", "redis", "memory")
TARGETS = {"sqlite": 50_000, "postgresql": 30_000}  # events/s from one process (the issue)
PROJECT = "bench"
CHUNK = 1000  # events put between two yields to the loop
SETTLE_S = 0.5  # after start: the purge job claims its period once, untimed
ENDPOINTS: list[tuple[str, str, float]] = [  # method, route, median duration ms
    ("GET", "/", 2.0),
    ("GET", "/health", 0.5),
    ("GET", "/api/items", 12.0),
    ("GET", "/api/items/{item_id}", 6.0),
    ("POST", "/api/items", 25.0),
    ("PUT", "/api/items/{item_id}", 20.0),
    ("DELETE", "/api/items/{item_id}", 15.0),
    ("GET", "/api/users/{user_id}", 8.0),
    ("GET", "/api/users/{user_id}/orders", 35.0),
    ("POST", "/api/orders", 60.0),
    ("GET", "/api/orders/{order_id}", 9.0),
    ("POST", "/api/orders/{order_id}/pay", 250.0),
    ("GET", "/api/search", 80.0),
    ("POST", "/api/login", 120.0),
    ("POST", "/api/logout", 4.0),
    ("GET", "/api/reports/daily", 900.0),
    ("POST", "/api/uploads", 400.0),
    ("GET", "/static/{path:path}", 1.0),
    ("POST", "/webhooks/stripe", 30.0),
    ("GET", "/api/feed", 45.0),
]
STATUSES = [200] * 80 + [201] * 5 + [204] * 3 + [400, 400, 401, 403, 404, 404, 404, 409, 422, 429]
FIVE_XX = [500, 500, 502, 503]
TRIGGER_SLEEP_S = 0.2


# -- the events ----------------------------------------------------------------------------


def make_events(n: int, seed: int, *, order: str = "arrival") -> list[ApiCall]:
    """``n`` realistic request events over the last hour, in arrival order unless ``random``."""
    rng = random.Random(seed)
    now = time.time()
    stamps = sorted(now - rng.uniform(0, 3600) for _ in range(n))
    if order == "random":
        rng.shuffle(stamps)
    events = []
    make_id = sequential_ids()  # what the middleware gives every request
    for ts in stamps:
        method, route, median = ENDPOINTS[rng.randrange(len(ENDPOINTS))]
        status = rng.choice(FIVE_XX) if rng.random() < 0.02 else rng.choice(STATUSES)
        duration = min(median * rng.lognormvariate(0, 0.6), 60_000.0)
        user = rng.randrange(5000)
        events.append(
            ApiCall(
                id=make_id(),
                project_id=PROJECT,
                timestamp=ts,
                method=method,
                endpoint=route,
                status=status,
                duration_ms=round(duration, 3),
                ttfb_ms=round(duration * 0.9, 3),
                total_ms=round(duration * 1.02, 3),
                request_bytes=rng.randrange(200, 4000) if method != "GET" else None,
                response_bytes=rng.randrange(100, 50_000) if status != 204 else 0,
                user_id=f"user-{user}" if user % 3 else None,
                request_id=f"req-{rng.getrandbits(64):016x}",
            )
        )
    return events


# -- the stores ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A store to write into, as a child process can rebuild it (picklable)."""

    backend: str
    url: str = ""
    schema: str | None = None
    prefix: str = ""


class TracedSQLStorage(SQLStorage):
    """SQLStorage with wall-clock accounting of each write and of each statement in it.

    Profile runs only: cProfile sees the loop thread's CPU, not the time spent waiting for
    the database (or for aiosqlite's thread), which this adds up per statement.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        super().__init__(url, schema=schema)
        self.trace: dict[str, list[float]] = {}  # label -> [calls, seconds]

    def _add(self, label: str, seconds: float) -> None:
        entry = self.trace.setdefault(label, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    async def write(
        self,
        events: Sequence[Event],
        *,
        sampling: RawSampling = KEEP_ALL,
        counted: Counted | None = None,
    ) -> WriteResult:
        t = time.perf_counter()
        try:
            return await super().write(events, sampling=sampling, counted=counted)
        finally:
            self._add("storage.write (all of it)", time.perf_counter() - t)

    async def start(self) -> None:
        await super().start()
        writer, _ = self._open()  # benchmark-only: the engine is private
        event.listen(writer.sync_engine, "before_cursor_execute", self._before)
        event.listen(writer.sync_engine, "after_cursor_execute", self._after)
        event.listen(writer.sync_engine, "commit", self._commit)
        # The commit returns the connection to the pool: from COMMIT sent to checked in.
        event.listen(writer.sync_engine.pool, "checkin", self._checkin)

    def _commit(self, conn: Any) -> None:
        conn.info["ingest_commit"] = time.perf_counter()

    def _checkin(self, _dbapi_conn: Any, record: Any) -> None:
        if record is not None and "ingest_commit" in record.info:
            self._add("COMMIT", time.perf_counter() - record.info.pop("ingest_commit"))

    def _before(self, conn: Any, _cursor: Any, _stmt: str, _params: Any, *_: Any) -> None:
        conn.info["ingest_t0"] = time.perf_counter()

    def _after(self, conn: Any, _cursor: Any, stmt: str, _params: Any, *_: Any) -> None:
        words = stmt.split(None, 3)
        label = " ".join(words[:3]) if words[:1] == ["INSERT"] else stmt[:40]
        self._add(label, time.perf_counter() - conn.info.pop("ingest_t0"))


def open_storage(t: Target, *, traced: bool = False) -> Storage:
    if t.backend == "memory":
        return MemoryStorage()
    if t.backend == "redis":
        return RedisStorage(t.url, prefix=t.prefix)
    if traced:
        return TracedSQLStorage(t.url, schema=t.schema)
    return SQLStorage(t.url, schema=t.schema)


async def pg_execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def delete_prefix(url: str, prefix: str) -> int:
    """SCAN + DEL every key under ``prefix:`` (never anything else on the shared server)."""
    client = aioredis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await client.delete(*batch))
                batch = []
        if batch:
            deleted += int(await client.delete(*batch))
    finally:
        await client.aclose()
    return deleted


@contextlib.asynccontextmanager
async def fresh_target(backend: str, args: argparse.Namespace, tmp: Path) -> AsyncIterator[Target]:
    tag = uuid.uuid4().hex[:12]
    if backend == "sqlite":
        path = tmp / f"ingest-{tag}.db"
        try:
            yield Target("sqlite", f"sqlite:///{path}")
        finally:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
    elif backend == "postgresql":
        schema = f"asgimon_ingest_{tag}"
        await pg_execute(args.pg_url, f'CREATE SCHEMA "{schema}"')
        try:
            yield Target("postgresql", args.pg_url, schema=schema)
        finally:
            await pg_execute(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')
    elif backend == "redis":
        prefix = f"asgimon-ingest-{tag}"
        try:
            yield Target("redis", args.redis_url, prefix=prefix)
        finally:
            await delete_prefix(args.redis_url, prefix)
    else:
        yield Target("memory")


async def counted(storage: Storage) -> tuple[int, int]:
    """(raw rows in the store, events counted by the day rollups) for the bench project."""
    rows = await storage.count("api_call", project_id=PROJECT)
    now = time.time()
    days = await storage.rollups(Window(PROJECT, "day", now - 3 * 86_400, now + 86_400), API_TOTAL)
    # Only the project's total: every call also counts in its endpoint's series.
    return rows, sum(r.count for r in days if r.series == API_TOTAL)


async def stored(t: Target) -> tuple[int, int]:
    storage = open_storage(t)
    await storage.start()
    try:
        return await counted(storage)
    finally:
        await storage.close()


# -- one process's share of a measurement ----------------------------------------------------


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), f"uvloop {version('uvloop')}"


@dataclass(frozen=True)
class Job:
    target: Target
    batch: int
    events: int
    seed: int
    order: str
    sample_rate: float
    profile: str | None = None  # cProfile the timed window into this file; trace statements


async def ingest(job: Job, gate: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    events = make_events(job.events, job.seed, order=job.order)
    monitor = Monitor(
        storage=open_storage(job.target, traced=job.profile is not None),
        batch_size=job.batch,
        flush_interval=0.05,
        queue_max_events=job.events + 1,
        queue_max_bytes=(job.events + 1) * 4096,
        api_call_sample_rate=job.sample_rate,
    )
    async with monitor:
        await asyncio.sleep(SETTLE_S)
        await gate()
        # The prebuilt events are the benchmark's, not asgimon's: keep them out of GC scans.
        gc.collect()
        gc.freeze()
        recorder = monitor.recorder
        prof = cProfile.Profile() if job.profile else None
        if prof is not None:
            prof.enable()
        cpu0, loop_cpu0, t0 = time.process_time(), time.thread_time(), time.monotonic()
        for i in range(0, len(events), CHUNK):
            for ev in events[i : i + CHUNK]:
                recorder.put(ev, ev.size_hint())
            await asyncio.sleep(0)
        await recorder.flush()
        t1, loop_cpu1, cpu1 = time.monotonic(), time.thread_time(), time.process_time()
        if prof is not None:
            prof.disable()
            prof.dump_stats(str(job.profile))
        gc.unfreeze()
        own = (0, 0)
        if job.target.backend == "memory":  # a memory store lives and dies with its process
            own = await counted(monitor.storage)
    kept = sum(map(monitor.recorder.sampling.keeps, events))
    s = monitor.stats()
    trace = monitor.storage.trace if isinstance(monitor.storage, TracedSQLStorage) else {}
    return {
        "trace": trace,
        "start": t0,
        "end": t1,
        "cpu_s": cpu1 - cpu0,
        "loop_cpu_s": loop_cpu1 - loop_cpu0,
        "written": s.written,
        "duplicates": s.duplicates,
        "dropped": s.dropped_total,
        "pending": s.pending,
        "batches": s.batches,
        "retries": s.retries,
        "last_error": s.last_error,
        "own_rows": own[0],
        "own_rollup_events": own[1],
        "kept": kept,
    }


def worker(job: Job, barrier: Barrier, out: Any) -> None:
    async def gate() -> None:
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)

    loop, _ = new_loop()
    try:
        result = loop.run_until_complete(ingest(job, gate))
    except BaseException as exc:
        out.put({"error": repr(exc)})
        raise
    finally:
        loop.close()
    out.put(result)


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_procs(jobs: list[Job]) -> dict[str, Any]:
    """Start one spawned process per job, release them together, gather their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs) + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(j, barrier, out)) for j in jobs]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=120)
        busy0 = machine_busy_s()
        results = [out.get(timeout=600) for _ in procs]
        busy1 = machine_busy_s()
    finally:
        for p in procs:
            p.join(timeout=30)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        raise RuntimeError(f"worker failed: {errors}")
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "wall_s": wall,
        "cpu_s": sum(r["cpu_s"] for r in results),
        "loop_cpu_s": sum(r["loop_cpu_s"] for r in results),
        # Ends when the last result arrives, a little after the last flush: slight overcount.
        "machine_s": busy1 - busy0,
        "written": sum(r["written"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "dropped": sum(r["dropped"] for r in results),
        "pending": sum(r["pending"] for r in results),
        "batches": sum(r["batches"] for r in results),
        "retries": sum(r["retries"] for r in results),
        "last_error": next((r["last_error"] for r in results if r["last_error"]), None),
        "own_rows": sum(r["own_rows"] for r in results),
        "own_rollup_events": sum(r["own_rollup_events"] for r in results),
        "kept": sum(r["kept"] for r in results),
        "trace": results[0]["trace"],
    }


# -- the measurements ----------------------------------------------------------------------


async def measure(
    backend: str, batch: int, procs: int, per_proc: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    """One run: a fresh store, ``procs`` writers of ``per_proc`` events, then the checks."""
    total = procs * per_proc
    async with fresh_target(backend, args, tmp) as target:
        if backend != "memory":
            await stored(target)  # create the schema once, before the writers race to
        jobs = [
            Job(target, batch, per_proc, 1000 * k + 7, args.order, args.sample_rate)
            for k in range(procs)
        ]
        run = await asyncio.to_thread(run_procs, jobs)
        if backend == "memory":
            rows, rollup_total = run["own_rows"], run["own_rollup_events"]
        else:
            rows, rollup_total = await stored(target)
    run["events"] = total
    run["rows"] = rows
    run["rollup_events"] = rollup_total
    run["events_per_s"] = total / run["wall_s"]
    run["problems"] = check(run, total)
    return run


def check(run: dict[str, Any], total: int) -> list[str]:
    """Everything put was written once and is in the store, rollups included."""
    problems = [
        f"{name} {run[name]} != {want}"
        for name, want in (
            ("written", total),
            ("dropped", 0),
            ("duplicates", 0),
            ("pending", 0),
            ("rows", run["kept"]),  # the raw rows the sampling keeps
            ("rollup_events", total),
        )
        if run[name] != want
    ]
    if problems and run["retries"]:
        problems.append(f"{run['retries']} retries, last error: {run['last_error']}")
    return problems


async def measure_config(
    backend: str, batch: int, procs: int, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    per_proc = args.events if procs == 1 else args.proc_events
    runs: list[dict[str, Any]] = []
    for _ in range(args.runs):
        runs.append(await measure(backend, batch, procs, per_proc, args, tmp))
        print(
            f"  {backend:<10} batch {batch:>5} x{procs}: {runs[-1]['events_per_s']:>9,.0f} ev/s "
            f"({runs[-1]['wall_s']:.2f} s)",
            file=sys.stderr,
        )
        if runs[-1]["wall_s"] > args.slow_s:
            break  # slow: one run is enough to place it
    rates = [r["events_per_s"] for r in runs]
    median = statistics.median(rates)
    mid = min(runs, key=lambda r: abs(r["events_per_s"] - median))
    target = TARGETS.get(backend) if procs == 1 else None
    return {
        "backend": backend,
        "batch_size": batch,
        "procs": procs,
        "events": per_proc * procs,
        "runs": len(runs),
        "events_per_s": median,
        "min": min(rates),
        "max": max(rates),
        "wall_s": mid["wall_s"],
        "client_us_per_event": mid["cpu_s"] / mid["events"] * 1e6,
        "loop_us_per_event": mid["loop_cpu_s"] / mid["events"] * 1e6,
        "rest_us_per_event": max(0.0, mid["machine_s"] - mid["cpu_s"]) / mid["events"] * 1e6,
        "target": target,
        "ratio": median / target if target else None,
        "batches": mid["batches"],
        "retries": sum(r["retries"] for r in runs),
        "rows": mid["rows"],
        "rollup_events": mid["rollup_events"],
        "all_runs": rates,
        "problems": sorted({p for r in runs for p in r["problems"]}),
    }


# -- request latency while PostgreSQL is slow ------------------------------------------------


async def get_item(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["item_id"], "name": "widget", "price": 9.99})


async def get_orders(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.path_params["user_id"], "orders": list(range(10))})


def host_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", get_item),
            Route("/users/{user_id}/orders", get_orders),
        ]
    )


class GCPauses:
    """The collector's pauses while installed: they stall the loop like any blocking call."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._t = 0.0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._t) * 1000)

    def __enter__(self) -> GCPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


async def drive_steady(
    app: Any, rate: float, seconds: float, after_warmup: Callable[[], Awaitable[None]] | None = None
) -> dict[str, Any]:
    """Open loop: request i starts at t0 + i / rate however long earlier ones take."""
    clock = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    latencies: list[float] = []
    from_due: list[float] = []
    lags: list[float] = []
    bad = 0
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:

        async def one(path: str, due: float | None = None) -> None:
            nonlocal bad
            t = time.perf_counter()
            r = await client.get(path)
            latencies.append((time.perf_counter() - t) * 1000)
            if due is not None:  # the wait for a stalled loop included, as a server's client sees
                from_due.append((clock() - due) * 1000)
            bad += r.status_code != 200

        for i in range(int(rate / 5)):  # warm-up, 0.2 s worth, untimed
            await one(f"/items/{i}")
        if after_warmup is not None:
            await after_warmup()
        latencies.clear()
        tasks: set[asyncio.Task[None]] = set()
        n = int(rate * seconds)
        with GCPauses() as pauses:
            t0 = clock()
            for i in range(n):
                due = t0 + i / rate
                if due > clock():
                    await asyncio.sleep(due - clock())
                lags.append((clock() - due) * 1000)
                path = f"/items/{i % 100}" if i % 3 else f"/users/{i % 50}/orders"
                task = asyncio.create_task(one(path, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
    return {
        "requests": n,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies),
        "lag_p99_ms": percentile(lags, 0.99),
        "from_due_p99_ms": percentile(from_due, 0.99),
        "from_due_max_ms": max(from_due),
        "gc_max_pause_ms": max(pauses.pauses, default=0.0),
        "gc_pauses_over_5ms": sum(p > 5 for p in pauses.pauses),
        "non_200": bad,
    }


async def asgimon_phase(url: str, schema: str, rate: float, seconds: float) -> dict[str, Any]:
    # The monitor's defaults (batch 5000, flush every second): what a user gets.
    monitor = Monitor(storage=SQLStorage(url, schema=schema), rate_limit_max=10**9)
    app = AsgimonMiddleware(host_app(), monitor=monitor)
    first: list[float] = []

    async def first_flush() -> None:
        # The first write compiles SQLAlchemy's statements on the loop: timed apart.
        t = time.monotonic()
        await monitor.recorder.flush()
        first.append(time.monotonic() - t)

    async with monitor:
        await asyncio.sleep(SETTLE_S)
        figures = await drive_steady(app, rate, seconds, first_flush)
        window = monitor.stats()
        t = time.monotonic()
        await monitor.recorder.flush()
        figures["drain_s"] = time.monotonic() - t
    s = monitor.stats()
    return {
        **figures,
        "warmup_flush_s": first[0],
        "recorded": s.recorded,
        "written": s.written,
        "dropped": s.dropped_total,
        "dropped_by": {k: v for k, v in s.dropped.items() if v},
        "pending_at_end": window.pending,
        "batches": s.batches,
    }


async def latency_phases(
    url: str, schema: str, rate: float, seconds: float
) -> list[dict[str, Any]]:
    out = [{"phase": "bare app (no asgimon)", **await drive_steady(host_app(), rate, seconds)}]
    out.append(
        {"phase": "asgimon, PostgreSQL healthy", **await asgimon_phase(url, schema, rate, seconds)}
    )
    await pg_execute(
        url,
        f'CREATE FUNCTION "{schema}".ingest_slow() RETURNS trigger LANGUAGE plpgsql AS '
        f"$$ BEGIN PERFORM pg_sleep({TRIGGER_SLEEP_S}); RETURN NULL; END $$; "
        f'CREATE TRIGGER ingest_slow BEFORE INSERT ON "{schema}".asgimon_api_calls '
        f'FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".ingest_slow();',
    )
    out.append(
        {"phase": "asgimon, PostgreSQL slow", **await asgimon_phase(url, schema, rate, seconds)}
    )
    return out


def latency_child(url: str, schema: str, rate: float, seconds: float) -> list[dict[str, Any]]:
    loop, _ = new_loop()
    try:
        return loop.run_until_complete(latency_phases(url, schema, rate, seconds))
    finally:
        loop.close()


async def measure_latency(args: argparse.Namespace) -> list[dict[str, Any]]:
    schema = f"asgimon_ingest_{uuid.uuid4().hex[:12]}"
    await pg_execute(args.pg_url, f'CREATE SCHEMA "{schema}"')
    try:
        await stored(Target("postgresql", args.pg_url, schema=schema))  # the tables
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            fut = pool.submit(latency_child, args.pg_url, schema, args.rate, args.latency_s)
            return await asyncio.wrap_future(fut)
    finally:
        await pg_execute(args.pg_url, f'DROP SCHEMA "{schema}" CASCADE')


# -- profiles ------------------------------------------------------------------------------


async def profile_backend(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One single-process run at batch 1000 under cProfile (the loop thread only)."""
    path = args.profile / f"ingest-{backend}.pstats"
    async with fresh_target(backend, args, tmp) as target:
        await stored(target)
        job = Job(target, 1000, args.events, 7, args.order, args.sample_rate, profile=str(path))
        run = await asyncio.to_thread(run_procs, [job])
    stats = pstats.Stats(str(path))
    top: list[dict[str, Any]] = []
    for (file, line, name), (_cc, calls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        top.append(
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": calls,
                "tottime": tt,
                "cumtime": ct,
            }
        )
    by_tottime = sorted(top, key=lambda r: r["tottime"], reverse=True)[:25]
    events_per_s = args.events / run["wall_s"]
    trace = {
        label: {"calls": int(calls), "seconds": sec, "us_per_event": sec / args.events * 1e6}
        for label, (calls, sec) in sorted(run["trace"].items(), key=lambda kv: -kv[1][1])
    }
    return {
        "trace": trace,
        "client_cpu_s": run["cpu_s"],
        "loop_cpu_s": run["loop_cpu_s"],
        "backend": backend,
        "events_per_s": events_per_s,
        "wall_s": run["wall_s"],
        "pstats": str(path),
        "top": by_tottime,
    }


# -- output --------------------------------------------------------------------------------


def render_md(env: dict[str, Any], rows: list[dict[str, Any]], lat: list[dict[str, Any]]) -> str:
    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, loop {env['loop']}; "
        f"asgimon {env['asgimon']}, SQLAlchemy {env['sqlalchemy']}, SQLite {env['sqlite']}, "
        f"PostgreSQL {env['postgresql']}, Redis {env['redis']}; {env['date']}.",
        f"ApiCall events in {env['order']} order, raw rows sampled at {env['sample_rate']:g} "
        "(errors and slow calls always kept); "
        f"{env['events']:,} events per single-process "
        f"run, {env['proc_events']:,} per process in multi-process runs; flush_interval 0.05 s. "
        f"events/s is the median of up to {env['runs']} runs (one if a run took over "
        f"{env['slow_s']:g} s: see `runs`).",
        "",
        "| backend | batch | procs | events/s | min | max | runs | client µs/ev (loop) "
        "| rest of machine µs/ev | target | ratio | checks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        target = f"{r['target']:,}" if r["target"] else "—"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "—"
        lines.append(
            f"| {r['backend']} | {r['batch_size']} | {r['procs']} | {r['events_per_s']:,.0f} | "
            f"{r['min']:,.0f} | {r['max']:,.0f} | {r['runs']} | {r['client_us_per_event']:.1f} "
            f"({r['loop_us_per_event']:.1f}) | {r['rest_us_per_event']:.1f} | {target} | {ratio} | "
            f"{'; '.join(r['problems']) or 'ok'} |"
        )
    lines += [
        "",
        "checks, after every run: the recorder's ledger says written == N, dropped 0, "
        "duplicates 0, pending 0; the store holds N rows and its day rollups count N events "
        "(memory: rows per process).",
    ]
    if lat:
        lines += [
            "",
            f"Request latency, {env['rate']:g} req/s for {env['latency_s']:g} s per phase "
            f"(httpx.ASGITransport, in-process; PostgreSQL slow = {TRIGGER_SLEEP_S * 1000:.0f} ms "
            "per INSERT statement on asgimon_api_calls; monitor defaults: batch 5000, flush 1 s):",
            "",
            "| phase | requests | p50 ms | p99 ms | max ms | p99 from schedule ms "
            "| max from schedule ms | longest GC pause ms | non-200 "
            "| written | batches | dropped | queued at end | drain s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for p in lat:
            extra = (
                f"{p['written']} | {p['batches']} | {p['dropped']} | {p['pending_at_end']} | "
                f"{p['drain_s']:.2f}"
                if "written" in p
                else "— | — | — | — | —"
            )
            lines.append(
                f"| {p['phase']} | {p['requests']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
                f"{p['max_ms']:.2f} | {p['from_due_p99_ms']:.2f} | {p['from_due_max_ms']:.2f} | "
                f"{p['gc_max_pause_ms']:.1f} | "
                f"{p['non_200']} | {extra} |"
            )
    return "\n".join(lines) + "\n"


async def server_versions(args: argparse.Namespace, backends: list[str]) -> tuple[str, str]:
    pg = redis_v = "—"
    if "postgresql" in backends or not args.skip_latency:
        conn = await asyncpg.connect(args.pg_url)
        try:
            pg = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    if "redis" in backends:
        client = aioredis.Redis.from_url(args.redis_url)
        try:
            redis_v = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()
    return pg, redis_v


def csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(x) for x in text.split(",") if x]


async def amain(args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    for b in args.backends:
        if b not in BACKENDS:
            raise SystemExit(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
    pg, redis_v = await server_versions(args, args.backends)
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loop": loop_name,
        "asgimon": version("asgimon"),
        "sqlalchemy": version("sqlalchemy"),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": pg,
        "redis": redis_v,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "events": args.events,
        "proc_events": args.proc_events,
        "runs": args.runs,
        "slow_s": args.slow_s,
        "order": args.order,
        "sample_rate": args.sample_rate,
        "rate": args.rate,
        "latency_s": args.latency_s,
    }
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    lat: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="asgimon-ingest-") as tmp:
        for backend in args.backends:
            for procs in args.procs:
                for batch in args.batch_sizes:
                    rows.append(await measure_config(backend, batch, procs, args, Path(tmp)))
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for backend in ("sqlite", "postgresql"):
                if backend in args.backends:
                    profiles.append(await profile_backend(backend, args, Path(tmp)))
    if not args.skip_latency:
        lat = await measure_latency(args)
    env["seconds"] = round(time.monotonic() - started, 1)
    return {"env": env, "rows": rows, "latency": lat, "profiles": profiles}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--backends", type=csv(str), default=list(BACKENDS), help="comma-separated")
    ap.add_argument("--batch-sizes", type=csv(int), default=[100, 1000, 5000])
    ap.add_argument("--events", type=int, default=100_000, help="per single-process run")
    ap.add_argument("--proc-events", type=int, default=50_000, help="per process, multi-process")
    ap.add_argument("--procs", type=csv(int), default=[1, 4], help="process counts (1,4)")
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--slow-s", type=float, default=8.0, help="one run only if it took longer")
    ap.add_argument("--order", choices=("arrival", "random"), default="arrival")
    ap.add_argument(
        "--sample-rate",
        type=float,
        default=Settings().api_call_sample_rate,
        help="ANALYTICS_API_CALL_SAMPLE_RATE (default: the setting's)",
    )
    ap.add_argument("--rate", type=float, default=500.0, help="latency part: requests/s")
    ap.add_argument("--latency-s", type=float, default=5.0, help="latency part: s per phase")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, one run each")
    ap.add_argument("--profile", type=Path, help="cProfile SQLite and PostgreSQL into this dir")
    ap.add_argument("--md", type=Path, help="also write the markdown tables here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.proc_events, args.runs, args.latency_s = 5000, 2000, 1, 1.0
    loop, loop_name = new_loop()
    print(f"event loop: {loop_name}", file=sys.stderr)
    try:
        result = loop.run_until_complete(amain(args, loop_name))
    finally:
        loop.close()
    md = render_md(result["env"], result["rows"], result["latency"])
    print(md)
    for p in result["profiles"]:
        print(f"profile {p['backend']} batch 1000: {p['events_per_s']:,.0f} ev/s -> {p['pstats']}")
        for label, t in p["trace"].items():
            print(
                f"  {label:<40} {t['calls']:>6} calls {t['seconds']:7.3f} s "
                f"{t['us_per_event']:6.1f} µs/event"
            )
        for t in p["top"][:15]:
            print(f"  {t['tottime']:7.3f} s {t['cumtime']:7.3f} s {t['calls']:>9} {t['function']}")
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
