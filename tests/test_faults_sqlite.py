"""SQLite faults F16, F18, F19 and F14 under request load (RELIABILITY.md).

Every test drives the same small Starlette app twice through ``httpx.ASGITransport``: once
against a healthy database (the control) and once with a fault injected into asgimon's
SQLite store. For every fault it checks what "correct" means there:

* (i) the host's status histogram and response bodies equal the control run's;
* (ii) the ledger balances: ``recorded == written + duplicates + dropped``, nothing pending,
  no duplicates, and the rows stored are exactly the ``written`` ones;
* the drop reasons are the expected ones, and nothing else;
* (iv) once the fault is healed, new events persist within 10 s on their own;
* (vi) no task or callback exception reached the event loop, and no internal error was counted.

Faults are injected through ``SQLStorage(on_connect=...)``: a pragma applied to every new
connection while a flag is set. Closing the store makes asgimon reconnect on its next write,
which is how a fault is switched on or off under a running monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp

from asgimon import Monitor, RecorderStats
from asgimon.storage.sql import SQLStorage

from . import fault_load
from .fault_load import (
    EXPECTED_EVENTS,
    N_REQUESTS,
    RECOVERY_REQUESTS,
    LoadResult,
    assert_host_unaffected,
    assert_ledger_balances,
    expected_rollups,
    host_app,
    request_id,
)

POISON_INDEX = 123  # an /items request: index % 10 == 3
LOAD_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 20.0


async def drive(
    app: ASGIApp,
    indices: range = range(N_REQUESTS),
    *,
    ids: Callable[[int], str] = request_id,
) -> LoadResult:
    """Send one request per index, ``CONCURRENCY`` at a time; outcomes in index order."""
    return await fault_load.drive(app, indices, ids=ids, timeout=LOAD_TIMEOUT_S)


# -- fault injection ------------------------------------------------------------------------


@dataclass
class Fault:
    """Pragmas applied to every new connection while ``active``."""

    pragmas: tuple[str, ...] = ()
    active: bool = False
    connections: int = field(default=0, init=False)

    def on_connect(self, dbapi_conn: Any) -> None:
        self.connections += 1
        if not self.active:
            return
        cur = dbapi_conn.cursor()
        for pragma in self.pragmas:
            cur.execute(pragma)
        cur.close()


async def switch(fault: Fault, storage: SQLStorage, *, active: bool) -> None:
    """Turn the fault on or off under a running monitor: the next write reconnects.

    Only called while the queue is empty, so no write is in flight on the old engine.
    """
    fault.active = active
    await storage.close()


async def prepare_schema(url: str) -> None:
    """Create asgimon's schema (so faults that forbid writes still find it)."""
    setup = SQLStorage(url)
    await setup.start()
    await setup.close()


def sqlite_exec(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as conn:
        for statement in statements:
            conn.execute(statement)


def monitor_for(storage: SQLStorage, **overrides: Any) -> Monitor:
    settings: dict[str, Any] = {
        "flush_interval": 0.05,
        "retry_deadline": 5.0,
        "retry_backoff_max": 0.2,
        "shutdown_timeout": 5.0,
        "rate_limit_enabled": False,
        # The ledger counts the host's own events exactly: no process samples among them.
        "system_metrics_interval": 0,
        # Every call kept raw: losses and duplicates are counted on the raw rows.
        "api_call_sample_rate": 1.0,
    }
    settings.update(overrides)
    return Monitor(storage=storage, **settings)


# -- what "correct" means -------------------------------------------------------------------


async def drain(monitor: Monitor) -> RecorderStats:
    return await fault_load.drain(monitor, timeout=DRAIN_TIMEOUT_S)


@dataclass(frozen=True)
class Stored:
    """What the database file holds, read with the stdlib driver (not asgimon's read path)."""

    api_calls: int
    errors: int
    rollup_counts: dict[str, int]
    request_ids: frozenset[str]

    @property
    def events(self) -> int:
        return self.api_calls + self.errors


def stored(db: Path) -> Stored:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        api_calls = conn.execute("SELECT count(*) FROM asgimon_api_calls").fetchone()[0]
        errors = conn.execute("SELECT count(*) FROM asgimon_error_events").fetchone()[0]
        rollups = conn.execute(
            "SELECT resolution, sum(count) FROM asgimon_rollups "
            "WHERE series LIKE 'api:%' GROUP BY resolution"
        ).fetchall()
        ids = conn.execute("SELECT request_id FROM asgimon_api_calls").fetchall()
    return Stored(
        api_calls=api_calls,
        errors=errors,
        rollup_counts=dict(rollups),
        request_ids=frozenset(request_id for (request_id,) in ids),
    )


def assert_ledger(
    stats: RecorderStats,
    db: Path,
    *,
    expected_events: int,
    drop_reasons: frozenset[str] = frozenset(),
) -> None:
    """(ii): every event is written or counted as dropped for one of ``drop_reasons``."""
    assert_ledger_balances(stats, expected_events=expected_events, drop_reasons=drop_reasons)
    held = stored(db)
    assert held.events == stats.written, (held, stats)
    # The rollups count exactly the api_call rows stored: a failed batch left nothing behind.
    assert held.rollup_counts == expected_rollups(held.api_calls), held


async def assert_recovers(monitor: Monitor, db: Path) -> float:
    """(iv): after healing, new events persist within 10 s without anyone flushing by hand."""
    before = stored(db).api_calls

    async def persisted() -> bool:
        return stored(db).api_calls >= before + RECOVERY_REQUESTS

    return await fault_load.assert_recovers(
        monitor, persisted, range(0, RECOVERY_REQUESTS * 10, 10), timeout=LOAD_TIMEOUT_S
    )


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def control(tmp_path: Path) -> LoadResult:
    """The no-fault run: the histogram and bodies every faulted run must reproduce."""
    db = tmp_path / "control.db"
    monitor = monitor_for(SQLStorage(f"sqlite:///{db}"))
    async with monitor:
        result = await drive(monitor.wrap(host_app()))
        stats = await drain(monitor)
        assert_ledger(stats, db, expected_events=EXPECTED_EVENTS)
        assert stats.written == EXPECTED_EVENTS
    assert result.histogram == Counter({200: 240, 404: 30, 500: 30})
    return result


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "faulty.db"


# -- F19: read-only database ----------------------------------------------------------------


async def test_readonly_database_drops_as_unavailable_and_recovers(
    control: LoadResult,
    db: Path,
    loop_errors: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite:///{db}"
    await prepare_schema(url)
    fault = Fault(("PRAGMA query_only = ON",))
    storage = SQLStorage(url, on_connect=fault.on_connect)
    # A short retry deadline: a read-only store is retried, then its batches are dropped.
    monitor = monitor_for(storage, retry_deadline=0.5, retry_backoff_max=0.1)
    caplog.set_level(logging.WARNING, logger="asgimon")
    async with monitor:
        await switch(fault, storage, active=True)
        run = await drive(monitor.wrap(host_app()))
        stats = await drain(monitor)

        assert_host_unaffected(control, run)
        assert_ledger(
            stats,
            db,
            expected_events=EXPECTED_EVENTS,
            drop_reasons=frozenset({"storage_unavailable"}),
        )
        assert stats.written == 0
        assert stats.dropped["storage_unavailable"] == EXPECTED_EVENTS
        assert stats.last_error is not None
        assert "readonly" in stats.last_error
        assert any("readonly" in r.getMessage() for r in caplog.records), "no loud log"

        await switch(fault, storage, active=False)
        await assert_recovers(monitor, db)
        stats = await drain(monitor)
        assert_ledger(
            stats,
            db,
            expected_events=EXPECTED_EVENTS + RECOVERY_REQUESTS,
            drop_reasons=frozenset({"storage_unavailable"}),
        )
        assert stats.written == RECOVERY_REQUESTS
    assert not loop_errors


# -- F16: another process holds the write lock ----------------------------------------------

_LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO lock_holder (at) VALUES (?)", (time.time(),))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
conn.close()
print("released", flush=True)
"""


@contextlib.asynccontextmanager
async def write_lock_held(db: Path, seconds: float) -> AsyncIterator[asyncio.subprocess.Process]:
    """Another process holds SQLite's write lock (``BEGIN IMMEDIATE``) for ``seconds``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _LOCK_HOLDER,
        str(db),
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            assert await proc.stdout.readline() == b"locked\n"
        yield proc
        async with asyncio.timeout(seconds + 10):
            assert await proc.stdout.readline() == b"released\n"
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _prepare_lock_table(url: str, db: Path) -> None:
    await prepare_schema(url)
    sqlite_exec(db, "CREATE TABLE lock_holder (at REAL)")


async def test_write_lock_held_below_busy_timeout_loses_nothing(
    control: LoadResult, db: Path, loop_errors: list[dict[str, Any]]
) -> None:
    url = f"sqlite:///{db}"
    await _prepare_lock_table(url, db)
    storage = SQLStorage(url, busy_timeout=5.0)
    monitor = monitor_for(storage)
    async with monitor:
        async with write_lock_held(db, 2.0):
            started = time.monotonic()
            run = await drive(monitor.wrap(host_app()))
            # The load is over while the lock is still held: the writer was waiting on it.
            assert time.monotonic() - started < 2.0
        stats = await drain(monitor)

        assert_host_unaffected(control, run)
        assert_ledger(stats, db, expected_events=EXPECTED_EVENTS)
        assert stats.written == EXPECTED_EVENTS
        assert stats.retries == 0, stats
        assert stats.last_error is None, stats
    assert not loop_errors


@pytest.mark.parametrize(
    ("retry_deadline", "expect_drops"),
    [
        pytest.param(20.0, False, id="retried-until-written"),
        # Room for one retry even when a periodic job's claim held the writer for its own
        # busy timeout first; still half the time the lock is held.
        pytest.param(1.5, True, id="deadline-passes-dropped"),
    ],
)
async def test_write_lock_held_beyond_busy_timeout_is_retried_never_raised(
    control: LoadResult,
    db: Path,
    loop_errors: list[dict[str, Any]],
    retry_deadline: float,
    expect_drops: bool,
) -> None:
    url = f"sqlite:///{db}"
    await _prepare_lock_table(url, db)
    storage = SQLStorage(url, busy_timeout=0.5)
    monitor = monitor_for(storage, retry_deadline=retry_deadline, retry_backoff_max=0.5)
    async with monitor:
        async with write_lock_held(db, 3.0):
            run = await drive(monitor.wrap(host_app()))
        stats = await drain(monitor)

        assert_host_unaffected(control, run)
        assert_ledger(
            stats,
            db,
            expected_events=EXPECTED_EVENTS,
            drop_reasons=frozenset({"storage_unavailable"}),
        )
        assert stats.retries > 0
        assert stats.last_error is not None
        assert "locked" in stats.last_error
        if expect_drops:
            assert stats.dropped["storage_unavailable"] > 0, stats
        else:
            assert stats.written == EXPECTED_EVENTS, stats
        await assert_recovers(monitor, db)
    assert not loop_errors


# -- F18: disk full -------------------------------------------------------------------------


async def test_disk_full_drops_as_storage_full_and_recovers(
    control: LoadResult, db: Path, loop_errors: list[dict[str, Any]]
) -> None:
    url = f"sqlite:///{db}"
    await prepare_schema(url)
    # max_page_count cannot go below the current size, so 1 freezes the file where it is.
    fault = Fault(("PRAGMA max_page_count = 1",))
    storage = SQLStorage(url, on_connect=fault.on_connect)
    monitor = monitor_for(storage)
    async with monitor:
        await switch(fault, storage, active=True)
        run = await drive(monitor.wrap(host_app()))
        stats = await drain(monitor)

        assert_host_unaffected(control, run)
        assert_ledger(
            stats,
            db,
            expected_events=EXPECTED_EVENTS,
            drop_reasons=frozenset({"storage_full"}),
        )
        assert stats.dropped["storage_full"] > 0, stats
        assert stats.last_error is not None
        assert "full" in stats.last_error

        await switch(fault, storage, active=False)
        await assert_recovers(monitor, db)
        stats = await drain(monitor)
        assert_ledger(
            stats,
            db,
            expected_events=EXPECTED_EVENTS + RECOVERY_REQUESTS,
            drop_reasons=frozenset({"storage_full"}),
        )
    assert not loop_errors


# -- F14 on SQLite: one poison event in a batch ---------------------------------------------


async def test_poison_event_alone_is_dropped_as_invalid(
    control: LoadResult, db: Path, loop_errors: list[dict[str, Any]]
) -> None:
    url = f"sqlite:///{db}"
    await prepare_schema(url)
    sqlite_exec(
        db,
        "CREATE TRIGGER poison BEFORE INSERT ON asgimon_api_calls "
        "WHEN NEW.request_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END",
    )
    storage = SQLStorage(url)
    # A long flush interval: the whole load lands in a few large batches with the poison.
    monitor = monitor_for(storage, flush_interval=0.5)
    async with monitor:
        run = await drive(
            monitor.wrap(host_app()),
            ids=lambda i: "poison" if i == POISON_INDEX else f"req-{i}",
        )
        stats = await drain(monitor)

        assert_host_unaffected(control, run)
        assert_ledger(
            stats, db, expected_events=EXPECTED_EVENTS, drop_reasons=frozenset({"invalid"})
        )
        assert stats.dropped["invalid"] == 1, stats
        assert stats.written == EXPECTED_EVENTS - 1
        held = stored(db)
        assert held.api_calls == N_REQUESTS - 1
        assert held.request_ids == {f"req-{i}" for i in range(N_REQUESTS) if i != POISON_INDEX}
        # asgimon's own read path agrees with the file.
        assert await storage.count("api_call") == N_REQUESTS - 1
    assert not loop_errors


# -- requirement 4 and F19 "reopens": a restart on an existing database file ---------------


def journal_mode(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
    return mode


async def test_existing_database_reopens_in_wal_mode(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> None:
    """Every app restart reopens the file it wrote before; that must work, in WAL mode."""
    db = tmp_path / "restarted.db"
    for run in (1, 2, 3):
        monitor = monitor_for(SQLStorage(f"sqlite:///{db}"))
        async with monitor:
            assert monitor.storage_error is None, f"run {run}: {monitor.storage_error}"
            result = await drive(monitor.wrap(host_app()), range(0, 100, 10))
            stats = await drain(monitor)
        assert result.histogram == Counter({200: 10})
        assert stats.dropped_total == 0, f"run {run}: {stats}"
        assert stored(db).api_calls == 10 * run
        assert journal_mode(db) == "wal"
    assert not loop_errors


# -- F19: the database file unlinked mid-run ------------------------------------------------


def unlink_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


async def test_unlinked_database_is_not_counted_as_written(
    tmp_path: Path, loop_errors: list[dict[str, Any]]
) -> None:
    """Events "written" into a deleted file are lost: they must be reopened or counted."""
    db = tmp_path / "unlinked.db"
    monitor = monitor_for(SQLStorage(f"sqlite:///{db}"))
    async with monitor:
        await drive(monitor.wrap(host_app()), range(0, 100, 10))
        before = (await drain(monitor)).written
        assert stored(db).events == before == 10
        unlink_database(db)
        await drive(monitor.wrap(host_app()), range(0, 100, 10))
        stats = await drain(monitor)
        after_unlink = stats.written - before
        assert stats.recorded == stats.written + stats.dropped_total
        # Whatever asgimon counts as written after the unlink must be in a file at the path.
        if after_unlink:
            assert db.exists(), f"{after_unlink} events counted as written into a deleted file"
            assert stored(db).events == after_unlink
    assert not loop_errors
