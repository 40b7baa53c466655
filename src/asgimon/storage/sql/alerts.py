"""Alert records and history in SQL.

A record's write reads the held version under the writer's lock (``BEGIN IMMEDIATE`` on
SQLite, ``FOR UPDATE`` on PostgreSQL) and writes the next one in the same transaction, so
of two workers writing on the same version read, exactly one succeeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from asgimon._slices import chunks
from asgimon.alerts.records import HistoryEntry, Record
from asgimon.storage.sql import tables as s
from asgimon.storage.sql.failures import classify

from .base import SQLBase
from .rows import us

_IN_CLAUSE = 500


def _record(row: Any) -> Record:
    return Record(
        kind=row.kind,
        id=row.id,
        project_id=row.project_id,
        body=json.loads(row.body),
        version=int(row.version),
        updated_at=row.updated_at / 1_000_000,
    )


def _entry(row: Any) -> HistoryEntry:
    return HistoryEntry(
        id=row.id,
        project_id=row.project_id,
        rule_id=row.rule_id,
        at=row.at / 1_000_000,
        kind=row.kind,
        body=json.loads(row.body),
    )


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


class Alerts(SQLBase):
    async def alert_records(
        self, kind: str, *, project_id: str | None = None, ids: Sequence[str] | None = None
    ) -> list[Record]:
        t = s.alerts
        base = select(t).where(t.c.kind == kind)
        if project_id is not None:
            base = base.where(t.c.project_id == project_id)
        base = base.order_by(t.c.updated_at, t.c.id)
        if ids is None:
            return [_record(r) for r in await self._fetch(base)]
        out: list[Record] = []
        for run in chunks(list(dict.fromkeys(ids)), _IN_CLAUSE):
            out.extend(map(_record, await self._fetch(base.where(t.c.id.in_(run)))))
        return out

    async def put_alert_record(self, record: Record, *, expect: int | None = None) -> Record | None:
        t = s.alerts
        where = (t.c.kind == record.kind, t.c.id == record.id)
        body = _json(record.body)
        writer = await self._writable()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                stmt = select(t.c.version).where(*where)
                if self.dialect == "postgresql":
                    stmt = stmt.with_for_update()
                held = (await conn.execute(stmt)).scalar_one_or_none()
                version = 0 if held is None else int(held)
                if expect is not None and expect != version:
                    return None
                now = time.time()
                values = {
                    "project_id": record.project_id,
                    "version": version + 1,
                    "updated_at": us(now),
                    "body": body,
                }
                if held is None:
                    # Two first writers meet at the primary key: the second one's insert
                    # does nothing, and it reads as having lost.
                    stmt_in = self._insert(t).values(kind=record.kind, id=record.id, **values)
                    done = await conn.execute(stmt_in.on_conflict_do_nothing())
                    if not done.rowcount:
                        return None
                else:
                    await conn.execute(t.update().where(*where).values(values))
        except Exception as exc:
            raise classify(exc) from exc
        return Record(record.kind, record.id, record.project_id, record.body, version + 1, now)

    async def delete_alert_record(self, kind: str, record_id: str) -> bool:
        t = s.alerts
        writer = await self._writable()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                gone = await conn.execute(t.delete().where(t.c.kind == kind, t.c.id == record_id))
        except Exception as exc:
            raise classify(exc) from exc
        return bool(gone.rowcount)

    async def add_alert_history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "id": e.id,
                "project_id": e.project_id,
                "rule_id": e.rule_id,
                "at": us(e.at),
                "kind": e.kind,
                "body": _json(e.body),
            }
            for e in entries
        ]
        writer = await self._writable()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                await conn.execute(self._insert(s.alert_history).on_conflict_do_nothing(), rows)
        except Exception as exc:
            raise classify(exc) from exc

    async def alert_history(
        self,
        project_id: str,
        *,
        rule_id: str | None = None,
        kinds: Sequence[str] | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]:
        t = s.alert_history
        stmt = select(t).where(t.c.project_id == project_id)
        if rule_id is not None:
            stmt = stmt.where(t.c.rule_id == rule_id)
        if kinds is not None:
            stmt = stmt.where(t.c.kind.in_(list(kinds)))
        if before is not None:
            stmt = stmt.where(t.c.at < us(before))
        stmt = stmt.order_by(t.c.at.desc(), t.c.id.desc()).limit(limit)
        return [_entry(r) for r in await self._fetch(stmt)]
