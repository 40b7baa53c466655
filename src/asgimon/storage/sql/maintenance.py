"""Compaction, retention, erasure and the claims of periodic jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    bindparam,
    delete,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Row

from asgimon import histogram
from asgimon.events import EVENT_TYPES, Event, kinds_with_users
from asgimon.pipeline.counted import MARKER_PREFIX, MARKER_TTL_S
from asgimon.rollups import RESOLUTIONS
from asgimon.storage.sql import tables as s
from asgimon.storage.sql.failures import classify
from asgimon.storage.sql.rows import us

from .base import COMPACTION_LOOKBACK_S, FULL_COMPACTION_EVERY_S
from .reads import Reads


class Maintenance(Reads):
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
            elif key == "alert_history":
                t = s.alert_history
                cond = [t.c.at < us(cutoff)]
                total = await self._delete_in_batches(t, [t.c.id], cond, batch_size)
            elif key == "error_groups":
                t = s.error_groups
                cond = [t.c.last_seen < us(cutoff)]
                total = await self._delete_in_batches(
                    t, [t.c.project_id, t.c.fingerprint], cond, batch_size
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
                        # Rows chosen by their whole primary key, which on the ids table
                        # includes the time: (project_id, id) alone would scan the project.
                        key_cols = list(t.primary_key.columns)
                        total += await self._delete_in_batches(t, key_cols, cond, batch_size)
                if key == "api_call":
                    total += await self._purge_markers(here, cutoff, batch_size)
            deleted[key] = total
        return deleted

    async def _purge_markers(self, projects: list[str], cutoff: float, batch_size: int) -> int:
        """Counted batches' markers outlive their use within a day, whatever the retention."""
        t = s.api_call_ids
        until = us(max(cutoff, time.time() - MARKER_TTL_S))
        total = 0
        for project in projects:
            cond = [
                t.c.project_id == project,
                t.c.created_at < until,
                t.c.id.startswith(MARKER_PREFIX, autoescape=True),
            ]
            key_cols = list(t.primary_key.columns)
            total += await self._delete_in_batches(t, key_cols, cond, batch_size)
        return total

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
