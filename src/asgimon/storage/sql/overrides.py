"""Per-key rate-limit overrides in SQL: one row per key, replaced in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from asgimon.ratelimit.overrides import Override
from asgimon.storage.sql import tables as s
from asgimon.storage.sql.failures import classify

from .base import SQLBase
from .rows import us

_INSTANTS = ("created_at", "expires_at")


def _from_row(row: Any) -> Override:
    data = dict(row._mapping)
    for name in _INSTANTS:
        if data[name] is not None:
            data[name] = data[name] / 1_000_000
    return Override.from_dict(data)


class Overrides(SQLBase):
    async def rate_limit_overrides(self) -> list[Override]:
        t = s.rate_limit_overrides
        return [_from_row(r) for r in await self._fetch(select(t).order_by(t.c.created_at))]

    async def set_rate_limit_override(self, override: Override) -> None:
        row = override.to_dict()
        for name in _INSTANTS:
            if row[name] is not None:
                row[name] = us(row[name])
        t = s.rate_limit_overrides
        writer = await self._writable()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                await conn.execute(t.delete().where(t.c.key == override.key))
                await conn.execute(t.insert().values(row))
        except Exception as exc:
            raise classify(exc) from exc

    async def remove_rate_limit_override(self, key: str) -> bool:
        t = s.rate_limit_overrides
        writer = await self._writable()
        try:
            async with self._in_use(writer), writer.begin() as conn:
                gone = await conn.execute(t.delete().where(t.c.key == key))
        except Exception as exc:
            raise classify(exc) from exc
        return bool(gone.rowcount)
