"""Engines and dialect-specific SQL: what SQLite and PostgreSQL do differently."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event, literal_column
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from . import tables as s

OnConnect = Callable[[Any], None]


def sqlite_path(url: str) -> str | None:
    """The file a SQLite URL names, or None for an in-memory database."""
    path = url.split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    return None if path in ("", ":memory:") or "mode=memory" in url else path


def normalise_url(url: str) -> str:
    """Map the short forms of the settings onto SQLAlchemy's async driver URLs."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        return "sqlite+aiosqlite://" + rest
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return "postgresql+asyncpg://" + rest
    raise ValueError(f"not an SQL URL: {url!r}")


_SQLITE_HIST_MERGE = (
    "(SELECT json_group_object(key, total) FROM (SELECT key, sum(value) AS total FROM ("
    "SELECT key, value FROM json_each(asgimon_rollups.hist) UNION ALL "
    "SELECT key, value FROM json_each(excluded.hist)) GROUP BY key))"
)
_PG_HIST_MERGE = (
    "(SELECT coalesce(json_object_agg(key, total), '{}'::json)::text FROM ("
    "SELECT key, sum(value::bigint) AS total FROM ("
    "SELECT key, value FROM json_each_text(asgimon_rollups.hist::json) UNION ALL "
    "SELECT key, value FROM json_each_text(excluded.hist::json)) AS pairs GROUP BY key) AS sums)"
)


def _pick(held: str, new: str, op: str) -> str:
    return (
        f"CASE WHEN {new} IS NULL THEN {held} WHEN {held} IS NULL THEN {new} "
        f"WHEN {new} {op} {held} THEN {new} ELSE {held} END"
    )


def make_engine(
    url: str,
    *,
    writer: bool,
    busy_timeout: float,
    pool_size: int,
    schema: str | None,
    on_connect: OnConnect | None,
) -> AsyncEngine:
    """An engine with asgimon's timeouts and, on SQLite, its pragmas and ``BEGIN IMMEDIATE``."""
    if url.startswith("postgresql"):
        return create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=1.0,
            pool_pre_ping=True,
            connect_args={
                "timeout": 2.0,
                # The server's statement_timeout is no help when the server itself hangs.
                "command_timeout": 5.0,
                "server_settings": {
                    "application_name": "asgimon",
                    "statement_timeout": "5000",
                    # asgimon's tables in a schema of their own, if asked for one.
                    **({"search_path": schema} if schema else {}),
                },
            },
        )
    engine = create_async_engine(
        url,
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
        poolclass=AsyncAdaptedQueuePool,
        # One writer connection per process: writers queue here, not on SQLite's lock.
        pool_size=1 if writer else pool_size,
        max_overflow=0,
        # Readers never open a transaction (below), so there is nothing to roll back: each
        # step is a round trip to aiosqlite's thread, and a query took eight of them.
        pool_reset_on_return="rollback" if writer else None,
    )
    busy_ms = int(busy_timeout * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from the driver so BEGIN can be IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {busy_ms}")
        # Outside any transaction, or SQLite ignores it (new file) or refuses (old one).
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        # Index pages of a large database stay in memory between batches (64 MiB).
        cur.execute("PRAGMA cache_size = -65536")
        cur.close()
        if on_connect is not None:
            on_connect(dbapi_conn)

    if writer:

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    # A reader's statements run in autocommit: each read is one statement, its own snapshot.
    return engine


def rollup_upsert(insert: Any, dialect: str) -> Any:
    """The UPSERT that adds a rollup delta to its row: counts, sums, extremes, histogram."""
    t = s.rollups
    stmt = insert(t)
    ex = stmt.excluded
    merge = _SQLITE_HIST_MERGE if dialect == "sqlite" else _PG_HIST_MERGE
    return stmt.on_conflict_do_update(
        index_elements=["project_id", "resolution", "series", "bucket_start"],
        set_={
            "count": t.c.count + ex.count,
            "error_count": t.c.error_count + ex.error_count,
            "value_count": t.c.value_count + ex.value_count,
            "value_sum": t.c.value_sum + ex.value_sum,
            "value_min": literal_column(
                _pick("asgimon_rollups.value_min", "excluded.value_min", "<")
            ),
            "value_max": literal_column(
                _pick("asgimon_rollups.value_max", "excluded.value_max", ">")
            ),
            "hist": literal_column(merge),
            "hist_packed": None,
        },
    )
