"""Many workers on two uvicorn servers share one PostgreSQL database (DESIGN.md section 2).

"N uvicorn workers on M hosts sharing PostgreSQL give exact totals": a four-worker server
and a second server, each process with its own ``Monitor.from_env()``, write into one
database; after both have exited, the database is the witness. Every request answered is
one raw row, every rollup resolution counts it once, and the merged histograms give the raw
percentiles to 2 %. Periodic jobs (``Monitor.every``) run once per period across the workers.

The database is a fresh one on the machine's shared server (127.0.0.1:5432, trust auth),
created and dropped here; nothing else on that server is touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no stubs; the override list is not ours
import pytest

from asgimon import histogram

from . import uvicorn_proc
from .apps.multi_app import PROBE_EVERY_S, PROBE_JOB
from .pg_cluster import skip_or_fail
from .uvicorn_proc import ItemsTraffic, Server, sigterm_and_wait, worker_pids

pytestmark = pytest.mark.slow

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
N_REQUESTS = 8000
CONCURRENCY = 24
RECONNECT_EVERY = 50
ITEMS_ENDPOINT = "/items/{item_id}"
SERIES = f"api:GET {ITEMS_ENDPOINT}"
MAIN_WORKERS = 4
SECOND_WORKERS = 1
QUANTILES = (0.5, 0.95, 0.99)
PROBE_RUN_S = 6.0


# -- a database of our own on the shared server ------------------------------------------


@dataclass(frozen=True)
class Database:
    name: str
    url: str

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close(timeout=5)


async def _admin() -> Any:
    try:
        return await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        skip_or_fail(f"shared PostgreSQL at 127.0.0.1:5432 unreachable: {type(exc).__name__}")
        raise  # unreachable: skip_or_fail raises


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    """A fresh database, dropped (with its connections) after the test."""
    admin = await _admin()
    name = f"asgimon_mw_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield Database(name, f"postgresql://postgres@127.0.0.1:5432/{name}")
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close(timeout=5)


# -- uvicorn --------------------------------------------------------------------------------


def uvicorn_server(
    log: Path, factory: str, url: str, *, workers: int, env: dict[str, str] | None = None
) -> contextlib.AbstractAsyncContextManager[Server]:
    """``uvicorn tests.apps.multi_app:<factory> --factory`` on a free loopback port.

    Yields as soon as the master is spawned (see :func:`worker_pids`), so several servers
    start side by side.
    """
    return uvicorn_proc.uvicorn_server(
        f"tests.apps.multi_app:{factory}", url, log, workers=workers, env=env, ready_timeout=None
    )


# -- load -----------------------------------------------------------------------------------


async def send_items(base_urls: Sequence[str], n: int) -> ItemsTraffic:
    """``n`` GETs of ``/items/{i}`` (``x-request-id: req-{i}``) from ``CONCURRENCY`` clients.

    Client ``k`` talks to ``base_urls[k % len(base_urls)]``, opening a new connection every
    ``RECONNECT_EVERY`` requests.
    """
    return await uvicorn_proc.send_items(
        base_urls,
        n,
        concurrency=CONCURRENCY,
        reconnect_every=RECONNECT_EVERY,
        send_request_ids=True,
    )


def exact_quantile(ordered: Sequence[float], q: float) -> float:
    """The definition asgimon's histogram promises to approximate (``asgimon.histogram``)."""
    return ordered[math.floor(q * (len(ordered) - 1))]


# -- the tests ------------------------------------------------------------------------------


async def test_four_workers_and_two_servers_count_exactly(
    database: Database, tmp_path: Path
) -> None:
    async with (
        uvicorn_server(
            tmp_path / "main.log", "create_app", database.url, workers=MAIN_WORKERS
        ) as main,
        uvicorn_server(
            tmp_path / "second.log", "create_app", database.url, workers=SECOND_WORKERS
        ) as second,
    ):
        async with asyncio.timeout(90):
            started = await asyncio.gather(worker_pids(main), worker_pids(second))
            # Two of every three clients on the four-worker server.
            traffic = await send_items([main.base_url, main.base_url, second.base_url], N_REQUESTS)
        # Straight after the last answer: the last ~0.2 s of events are still queued.
        await asyncio.gather(sigterm_and_wait(main), sigterm_and_wait(second))
    logs = f"{main.output()}\n{second.output()}"

    assert traffic.statuses == Counter({200: N_REQUESTS}), logs
    assert not traffic.bad_bodies
    pids = started[0] | started[1]
    assert len(pids) == MAIN_WORKERS + SECOND_WORKERS
    assert set(traffic.by_worker) == pids, f"a worker served nothing: {traffic.by_worker}"

    rows = await database.fetch(
        "SELECT id, request_id, duration_ms FROM asgimon_api_calls WHERE endpoint = $1",
        ITEMS_ENDPOINT,
    )
    assert len(rows) == N_REQUESTS, logs
    ids = Counter(r["id"] for r in rows)
    assert len(ids) == N_REQUESTS, [i for i, c in ids.items() if c > 1][:10]
    stored_rids = Counter(r["request_id"] for r in rows)
    assert set(stored_rids) == traffic.request_ids
    assert max(stored_rids.values()) == 1
    # Event ids are "<random per-process prefix>-<counter>": each worker stored exactly as
    # many rows as it answered requests.
    per_prefix = Counter(event_id.split("-", 1)[0] for event_id in ids)
    assert sorted(per_prefix.values()) == sorted(traffic.by_worker.values()), (
        per_prefix,
        traffic.by_worker,
    )

    rollups = await database.fetch(
        "SELECT resolution, bucket_start, count, error_count, value_count, value_sum, "
        "value_min, value_max, hist FROM asgimon_rollups WHERE series = $1",
        SERIES,
    )
    totals = {
        res: (
            sum(r["count"] for r in rollups if r["resolution"] == res),
            sum(r["value_count"] for r in rollups if r["resolution"] == res),
        )
        for res in ("minute", "hour", "day")
    }
    want = (N_REQUESTS, N_REQUESTS)
    assert totals == {"minute": want, "hour": want, "day": want}, totals
    assert all(r["error_count"] == 0 for r in rollups)

    hours = [r for r in rollups if r["resolution"] == "hour"]
    durations = sorted(r["duration_ms"] for r in rows)
    assert math.isclose(sum(r["value_sum"] for r in hours), math.fsum(durations), rel_tol=1e-9)
    assert min(r["value_min"] for r in hours) == durations[0]
    assert max(r["value_max"] for r in hours) == durations[-1]
    merged = histogram.merged(histogram.loads(r["hist"]) for r in hours)
    assert sum(merged.values()) == N_REQUESTS
    estimates = histogram.quantiles(merged, QUANTILES)
    exacts = [exact_quantile(durations, q) for q in QUANTILES]
    for q, estimate, exact in zip(QUANTILES, estimates, exacts, strict=True):
        assert estimate is not None
        assert abs(estimate - exact) <= 0.02 * exact, (q, estimate, exact)
    print(
        f"requests by worker {dict(sorted(traffic.by_worker.items()))}; "
        f"p50/p95/p99 ms merged {[round(e or 0, 3) for e in estimates]} "
        f"exact {[round(e, 3) for e in exacts]}"
    )


@dataclass(frozen=True)
class Run:
    pid: str
    at: float  # wall clock when the job started


def read_runs(log: Path) -> list[Run]:
    if not log.exists():
        return []
    runs = []
    for line in log.read_text().splitlines():
        pid, at = line.split()
        runs.append(Run(pid, float(at)))
    return runs


async def test_each_periodic_job_runs_once_per_period_across_workers(
    database: Database, tmp_path: Path
) -> None:
    probe_log = tmp_path / "probe.log"
    async with uvicorn_server(
        tmp_path / "probe-server.log",
        "create_probe_app",
        database.url,
        workers=MAIN_WORKERS,
        env={"ASGIMON_PROBE_LOG": str(probe_log)},
    ) as server:
        pids = await worker_pids(server)
        # Every worker's scheduler is ticking from here on (it starts with the lifespan).
        start = time.time()
        await asyncio.sleep(PROBE_RUN_S)
        stop = time.time()
        await sigterm_and_wait(server)
    elapsed = stop - start

    runs = read_runs(probe_log)
    claims = await database.fetch(
        "SELECT period_start, holder FROM asgimon_job_claims WHERE job = $1", PROBE_JOB
    )
    per_period = Counter(c["period_start"] for c in claims)
    assert max(per_period.values(), default=1) == 1, per_period

    # The holder is "<host>:<pid>". Each worker runs what it claimed, in order; so its k-th
    # run belongs to its k-th claimed period.
    claimed: dict[str, list[int]] = {}
    for c in claims:
        claimed.setdefault(c["holder"].rsplit(":", 1)[1], []).append(c["period_start"])
    ran: dict[str, list[float]] = {}
    for run in runs:
        ran.setdefault(run.pid, []).append(run.at)
    assert {p: len(v) for p, v in ran.items()} == {p: len(v) for p, v in claimed.items()}, (
        ran,
        claimed,
        server.output(),
    )
    assert set(ran) <= pids, (ran, pids)
    run_periods: Counter[int] = Counter()
    for pid, periods in claimed.items():
        for period, at in zip(sorted(periods), sorted(ran[pid]), strict=True):
            # Claimed (and so run) within its period, give or take a slow tick.
            assert period <= at < period + PROBE_EVERY_S + 1.0, (pid, period, at)
            run_periods[period] += 1
    assert max(run_periods.values(), default=1) == 1, run_periods

    whole = range(math.ceil(start), math.floor(stop), PROBE_EVERY_S)
    missed = [p for p in whole if p not in run_periods]
    assert len(whole) - len(missed) >= elapsed - 2, (missed, whole, claimed)
    assert ran, "no worker ran the probe"
    print(
        f"probe: {len(runs)} runs over {elapsed:.1f} s, by worker "
        f"{ {pid: len(at) for pid, at in sorted(ran.items())} }, missed periods {missed}"
    )
