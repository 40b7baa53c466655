"""The SQL store on SQLAlchemy Core (async): SQLite through aiosqlite, PostgreSQL through asyncpg.

Writes are batched, one transaction per batch; on SQLite every write transaction is
``BEGIN IMMEDIATE`` (a deferred one that later upgrades to a write lock fails with
``database is locked`` under concurrent writers instead of waiting), in WAL mode with a busy
timeout, so several worker processes can share one file. Inserts are idempotent on
``(project_id, id)`` and only the rows actually inserted feed the rollups, which are merged by
UPSERT, histograms included, so a retried batch or a second worker never double counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, cast

from sqlalchemy import (
    CompoundSelect,
    Select,
    TextClause,
    bindparam,
    case,
    delete,
    false,
    func,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from asgimon import histogram
from asgimon._slices import Slicer, chunks
from asgimon.errors import (
    SchemaVersionError,
    StorageUnavailable,
)
from asgimon.events import EVENT_TYPES, TOTAL_SERIES, Event, kinds_with_users
from asgimon.rollups import RESOLUTIONS, Aggregator, Rollup
from asgimon.sampling import KEEP_ALL, RawSampling

from . import _schema as s
from ._sql_engine import OnConnect, make_engine, normalise_url, rollup_upsert, sqlite_path
from ._sql_errors import classify
from ._sql_migrate import prepare_schema
from ._sql_rows import RowMaker, from_row, rollup_row, row_maker, us
from .base import SeriesTotal, WriteResult, sum_per_bucket

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


class SQLStorage:
    """SQLite or PostgreSQL, chosen by URL.

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

    # -- writes ------------------------------------------------------------------------

    async def write(
        self, events: Sequence[Event], *, sampling: RawSampling = KEEP_ALL
    ) -> WriteResult:
        if not events:
            return WriteResult(0, 0)
        await self._check_file()
        writer = await self._writable()
        received = us(time.time())
        by_kind: dict[str, list[Event]] = {}
        for ev in events:
            by_kind.setdefault(ev.kind, []).append(ev)
        fresh: list[Event] = []
        try:
            async with self._in_use(writer), writer.connect() as conn:
                try:
                    async with conn.begin():
                        slicer = Slicer()  # the connection and BEGIN were awaits, not work
                        for kind, evs in by_kind.items():
                            fresh.extend(
                                await self._insert_new(conn, kind, evs, received, slicer, sampling)
                            )
                        agg = Aggregator()
                        await slicer.each(agg.add, fresh)
                        # One lock order for every writer, or concurrent UPSERTs deadlock on
                        # PostgreSQL.
                        deltas = sorted(agg.deltas(), key=lambda r: r.key)
                        rows: list[dict[str, Any]] = []
                        await slicer.each(lambda run: rows.extend(map(rollup_row, run)), deltas)
                        await self._execute_in_runs(conn, self._rollup_upsert_stmt, rows, slicer)
                        slicer.mark()
                except Exception as exc:
                    if isinstance(classify(exc), StorageUnavailable):
                        # A fresh connection next time picks up a healed store (permissions,
                        # space, a restarted server); only this one is thrown away.
                        await conn.invalidate()
                    raise
        except Exception as exc:
            raise classify(exc) from exc
        await self._maybe_checkpoint()
        return WriteResult(len(fresh), len(events) - len(fresh), fresh)

    async def _execute_in_runs(
        self, conn: AsyncConnection, stmt: Any, rows: list[dict[str, Any]], slicer: Slicer
    ) -> int:
        """``executemany`` of ``rows``, :data:`ROWS_PER_CALL` at a time; the row count.

        SQLAlchemy binds and renders every row of a call in one stretch on the loop, about
        4 µs a row: a thousand would hold it for milliseconds.
        """
        count = 0
        for run in chunks(rows, ROWS_PER_CALL):
            slicer.mark()
            count += (await conn.execute(stmt, list(run))).rowcount
            slicer.restart()
        return count

    async def _insert_new(
        self,
        conn: AsyncConnection,
        kind: str,
        evs: list[Event],
        received: int,
        slicer: Slicer,
        sampling: RawSampling,
    ) -> list[Event]:
        table = s.table_of(kind)
        if kind != "api_call" or sampling.keeps_all:
            return await self._insert_rows(conn, table, evs, received, slicer, kind)
        kept: list[Event] = []
        ids: list[Event] = []
        keeps = sampling.keeps

        def split(run: Sequence[Event]) -> None:
            for ev in run:
                (kept if keeps(ev) else ids).append(ev)

        await slicer.each(split, evs)
        fresh = await self._insert_rows(conn, table, kept, received, slicer, kind)
        ids_table = s.api_call_ids
        return fresh + await self._insert_rows(conn, ids_table, ids, received, slicer, None)

    async def _insert_rows(
        self,
        conn: AsyncConnection,
        table: Any,
        evs: list[Event],
        received: int,
        slicer: Slicer,
        kind: str | None,
    ) -> list[Event]:
        """Insert each event's row unless its primary key is there; the events inserted."""
        if not evs:
            return []
        plain = self._plain_insert(table, kind)
        key_names = [c.name for c in table.primary_key.columns]
        insert = self._insert(table).on_conflict_do_nothing(index_elements=key_names)
        if self.dialect == "sqlite":
            # Duplicates are rare (a retried batch): try without RETURNING, which SQLite does
            # far faster, and only if the row count says some were already there, go back
            # and find out which.
            slicer.mark()
            savepoint = await conn.begin_nested()
            slicer.restart()
            if self.schema is None:  # the raw SQL names tables without a schema
                count = await self._sqlite_plain_insert(conn, plain, evs, received, slicer)
            else:
                rows = await self._dict_rows(plain, evs, received, slicer)
                count = await self._execute_in_runs(conn, insert, rows, slicer)
            if count == len(evs):
                slicer.mark()
                await savepoint.commit()
                slicer.restart()
                return evs  # every row went in, so no key repeated, in the store or the batch
            slicer.mark()
            await savepoint.rollback()
            slicer.restart()
        key_columns, key_of = row_maker(key_names)
        keyed: list[tuple[tuple[Any, ...], Event]] = []
        await slicer.each(lambda run: keyed.extend((key_of(ev, received), ev) for ev in run), evs)
        if self.dialect == "postgresql":
            # One lock order for every writer, or concurrent inserts deadlock.
            keyed.sort(key=itemgetter(0))
            await slicer.pause()
            evs = [ev for _, ev in keyed]
        rows = await self._dict_rows(plain, evs, received, slicer)
        inserted: set[tuple[Any, ...]] = set()
        returning = insert.returning(*(table.c[name] for name in key_columns))
        for run in chunks(rows, ROWS_PER_CALL):
            slicer.mark()
            result = await conn.execute(returning, list(run))
            slicer.restart()
            inserted.update(map(tuple, result))
        fresh: list[Event] = []

        def pick(run: Sequence[tuple[tuple[Any, ...], Event]]) -> None:
            for key, ev in run:
                if key in inserted:
                    inserted.discard(key)  # a repeat within the batch is a duplicate too
                    fresh.append(ev)

        await slicer.each(pick, keyed)
        return fresh

    async def _dict_rows(
        self, plain: _PlainInsert, evs: list[Event], received: int, slicer: Slicer
    ) -> list[dict[str, Any]]:
        """The rows as SQLAlchemy binds them: one dict each."""
        order, make = plain.columns, plain.make
        rows: list[dict[str, Any]] = []
        await slicer.each(
            lambda run: rows.extend(
                dict(zip(order, make(ev, received), strict=True)) for ev in run
            ),
            evs,
        )
        return rows

    async def _sqlite_plain_insert(
        self,
        conn: AsyncConnection,
        plain: _PlainInsert,
        evs: list[Event],
        received: int,
        slicer: Slicer,
    ) -> int:
        """The rows through the driver's own ``executemany``; the row count.

        SQLAlchemy would process every parameter of every row on the loop (about 4 µs a
        row); the driver binds plain tuples in its own thread, releasing the GIL as SQLite
        steps through each row.
        """
        make = plain.make
        count = 0
        for run in chunks(evs, DRIVER_ROWS_PER_CALL):
            values = [make(ev, received) for ev in run]
            slicer.mark()
            count += (await conn.exec_driver_sql(plain.sql, values)).rowcount
            slicer.restart()
        return count

    def _plain_insert(self, table: Any, kind: str | None) -> _PlainInsert:
        found = self._plain_inserts.get(table.name)
        if found is None:
            order, make = row_maker([c.name for c in table.columns], kind)
            preparer = self._dialect_impl.identifier_preparer
            keys = ", ".join(preparer.quote(c.name) for c in table.primary_key.columns)
            sql = (
                f"INSERT INTO {preparer.format_table(table)} "
                f"({', '.join(map(preparer.quote, order))}) "
                f"VALUES ({', '.join('?' * len(order))}) ON CONFLICT ({keys}) DO NOTHING"
            )
            found = self._plain_inserts[table.name] = _PlainInsert(order, make, sql)
        return found

    @functools.cached_property
    def _dialect_impl(self) -> Any:
        from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite

        return SQLiteDialect_aiosqlite()

    @functools.cached_property
    def _rollup_upsert_stmt(self) -> Any:
        return self._rollup_upsert()

    def _rollup_upsert(self) -> Any:
        return rollup_upsert(self._insert, self.dialect)

    async def _maybe_checkpoint(self) -> None:
        """Keep the WAL bounded even when readers starve automatic checkpoints."""
        if self._sqlite_path is None or time.monotonic() < self._next_wal_check:
            return
        self._next_wal_check = time.monotonic() + 10.0
        try:
            # One stat() every ten seconds, on a local file (SQLite is never on NFS here).
            size = os.path.getsize(self._sqlite_path + "-wal")  # noqa: ASYNC240
        except OSError:
            return
        if size <= WAL_CHECKPOINT_BYTES:
            return
        writer, _ = self._open()
        try:
            async with self._in_use(writer), writer.connect() as conn:
                # On the driver's own connection: inside a transaction the checkpoint can't finish.
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                await raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except Exception as exc:  # the batch is committed: a failed checkpoint must not undo that
            log.warning("asgimon: WAL checkpoint failed, will try again: %r", exc)

    def wal_bytes(self) -> int:
        if self._sqlite_path is None:
            return 0
        try:
            return os.path.getsize(self._sqlite_path + "-wal")
        except OSError:
            return 0

    # -- reads -------------------------------------------------------------------------

    async def _fetch(self, stmt: Any, params: Mapping[str, Any] | None = None) -> list[Row[Any]]:
        _, reader = self._open()
        try:
            async with self._in_use(reader), reader.connect() as conn:
                return list((await conn.execute(stmt, params)).fetchall())
        except Exception as exc:
            raise classify(exc) from exc

    def _where(
        self, kind: str, project_id: str | None, start: float | None, end: float | None
    ) -> tuple[Any, list[Any]]:
        if kind not in EVENT_TYPES:
            raise ValueError(f"unknown event kind {kind!r}")
        t = s.table_of(kind)
        cond = []
        if project_id is not None:
            cond.append(t.c.project_id == project_id)
        if start is not None:
            cond.append(t.c.created_at >= us(start))
        if end is not None:
            cond.append(t.c.created_at < us(end))
        return t, cond

    async def events(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
        limit: int = 1000,
    ) -> list[Event]:
        t, cond = self._where(kind, project_id, start, end)
        stmt = select(t).where(*cond).order_by(t.c.created_at.desc()).limit(limit)
        return [from_row(kind, row) for row in await self._fetch(stmt)]

    async def count(
        self,
        kind: str,
        *,
        project_id: str | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> int:
        t, cond = self._where(kind, project_id, start, end)
        rows = await self._fetch(select(func.count()).select_from(t).where(*cond))
        return int(rows[0][0])

    async def rollups(
        self,
        *,
        project_id: str,
        resolution: str,
        start: float,
        end: float,
        series_prefix: str | tuple[str, ...] = "",
    ) -> list[Rollup]:
        stmt, params = _rollup_read("rows", project_id, resolution, start, end, series_prefix)
        loads, from_bytes = histogram.loads, histogram.Packed.from_bytes
        # Plain tuples: a month of a busy project is thousands of rows, and attribute access
        # on each row cost more than the query.
        out = [
            Rollup(
                project_id,
                series,
                resolution,
                bucket,
                count,
                errors,
                value_count,
                value_sum,
                value_min,
                value_max,
                {} if packed is not None else loads(hist),
                None if packed is None else from_bytes(packed),
            )
            for (
                series,
                bucket,
                count,
                errors,
                value_count,
                value_sum,
                value_min,
                value_max,
                packed,
                hist,
            ) in cast("list[tuple[Any, ...]]", await self._fetch(stmt, params))
        ]
        # Sorted here: an ORDER BY on the bucket leads SQLite to its bucket index, which
        # walks every series of the project in the range.
        out.sort(key=_bucket_then_series)
        return out

    async def series_rollups(
        self,
        *,
        project_id: str,
        resolution: str,
        start: float,
        end: float,
        series_prefix: str | tuple[str, ...] = "",
    ) -> list[Rollup]:
        stmt, params = _rollup_read("rows", project_id, resolution, start, end, series_prefix)
        loads, merge_into = histogram.loads, histogram.merge_into
        merged: dict[str, Rollup] = {}
        # Merged as the rows come: no object per row outlives its turn, where a Rollup and
        # a Packed per row (1,500 for a month of 50 endpoints) lived through the request
        # and pushed the collector into full collections.
        for (
            series,
            bucket,
            count,
            errors,
            value_count,
            value_sum,
            value_min,
            value_max,
            packed,
            hist,
        ) in cast("list[tuple[Any, ...]]", await self._fetch(stmt, params)):
            into = merged.get(series)
            if into is None:
                into = merged[series] = Rollup(project_id, series, resolution, bucket)
            elif bucket < into.bucket_start:
                into.bucket_start = bucket
            into.count += count
            into.error_count += errors
            into.value_count += value_count
            into.value_sum += value_sum
            if value_min is not None and (into.value_min is None or value_min < into.value_min):
                into.value_min = value_min
            if value_max is not None and (into.value_max is None or value_max > into.value_max):
                into.value_max = value_max
            if packed is None:
                merge_into(into.hist, loads(hist))
            elif into.packed is None:
                into.packed = histogram.Packed.from_bytes(packed)
            else:
                into.packed.add_bytes(packed)
        return [merged[series] for series in sorted(merged)]

    async def totals(
        self,
        *,
        project_id: str,
        resolution: str,
        windows: Sequence[tuple[float, float]],
        series: str,
    ) -> list[Rollup]:
        if not windows:
            return []
        rows: dict[int, Any] = {}
        # SQLite caps a compound SELECT at 500 terms.
        for first in range(0, len(windows), 200):
            chunk = windows[first : first + 200]
            params: dict[str, Any] = {"p": project_id, "r": resolution, "s": series}
            for i, (lo, hi) in enumerate(chunk):
                params[f"lo{i}"] = math.ceil(lo)
                params[f"hi{i}"] = math.ceil(hi)
            stmt = _totals_sql(len(chunk))
            rows.update((first + r.w, r) for r in await self._fetch(stmt, params))
        out = []
        for i, (lo, _) in enumerate(windows):
            total = Rollup(project_id, series, resolution, int(lo))
            r = rows.get(i)
            if r is not None:
                total.count, total.error_count = int(r.n), int(r.e)
                total.value_count, total.value_sum = int(r.vn), float(r.vs)
            out.append(total)
        return out

    async def series_totals(
        self,
        *,
        project_id: str,
        resolution: str,
        start: float,
        end: float,
        series_prefix: str | tuple[str, ...] = "",
    ) -> list[SeriesTotal]:
        stmt, params = _rollup_read("sums", project_id, resolution, start, end, series_prefix)
        totals = [
            SeriesTotal(series, int(n), int(e), int(vn), float(vs), int(lo), int(hi))
            for series, n, e, vn, vs, lo, hi in cast(
                "list[tuple[Any, ...]]", await self._fetch(stmt, params)
            )
        ]
        return sorted(totals, key=attrgetter("series"))

    async def bucket_totals(
        self,
        *,
        project_id: str,
        resolution: str,
        start: float,
        end: float,
        series_prefix: str | tuple[str, ...] = "",
    ) -> list[Rollup]:
        stmt, params = _rollup_read("buckets", project_id, resolution, start, end, series_prefix)
        rows = cast("list[tuple[int, int, int, int, float]]", await self._fetch(stmt, params))
        return sum_per_bucket(project_id, resolution, rows)

    async def compact(self, *, before: float, batch_size: int = 2000) -> int:
        """Pack the histograms of hour and day buckets that ended before ``before``.

        Each row is read, packed in Python and written back only if its JSON histogram is
        still the one that was read, so a merge racing the compaction wins. Returns how many
        rows were packed.

        A run looks back two days from where the last one finished, where late events
        land; once a day it looks at everything again.
        """
        t = s.rollups
        packed_total = 0
        full = time.monotonic() >= self._full_compaction_at
        if full:
            self._full_compaction_at = time.monotonic() + FULL_COMPACTION_EVERY_S
        for project_id in await self.projects():
            for resolution in ("hour", "day"):
                width = RESOLUTIONS[resolution]
                done = self._packed_upto.get((project_id, resolution))
                after = -(2**62) if full or done is None else done - COMPACTION_LOOKBACK_S
                while True:
                    stmt = (
                        select(t.c.series, t.c.bucket_start, t.c.hist)
                        .where(
                            t.c.project_id == project_id,
                            t.c.resolution == resolution,
                            t.c.bucket_start > after,
                            t.c.bucket_start < int(before) - width,
                            t.c.hist_packed.is_(None),
                        )
                        .order_by(t.c.bucket_start)
                        .limit(batch_size)
                    )
                    rows = await self._fetch(stmt)
                    if rows:
                        packed_total += await self._write_packed(project_id, resolution, rows)
                    if len(rows) < batch_size:
                        break
                    # Packed rows leave the set, so the last bucket's other series come next.
                    after = rows[-1].bucket_start - 1
                self._packed_upto[(project_id, resolution)] = int(before) - width
        return packed_total

    async def _write_packed(self, project_id: str, resolution: str, rows: list[Row[Any]]) -> int:
        t = s.rollups
        stmt = (
            update(t)
            .where(
                t.c.project_id == project_id,
                t.c.resolution == resolution,
                t.c.series == bindparam("s"),
                t.c.bucket_start == bindparam("b"),
                t.c.hist == bindparam("h"),
                t.c.hist_packed.is_(None),
            )
            .values(hist_packed=bindparam("p"))
        )
        params = [
            {
                "s": r.series,
                "b": r.bucket_start,
                "h": r.hist,
                "p": histogram.Packed.from_hist(histogram.loads(r.hist)).to_bytes(),
            }
            for r in rows
        ]
        writer = await self._writable()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                await conn.execute(stmt, params)
        except Exception as exc:
            raise classify(exc) from exc
        return len(params)

    async def projects(self) -> list[str]:
        # A loose index scan: one index seek per project, where DISTINCT read every rollup
        # row (0.2 s at ten million calls).
        return [r[0] for r in await self._fetch(_PROJECTS_SQL)]

    async def health(self) -> dict[str, Any]:
        await self._fetch(select(1))
        return {"ok": True, "backend": self.dialect, "walBytes": self.wal_bytes()}

    # -- retention, erasure, periodic work ---------------------------------------------

    async def _delete_in_batches(
        self, table: Any, key_cols: list[Any], cond: list[Any], batch_size: int
    ) -> int:
        """Delete matching rows a batch per transaction, so no lock is held for long."""
        writer = await self._writable()
        total = 0
        while True:
            chosen = select(*key_cols).where(*cond).limit(batch_size)
            try:
                async with self._in_use(writer), writer.begin() as conn:
                    result = await conn.execute(delete(table).where(tuple_(*key_cols).in_(chosen)))
            except Exception as exc:
                raise classify(exc) from exc
            total += result.rowcount
            if result.rowcount < batch_size:
                return total
            await asyncio.sleep(0)  # let the recorder's writes in between batches

    async def purge(self, *, before: Mapping[str, float], batch_size: int = 5000) -> dict[str, int]:
        deleted: dict[str, int] = {}
        projects = await self._all_projects()
        for key, cutoff in before.items():
            total = 0
            if key.startswith("rollup:"):
                t = s.rollups
                keys = [t.c.project_id, t.c.resolution, t.c.series, t.c.bucket_start]
                for project in projects:
                    resolution = key.split(":", 1)[1]
                    cond = [
                        t.c.project_id == project,
                        t.c.resolution == resolution,
                        # Only buckets wholly older than the cutoff.
                        t.c.bucket_start <= cutoff - RESOLUTIONS[resolution],
                    ]
                    total += await self._delete_in_batches(t, keys, cond, batch_size)
            elif key == "claims":
                t = s.job_claims
                cond = [t.c.period_start < cutoff]
                total = await self._delete_in_batches(
                    t, [t.c.job, t.c.period_start], cond, batch_size
                )
            else:
                tables = [s.table_of(key)] + ([s.api_call_ids] if key == "api_call" else [])
                here = projects
                if EVENT_TYPES[key].series is Event.series:
                    # A kind that feeds no rollup: its projects are only in its own table.
                    t = tables[0]
                    found = await self._fetch(select(t.c.project_id).distinct())
                    here = sorted(set(projects) | {r[0] for r in found})
                for t in tables:
                    for project in here:
                        # Per project, so the (project_id, created_at) index finds the rows.
                        cond = [t.c.project_id == project, t.c.created_at < us(cutoff)]
                        total += await self._delete_in_batches(
                            t, [t.c.project_id, t.c.id], cond, batch_size
                        )
            deleted[key] = total
        return deleted

    async def _all_projects(self) -> list[str]:
        """Projects with rollups, plus those with only raw events (deployments just started)."""
        found = set(await self.projects())
        t = s.table_of("deployment")
        found.update(r[0] for r in await self._fetch(select(t.c.project_id).distinct()))
        return sorted(found)

    async def forget_user(self, user_id: str, *, batch_size: int = 5000) -> dict[str, int]:
        deleted = {}
        for kind in kinds_with_users():
            t = s.table_of(kind)
            deleted[kind] = await self._delete_in_batches(
                t, [t.c.project_id, t.c.id], [t.c.user_id == user_id], batch_size
            )
        return deleted

    async def claim(self, job: str, period_start: int, holder: str) -> bool:
        writer = await self._writable()
        t = s.job_claims
        stmt = (
            self._insert(t)
            .values(job=job, period_start=period_start, holder=holder, claimed_at=us(time.time()))
            .on_conflict_do_nothing()
            .returning(t.c.job)
        )
        try:
            async with self._in_use(writer), writer.begin() as conn:
                won = (await conn.execute(stmt)).first() is not None
        except Exception as exc:
            raise classify(exc) from exc
        return won


def _rollup_columns() -> Select[Any]:
    t = s.rollups
    # A packed histogram is read instead of the JSON one, never both.
    json_hist = case((t.c.hist_packed.is_(None), t.c.hist), else_=None)
    return select(
        t.c.series,
        t.c.bucket_start,
        t.c["count"],
        t.c.error_count,
        t.c.value_count,
        t.c.value_sum,
        t.c.value_min,
        t.c.value_max,
        t.c.hist_packed,
        json_hist,
    )


def _bucket_then_series(r: Rollup) -> tuple[int, str]:
    return r.bucket_start, r.series


def _series_total_columns() -> Select[Any]:
    t = s.rollups
    return select(
        t.c.series,
        func.sum(t.c["count"]),
        func.sum(t.c.error_count),
        func.sum(t.c.value_count),
        func.sum(t.c.value_sum),
        func.min(t.c.bucket_start),
        func.max(t.c.bucket_start),
    ).group_by(t.c.series)


def _bucket_total_columns() -> Select[Any]:
    t = s.rollups
    # Summed by the caller: with a GROUP BY on the bucket, SQLite reads through its bucket
    # index, every series of the project in the range, for the order it gives.
    return select(t.c.bucket_start, t.c["count"], t.c.error_count, t.c.value_count, t.c.value_sum)


_COLUMNS: dict[str, Callable[[], Select[Any]]] = {
    "rows": _rollup_columns,
    "sums": _series_total_columns,
    "buckets": _bucket_total_columns,
}


def _rollup_read(
    kind: str,
    project_id: str,
    resolution: str,
    start: float,
    end: float,
    series_prefix: str | tuple[str, ...],
) -> tuple[Select[Any] | CompoundSelect[Any], dict[str, Any]]:
    """A read of the rollups of a range (``kind``: ``rows``, ``sums`` per series or
    ``buckets``, sums per bucket): the statement, made once per shape, and its parameters."""
    params: dict[str, Any] = {
        "p": project_id,
        "r": resolution,
        "lo": math.ceil(start),
        "hi": math.ceil(end),
    }
    prefixes = (series_prefix,) if isinstance(series_prefix, str) else series_prefix
    if not prefixes:  # no prefix at all: no series
        return _COLUMNS[kind]().where(false()), params
    if not all(prefixes):  # "" is every series
        return _rollup_read_sql(kind, 0, 0), params
    ranges = sorted(p for p in prefixes if p not in TOTAL_SERIES)
    # A prefix inside another reads nothing more, and would read its rows twice.
    ranges = [p for i, p in enumerate(ranges) if not any(p.startswith(q) for q in ranges[:i])]
    exact = [p for p in prefixes if p in TOTAL_SERIES and not p.startswith(tuple(ranges))]
    params.update((f"x{i}", series) for i, series in enumerate(exact))
    for i, prefix in enumerate(ranges):
        params[f"s{i}"], params[f"e{i}"] = prefix, _after_prefix(prefix)
    return _rollup_read_sql(kind, len(exact), len(ranges)), params


@functools.lru_cache(maxsize=64)
def _rollup_read_sql(kind: str, exact: int, ranges: int) -> Select[Any] | CompoundSelect[Any]:
    """One SELECT per kind of series joined by UNION ALL, so each finds its rows through the
    primary key (an OR of them would not). Made once: building the expression costs more
    than running it."""
    t = s.rollups
    columns = _COLUMNS[kind]
    common = [
        t.c.project_id == bindparam("p"),
        t.c.resolution == bindparam("r"),
        t.c.bucket_start >= bindparam("lo"),
        t.c.bucket_start < bindparam("hi"),
    ]
    if not exact and not ranges:
        return columns().where(*common)
    wanted: list[Any] = [bindparam(f"x{i}") for i in range(exact)]
    branches = [columns().where(*common, t.c.series.in_(wanted))] if exact else []
    for i in range(ranges):
        found = _series_between(bindparam(f"s{i}"), bindparam(f"e{i}"), f"series_{i}")
        branches.append(columns().where(*common, t.c.series.in_(found)))
    return branches[0] if len(branches) == 1 else union_all(*branches)


def _series_between(first: Any, stop: Any, name: str) -> Select[Any]:
    """The project's series from ``first`` (inclusive) to ``stop``, by a loose index scan:
    one seek per series in the primary key ``(project_id, resolution, series,
    bucket_start)``.

    A read of a series range walks every bucket of every series in it (a year of day
    buckets, to keep a month), and the index on the bucket every series in the time range:
    given the series one by one, the database seeks each one's range of buckets. Series
    compare byte by byte (schema version 4), so a prefix's series lie between the prefix
    and :func:`_after_prefix`.
    """
    t, inner = s.rollups, s.rollups.alias()
    walk = (
        select(func.min(t.c.series).label("series"))
        .where(
            t.c.project_id == bindparam("p"),
            t.c.resolution == bindparam("r"),
            t.c.series >= first,
            t.c.series < stop,
        )
        .cte(name, recursive=True)
    )
    following = (
        select(func.min(inner.c.series))
        .where(
            inner.c.project_id == bindparam("p"),
            inner.c.resolution == bindparam("r"),
            inner.c.series > walk.c.series,
            inner.c.series < stop,
        )
        .scalar_subquery()
    )
    walk = walk.union_all(select(following).where(walk.c.series.is_not(None)))
    return select(walk.c.series).where(walk.c.series.is_not(None))


def _after_prefix(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix``, in the byte
    order of UTF-8 (that of code points)."""
    # Nothing follows the last code point: the bound comes from the characters before it.
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        raise ValueError(f"series prefix {prefix!r} has no upper bound")
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:  # surrogates are not characters UTF-8 can carry
        following = 0xE000
    return stem[:-1] + chr(following)


_PROJECTS_SQL = text(
    f"WITH RECURSIVE p(id) AS ("
    f" SELECT MIN(project_id) FROM {s.rollups.name}"
    f" UNION ALL"
    f" SELECT (SELECT MIN(project_id) FROM {s.rollups.name} WHERE project_id > p.id)"
    f" FROM p WHERE p.id IS NOT NULL"
    f") SELECT id FROM p WHERE id IS NOT NULL ORDER BY id"
)


@functools.lru_cache(maxsize=256)
def _totals_sql(windows: int) -> TextClause:
    """Sums per window in one round trip, as text: building the same expression with
    SQLAlchemy's constructs costs more than running it."""
    part = (
        'SELECT {i} AS w, COALESCE(SUM("count"), 0) AS n, COALESCE(SUM(error_count), 0) AS e,'
        " COALESCE(SUM(value_count), 0) AS vn, COALESCE(SUM(value_sum), 0) AS vs"
        f" FROM {s.rollups.name} WHERE project_id = :p AND resolution = :r AND series = :s"
        " AND bucket_start >= :lo{i} AND bucket_start < :hi{i}"
    )
    return text(" UNION ALL ".join(part.format(i=i) for i in range(windows)))
