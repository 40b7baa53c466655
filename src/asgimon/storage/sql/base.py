"""The SQL store's shared state and lifecycle: engines, schema, start and close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from asgimon.errors import (
    SchemaVersionError,
    StorageUnavailable,
)
from asgimon.storage.sql.engine import (
    OnConnect,
    make_engine,
    normalise_url,
    sqlite_path,
)
from asgimon.storage.sql.failures import classify
from asgimon.storage.sql.migrations import prepare_schema
from asgimon.storage.sql.rows import RowMaker

log = logging.getLogger("asgimon.storage")

WAL_CHECKPOINT_BYTES = 64 * 1024 * 1024
CLOSE_WAIT_S = 5.0
COMPACTION_LOOKBACK_S = 2 * 86_400
FULL_COMPACTION_EVERY_S = 86_400.0
ROWS_PER_CALL = 100
"""Rows per ``executemany`` through SQLAlchemy: about 0.4 ms of binding on the loop. 250
made PostgreSQL ingest 5 % faster but cost it a fifth of its requests/s over HTTP."""
DRIVER_ROWS_PER_CALL = 500
"""Rows per call of SQLite's own ``executemany``: plain tuples, bound in the driver's thread."""


@dataclass(frozen=True, slots=True)
class _PlainInsert:
    """A table's insert for the driver itself: its columns, its row maker, its SQL."""

    columns: tuple[str, ...]
    make: RowMaker
    sql: str  # SQLite's paramstyle; only the SQLite fast path sends it


class SQLBase:
    """What every part of the SQL store shares: its URL, engines, schema and lifecycle.

    >>> storage = SQLStorage("sqlite:///asgimon.db")
    >>> storage = SQLStorage("postgresql://user@127.0.0.1/app")    # pip install 'asgimon[postgres]'

    ``on_connect`` runs on every new DB-API connection (after asgimon's own set-up); tests
    use it to inject faults such as ``PRAGMA max_page_count``.
    """

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        on_connect: OnConnect | None = None,
        pool_size: int | None = None,
        schema: str | None = None,
    ) -> None:
        self.url = normalise_url(url)
        if self.url.startswith("sqlite") and sqlite_path(self.url) is None:
            raise ValueError("an in-memory SQLite database is not shared safely: use memory://")
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self.busy_timeout = busy_timeout
        self._on_connect = on_connect
        # Connections per pool (PostgreSQL: 4). SQLite readers: 2, each a thread that holds
        # the GIL while it makes its rows; a request's four reads at once took 20 ms where
        # in turn they took 14 (two at once: 15).
        if pool_size is None:
            pool_size = 2 if self.dialect == "sqlite" else 4
        self._pool_size = pool_size
        if schema is not None and not schema.isidentifier():
            raise ValueError(f"schema {schema!r} is not a plain identifier")
        self.schema = schema
        self._writer: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._sqlite_path = sqlite_path(self.url) if self.dialect == "sqlite" else None
        self._next_wal_check = 0.0
        self._insert = sqlite.insert if self.dialect == "sqlite" else postgresql.insert
        self._plain_inserts: dict[str, _PlainInsert] = {}
        self._start_lock = asyncio.Lock()
        self._schema_ready = False
        self._packed_upto: dict[tuple[str, str], int] = {}
        self._full_compaction_at = 0.0
        self._file_id: tuple[int, int] | None = None
        self._busy = 0
        self._reset_reason: str | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ---------------------------------------------------------------------

    def _engine(self, *, writer: bool) -> AsyncEngine:
        return make_engine(
            self.url,
            writer=writer,
            busy_timeout=self.busy_timeout,
            pool_size=self._pool_size,
            schema=self.schema,
            on_connect=self._on_connect,
        )

    async def start(self) -> None:
        """Connect and make sure the schema is there (creating it in a new database)."""
        await self._writable()

    @property
    def identity(self) -> str:
        """Which database this is, for keys shared with other processes (no password)."""
        url = make_url(self.url).render_as_string(hide_password=True)
        return f"{url}#{self.schema or ''}"

    def _open(self) -> tuple[AsyncEngine, AsyncEngine]:
        """The engines, created on first use; connections are made lazily by the pool."""
        if self._writer is None or self._reader is None:
            self._writer = self._engine(writer=True)
            self._reader = self._engine(writer=False) if self._sqlite_path else self._writer
        return self._writer, self._reader

    async def _writable(self) -> AsyncEngine:
        """The writer engine, once the schema is known to be current."""
        writer, _ = self._open()
        if self._schema_ready:
            return writer
        async with self._start_lock:
            if not self._schema_ready:
                try:
                    async with self._in_use(writer), writer.begin() as conn:
                        await self._prepare_schema(conn, upgrade=False)
                except SchemaVersionError:
                    await self.close()
                    raise
                except (SQLAlchemyError, OSError) as exc:
                    # Whatever the driver says (permissions, a racing worker creating the
                    # same tables), it is the store that is not ready, never the events.
                    error = StorageUnavailable(f"schema set-up failed: {exc}")
                    await self.close(reason=str(error))
                    raise error from exc
                self._schema_ready = True
                self._file_id = self._stat_file()
        return writer

    def _stat_file(self) -> tuple[int, int] | None:
        if self._sqlite_path is None:
            return None
        try:
            st = os.stat(self._sqlite_path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    async def _check_file(self) -> None:
        """A database file deleted or replaced under us must not swallow writes unseen."""
        if self._sqlite_path is None or self._file_id is None:
            return
        if self._stat_file() != self._file_id:
            log.error("asgimon: %s was deleted or replaced; reopening it", self._sqlite_path)
            await self.close()
            raise StorageUnavailable(f"database file {self._sqlite_path} was deleted or replaced")

    async def _prepare_schema(self, conn: AsyncConnection, *, upgrade: bool) -> list[int]:
        return await prepare_schema(conn, self.dialect, self._insert, upgrade=upgrade)

    async def upgrade(self) -> list[int]:
        """Bring the schema to this version of asgimon (``asgimon db upgrade``).

        Returns the versions applied, in order; an empty list if there was nothing to do.
        Runs in one transaction: a failed migration leaves the database as it was.
        """
        writer, _ = self._open()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                applied = await self._prepare_schema(conn, upgrade=True)
        except SchemaVersionError:
            await self.close()
            raise
        except (SQLAlchemyError, OSError) as exc:
            await self.close()
            raise StorageUnavailable(f"schema upgrade failed: {exc}") from exc
        self._schema_ready = True
        return applied

    @contextlib.asynccontextmanager
    async def _in_use(self, engine: AsyncEngine) -> AsyncIterator[None]:
        """Marks a connection checked out, so close() can wait for it to come back."""
        if engine is not self._writer and engine is not self._reader:
            # close() ran since the caller took this engine: a connection made from it now
            # would never be closed. The caller's retry gets the new engines.
            raise StorageUnavailable(self._reset_reason or "storage was reset; try again")
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if not self._busy:
                self._idle.set()

    async def close(self, reason: str | None = None) -> None:
        """Close every connection. ``reason`` (a failure) is what callers holding the old
        engines are told, so the error they report is the real one."""
        self._reset_reason = reason
        engines = {id(e): e for e in (self._writer, self._reader) if e is not None}
        self._writer = self._reader = None
        self._schema_ready = False
        # Disposing an engine does not close the connections checked out of it: they would
        # be dropped unclosed when returned. Give them a moment to come back first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), CLOSE_WAIT_S)
        for engine in engines.values():
            await engine.dispose()

    async def _fetch(self, stmt: Any, params: Mapping[str, Any] | None = None) -> list[Row[Any]]:
        _, reader = self._open()
        try:
            async with self._in_use(reader), reader.connect() as conn:
                return list((await conn.execute(stmt, params)).fetchall())
        except Exception as exc:
            raise classify(exc) from exc

    def wal_bytes(self) -> int:
        if self._sqlite_path is None:
            return 0
        try:
            return os.path.getsize(self._sqlite_path + "-wal")
        except OSError:
            return 0
