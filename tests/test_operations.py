"""Schema upgrades, retention, erasure and periodic jobs, as operators use them."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asgimon import (
    ApiCall,
    DomainEvent,
    ErrorEvent,
    MemoryStorage,
    Monitor,
    StorageUnavailable,
    histogram,
)
from asgimon.errors import SchemaVersionError
from asgimon.pipeline.scheduler import Scheduler
from asgimon.rollups import Window
from asgimon.sampling import RawSampling
from asgimon.storage.sql import SQLStorage
from asgimon.storage.sql.tables import SCHEMA_VERSION

from .conftest import PG_URL, pg_schema

DAY = 86_400.0


def make_v1(path: Path) -> None:
    """A database as version 1 left it: no job claims, no packed histograms."""
    import asyncio

    async def create() -> None:
        storage = SQLStorage(f"sqlite:///{path}")
        await storage.start()
        await storage.close()

    asyncio.run(create())
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE asgimon_job_claims")
        db.execute("DROP TABLE asgimon_api_call_ids")
        db.execute("DROP TABLE asgimon_rate_limit_overrides")
        db.execute("DROP TABLE asgimon_rate_limit_denials")
        db.execute("ALTER TABLE asgimon_rollups DROP COLUMN hist_packed")
        old_series = [
            ("build:clone", 0, 3, 1, 0, 0.0, None, None, "{}"),
            ("error:high", 0, 2, 2, 0, 0.0, None, None, "{}"),
            # Two endpoints in one day and one in the next: what version 3's project
            # totals are summed from.
            ("api:GET /", 0, 5, 0, 5, 50.0, 2.0, 20.0, histogram.dumps({100: 3, 120: 2})),
            ("api:POST /a", 0, 2, 1, 2, 30.0, 10.0, 20.0, histogram.dumps({120: 1, 130: 1})),
            ("api:GET /", 86400, 1, 0, 1, 7.0, 7.0, 7.0, histogram.dumps({110: 1})),
        ]
        db.executemany(
            "INSERT INTO asgimon_rollups (project_id, resolution, series, bucket_start,"
            " count, error_count, value_count, value_sum, value_min, value_max, hist)"
            " VALUES ('p', 'day', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            old_series,
        )
        db.execute("UPDATE asgimon_schema_version SET version = 1")


def asgimon_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asgimon.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_old_schema_is_refused_until_upgraded_then_works(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    make_v1(db)
    env = {"ANALYTICS_STORAGE_URL": f"sqlite:///{db}"}

    check = asgimon_cli("check", env=env)
    assert check.returncode == 1
    assert "run `asgimon db upgrade`" in check.stdout

    done = asgimon_cli("db", "upgrade", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"upgraded": [2, 3, 4, 5, 6, 7, 8]}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM asgimon_schema_version").fetchone() == (8,)
        assert conn.execute("SELECT count(*) FROM asgimon_alerts").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_alert_history").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_job_claims").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_api_call_ids").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_rate_limit_overrides").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_rate_limit_denials").fetchone() == (0,)
        assert conn.execute("SELECT count(hist_packed) FROM asgimon_rollups").fetchone() == (0,)
        renamed = conn.execute(
            "SELECT DISTINCT series FROM asgimon_rollups ORDER BY series"
        ).fetchall()
        assert renamed == [
            ("all:api",),
            ("all:error",),
            ("api:GET /",),
            ("api:POST /a",),
            ("build:clone:-",),
            ("error:high:-:unknown",),
        ]
        totals = conn.execute(
            "SELECT series, bucket_start, count, error_count, value_count, value_sum,"
            " value_min, value_max, hist FROM asgimon_rollups WHERE series LIKE 'all:%'"
            " ORDER BY series, bucket_start"
        ).fetchall()
        assert [(*t[:8], histogram.loads(t[8])) for t in totals] == [
            ("all:api", 0, 7, 1, 7, 80.0, 2.0, 20.0, {100: 3, 120: 3, 130: 1}),
            ("all:api", 86400, 1, 0, 1, 7.0, 7.0, 7.0, {110: 1}),
            ("all:error", 0, 2, 2, 0, 0.0, None, None, {}),
        ]

    again = asgimon_cli("db", "upgrade", env=env)
    assert json.loads(again.stdout) == {"upgraded": []}
    assert asgimon_cli("check", env=env).returncode == 0


async def test_versions_that_change_nothing_here_or_only_add_are_applied_at_start(
    tmp_path: Path,
) -> None:
    # Version 4 only changes PostgreSQL, version 5 only adds a table and version 6 a table
    # and a nullable column, versions 7 and 8 two tables each: a SQLite database at 3 needs
    # no upgrade step.
    db = tmp_path / "v3.db"
    storage = SQLStorage(f"sqlite:///{db}")
    await storage.start()
    await storage.close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE asgimon_api_call_ids")
        conn.execute("DROP TABLE asgimon_error_groups")
        conn.execute("DROP TABLE asgimon_rate_limit_overrides")
        conn.execute("DROP TABLE asgimon_rate_limit_denials")
        conn.execute("DROP TABLE asgimon_alerts")
        conn.execute("DROP TABLE asgimon_alert_history")
        conn.execute("ALTER TABLE asgimon_error_events DROP COLUMN exception")
        conn.execute("UPDATE asgimon_schema_version SET version = 3")
    storage = SQLStorage(f"sqlite:///{db}")
    await storage.start()
    call = ApiCall(project_id="p", timestamp=time.time(), endpoint="/a")
    await storage.write([call], sampling=RawSampling(rate=0.0))
    await storage.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM asgimon_schema_version").fetchone() == (8,)
        assert conn.execute("SELECT id FROM asgimon_api_call_ids").fetchall() == [(call.id,)]
        assert conn.execute("SELECT count(*) FROM asgimon_alerts").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_error_groups").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM asgimon_rate_limit_overrides").fetchone() == (0,)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(asgimon_error_events)")]
        assert "exception" in columns


async def test_postgres_upgrades_from_version_1_and_orders_series_by_bytes() -> None:
    """Every migration on PostgreSQL; version 4 gives the series column the "C" collation:
    under a locale's collation a series prefix is neither a LIKE the index can serve nor a
    byte range."""
    import asyncpg  # type: ignore[import-untyped]

    async for schema in pg_schema():
        storage = SQLStorage(PG_URL, schema=schema)
        await storage.start()
        await storage.write([ApiCall(project_id="p", timestamp=time.time(), endpoint="/a")])
        await storage.close()
        conn = await asyncpg.connect(PG_URL)
        try:
            # As version 1 left it: no claims, no packed histograms, no project totals, and
            # the database's collation.
            table = f"{schema}.asgimon_rollups"
            await conn.execute(f"DROP TABLE {schema}.asgimon_job_claims")
            await conn.execute(f"DROP TABLE {schema}.asgimon_api_call_ids")
            await conn.execute(f"DROP TABLE {schema}.asgimon_rate_limit_overrides")
            await conn.execute(f"ALTER TABLE {table} DROP COLUMN hist_packed")
            await conn.execute(f"DELETE FROM {table} WHERE series LIKE 'all:%'")
            await conn.execute(
                f'ALTER TABLE {table} ALTER COLUMN series TYPE VARCHAR(512) COLLATE "default"'
            )
            await conn.execute(f"UPDATE {schema}.asgimon_schema_version SET version = 1")
            with pytest.raises(SchemaVersionError, match="asgimon db upgrade"):
                await SQLStorage(PG_URL, schema=schema).start()

            upgraded = SQLStorage(PG_URL, schema=schema)
            assert await upgraded.upgrade() == [2, 3, 4, 5, 6, 7, 8]
            collation = await conn.fetchval(
                "SELECT collation_name FROM information_schema.columns WHERE table_schema = $1"
                " AND table_name = 'asgimon_rollups' AND column_name = 'series'",
                schema,
            )
            assert collation == "C"
            await upgraded.start()
            rows = await upgraded.rollups(
                Window("p", "day", 0, time.time() + DAY), ("api:", "all:api")
            )
            await upgraded.close()
            assert sorted((r.series, r.count) for r in rows) == [("all:api", 1), ("api:GET /a", 1)]
        finally:
            await conn.close()


def test_db_compact_packs_closed_buckets(tmp_path: Path) -> None:
    import asyncio

    db = tmp_path / "compact.db"
    url = f"sqlite:///{db}"

    async def write() -> None:
        storage = SQLStorage(url)
        await storage.start()
        old = (time.time() - 3 * DAY) // 3600 * 3600  # twenty seconds into one hour
        await storage.write(
            [ApiCall(timestamp=old + i, duration_ms=float(i), total_ms=1.0) for i in range(20)]
        )
        await storage.close()

    asyncio.run(write())
    done = asgimon_cli("db", "compact", env={"ANALYTICS_STORAGE_URL": url})
    assert done.returncode == 0, done.stderr
    # Its hour and its day, for the endpoint and for the project's all:api total.
    assert json.loads(done.stdout) == {"packed": 4}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(hist_packed) FROM asgimon_rollups").fetchone() == (4,)


async def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    storage = SQLStorage(f"sqlite:///{db}")
    await storage.start()
    await storage.close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE asgimon_schema_version SET version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError, match="upgrade the asgimon package"):
        await SQLStorage(f"sqlite:///{db}").start()


def test_purge_and_forget_from_the_command_line(tmp_path: Path) -> None:
    import asyncio

    db = tmp_path / "ops.db"
    now = time.time()

    async def fill() -> None:
        storage = SQLStorage(f"sqlite:///{db}")
        await storage.start()
        await storage.write(
            [
                ApiCall(timestamp=now - 20 * DAY, user_id="alice", duration_ms=1, total_ms=1),
                ApiCall(timestamp=now - 1 * DAY, user_id="alice", duration_ms=1, total_ms=1),
                ApiCall(timestamp=now - 1 * DAY, user_id="bob", duration_ms=1, total_ms=1),
                ErrorEvent(timestamp=now - 1 * DAY, fingerprint="f", user_id="alice"),
                DomainEvent(timestamp=now - 20 * DAY, domain="x.com"),
            ]
        )
        await storage.close()

    asyncio.run(fill())
    env = {"ANALYTICS_STORAGE_URL": f"sqlite:///{db}", "METRICS_RETENTION_DAYS": "10"}
    purged = asgimon_cli("purge", env=env)
    assert purged.returncode == 0, purged.stderr
    deleted = json.loads(purged.stdout)["deleted"]
    assert (deleted["api_call"], deleted["domain"], deleted["error"]) == (1, 1, 0)

    forgot = asgimon_cli("forget", "--user", "alice", env=env)
    assert forgot.returncode == 0, forgot.stderr
    assert json.loads(forgot.stdout)["deleted"] == {"api_call": 1, "error": 1}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT user_id FROM asgimon_api_calls").fetchall() == [("bob",)]

    bad = asgimon_cli("forget", "--user", "", env=env)
    assert bad.returncode == 2
    assert "user_id must be" in bad.stderr


def test_a_bad_setting_stops_the_command_with_its_name() -> None:
    result = asgimon_cli("check", env={"METRICS_RETENTION_DAYS": "forever"})
    assert result.returncode == 2
    assert "METRICS_RETENTION_DAYS='forever' is invalid" in result.stderr


async def test_each_job_runs_once_per_period_across_schedulers_sharing_a_store() -> None:
    storage = MemoryStorage()
    runs: list[str] = []
    schedulers = [Scheduler(storage, tick=0.05) for _ in range(4)]
    for i, scheduler in enumerate(schedulers):
        scheduler.holder = f"w{i}"

        async def job(name: str = scheduler.holder) -> None:
            runs.append(name)

        scheduler.every("probe", 1, job)
    started = time.time()
    for scheduler in schedulers:
        await scheduler.start()
    import asyncio

    await asyncio.sleep(3.2)
    for scheduler in schedulers:
        await scheduler.stop()
    periods = int(time.time()) - int(started) + 1
    assert periods - 1 <= len(runs) <= periods
    assert sum(s.runs("probe") for s in schedulers) == len(runs)


async def test_the_monitor_purges_by_the_retention_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = MemoryStorage()
    now = time.time()
    await storage.write(
        [
            ApiCall(timestamp=now - 5 * DAY, duration_ms=1, total_ms=1),
            ApiCall(timestamp=now - 1 * DAY, duration_ms=1, total_ms=1),
            ErrorEvent(timestamp=now - 3 * DAY, fingerprint="f"),
        ]
    )
    monitor = Monitor(
        storage=storage,
        metrics_retention_days=2,
        error_log_retention_days=2,
        minute_rollup_retention_days=1,
    )
    deleted = await monitor.purge()
    assert (deleted["api_call"], deleted["error"]) == (1, 1)
    assert deleted["rollup:minute"] >= 1
    assert await storage.count("api_call") == 1
    monitor._last_purge = (time.time() - 7200, time.monotonic())  # the clock jumped 2 h
    with caplog.at_level(logging.WARNING, logger="asgimon"):
        await monitor.purge()
    assert "clock jump detected" in caplog.text


class FlakyClaims(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.failures = 1

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("connection refused")
        return await super().claim(job, period_start, holder)


async def test_a_failed_claim_is_retried_within_the_same_period() -> None:
    import asyncio

    scheduler = Scheduler(FlakyClaims(), tick=0.05)
    runs: list[float] = []

    async def job() -> None:
        runs.append(time.time())

    scheduler.every("daily", 86_400, job)
    await scheduler.start()
    await asyncio.sleep(0.3)
    await scheduler.stop()
    assert len(runs) == 1


def test_daily_rollups_must_outlive_raw_data() -> None:
    from asgimon import ConfigError, Settings

    with pytest.raises(ConfigError, match="ANALYTICS_DAY_ROLLUP_RETENTION_DAYS=30 is invalid"):
        Settings(day_rollup_retention_days=30)


class DownClaims(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0
        self.down = True

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        self.attempts += 1
        if self.down:
            raise StorageUnavailable("too many clients already")
        return await super().claim(job, period_start, holder)


async def test_the_scheduler_backs_off_while_storage_refuses_and_resumes_after() -> None:
    import asyncio

    storage = DownClaims()
    scheduler = Scheduler(storage, tick=0.05)
    runs: list[str] = []

    async def purge() -> None:
        runs.append("purge")

    async def compact() -> None:
        runs.append("compact")

    scheduler.every("purge", 86_400, purge)
    scheduler.every("compact", 86_400, compact)
    await scheduler.start()
    await asyncio.sleep(1.0)
    # Once a tick and per job, 1 s would be 40 attempts; backing off from 0.05 s it is 5.
    assert 3 <= storage.attempts <= 8, storage.attempts
    assert runs == []
    storage.down = False
    await asyncio.sleep(1.8)  # the next knock is at most twice the last wait away
    await scheduler.stop()
    assert sorted(runs) == ["compact", "purge"]


class OneBadJob(MemoryStorage):
    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        if job == "broken":
            raise ValueError("job name too long for the claims table")
        return await super().claim(job, period_start, holder)


async def test_a_job_whose_claim_always_fails_does_not_starve_the_others() -> None:
    import asyncio

    scheduler = Scheduler(OneBadJob(), tick=0.05)
    runs: list[str] = []

    async def purge() -> None:
        runs.append("purge")

    scheduler.every("broken", 86_400, purge)
    scheduler.every("purge", 86_400, purge)
    await scheduler.start()
    await asyncio.sleep(0.3)
    await scheduler.stop()
    assert runs == ["purge"]
