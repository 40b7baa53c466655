"""Writing a batch: events inserted once, their rollups merged by UPSERT, in slices."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from asgimon._slices import Slicer, chunks
from asgimon.errors import (
    StorageUnavailable,
)
from asgimon.events import Event
from asgimon.pipeline.counted import Counted
from asgimon.rollups import Aggregator
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.storage.base import WriteResult
from asgimon.storage.sql import tables as s
from asgimon.storage.sql.engine import (
    rollup_upsert,
)
from asgimon.storage.sql.failures import classify
from asgimon.storage.sql.rows import rollup_row, row_maker, us

from .base import (
    DRIVER_ROWS_PER_CALL,
    ROWS_PER_CALL,
    WAL_CHECKPOINT_BYTES,
    SQLBase,
    _PlainInsert,
    log,
)


class Writes(SQLBase):
    async def write(
        self,
        events: Sequence[Event],
        *,
        sampling: RawSampling = KEEP_ALL,
        counted: Counted | None = None,
    ) -> WriteResult:
        if not events and counted is None:
            return WriteResult(0, 0)
        await self._check_file()
        writer = await self._writable()
        received = us(time.time())
        by_kind: dict[str, list[Event]] = {}
        for ev in events:
            by_kind.setdefault(ev.kind, []).append(ev)
        fresh: list[Event] = []
        added = 0
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
                        if counted is not None and await self._mark(conn, counted, slicer):
                            added = counted.count
                            await slicer.each(agg.merge_minutes, counted.minutes)
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
        return WriteResult(len(fresh), len(events) - len(fresh), fresh, added)

    async def _mark(self, conn: AsyncConnection, counted: Counted, slicer: Slicer) -> bool:
        """Store the counted batch's marker; False if it was there (its deltas are in)."""
        t = s.api_call_ids
        stmt = self._insert(t).on_conflict_do_nothing(
            index_elements=[c.name for c in t.primary_key.columns]
        )
        row = {"project_id": counted.project_id, "created_at": us(counted.at), "id": counted.marker}
        slicer.mark()
        result = await conn.execute(stmt, row)
        slicer.restart()
        return bool(result.rowcount == 1)

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
