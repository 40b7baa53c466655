"""Error groups' lifecycle in SQL: one row per group, changed in one write transaction.

The rows asked for are first inserted where missing (version 0, which reads as "nothing
held"), then read under the writer's lock (``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE``
on PostgreSQL), so two workers changing one group take turns and neither change is lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from asgimon._slices import chunks
from asgimon.errortracking.state import GroupState
from asgimon.storage.base import GroupChange
from asgimon.storage.sql import tables as s
from asgimon.storage.sql.failures import classify

from .base import SQLBase

_INSTANTS = ("first_seen", "last_seen", "resolved_at", "ignore_until", "regressed_at", "changed_at")
_IN_CLAUSE = 500  # fingerprints per IN (...): well under every driver's parameter limit


def _to_row(state: GroupState) -> dict[str, Any]:
    row = state.to_dict()
    for name in _INSTANTS:
        if row[name] is not None:
            row[name] = round(row[name] * 1_000_000)
    return row


def _from_row(row: Any) -> GroupState:
    data = dict(row._mapping)
    for name in _INSTANTS:
        if data[name] is not None:
            data[name] = data[name] / 1_000_000
    return GroupState.from_dict(data)


class Groups(SQLBase):
    async def error_groups(
        self, project_id: str, fingerprints: Sequence[str] | None = None
    ) -> list[GroupState]:
        t = s.error_groups
        base = select(t).where(t.c.project_id == project_id, t.c.version > 0)
        if fingerprints is None:
            return [_from_row(r) for r in await self._fetch(base)]
        out: list[GroupState] = []
        for run in chunks(list(fingerprints), _IN_CLAUSE):
            rows = await self._fetch(base.where(t.c.fingerprint.in_(run)))
            out.extend(map(_from_row, rows))
        return out

    async def change_error_groups(
        self, project_id: str, fingerprints: Sequence[str], change: GroupChange
    ) -> list[GroupState]:
        wanted = sorted(set(fingerprints))  # one lock order for every writer
        if not wanted:
            return []
        writer = await self._writable()
        t = s.error_groups
        try:
            async with self._in_use(writer), writer.begin() as conn:
                placeholders = [
                    _to_row(GroupState(project_id=project_id, fingerprint=fp)) for fp in wanted
                ]
                await conn.execute(self._insert(t).on_conflict_do_nothing(), placeholders)
                held: dict[str, GroupState | None] = dict.fromkeys(wanted)
                for run in chunks(wanted, _IN_CLAUSE):
                    stmt = (
                        select(t)
                        .where(t.c.project_id == project_id, t.c.fingerprint.in_(run))
                        .order_by(t.c.fingerprint)  # locked in one order by every writer
                    )
                    if self.dialect == "postgresql":
                        stmt = stmt.with_for_update()
                    for found in (await conn.execute(stmt)).fetchall():
                        state = _from_row(found)
                        held[state.fingerprint] = state if state.version > 0 else None
                written = []
                for state in change(held):
                    if state.fingerprint not in held:
                        raise ValueError(f"{state.fingerprint!r} was not asked for")
                    before = held[state.fingerprint]
                    state = dataclasses.replace(
                        state, version=(before.version if before else 0) + 1
                    )
                    values = _to_row(state)
                    del values["project_id"], values["fingerprint"]
                    await conn.execute(
                        t.update()
                        .where(t.c.project_id == project_id, t.c.fingerprint == state.fingerprint)
                        .values(values)
                    )
                    written.append(state)
        except Exception as exc:
            raise classify(exc) from exc
        return written
