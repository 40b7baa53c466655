"""Schema versions: create a fresh schema, refuse a mismatched one, or migrate it."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection

from asgimon.errors import SchemaVersionError
from asgimon.events import BUILT_IN_KINDS

from . import tables as s
from .rows import us


async def schema_version(conn: AsyncConnection) -> int | None:
    has_table = await conn.run_sync(lambda sync: inspect(sync).has_table(s.schema_version.name))
    if not has_table:
        return None
    found = (await conn.execute(select(s.schema_version.c.version))).scalar_one_or_none()
    return None if found is None else int(found)


async def prepare_schema(
    conn: AsyncConnection, dialect: str, insert: Any, *, upgrade: bool
) -> list[int]:
    """Create a fresh schema, or check (and with ``upgrade``, migrate) an existing one."""
    if dialect == "postgresql":
        # Workers starting together on an empty database take turns here.
        await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(72217001)")
    found = await schema_version(conn)
    added = [t for kind, t in s.event_tables().items() if kind not in BUILT_IN_KINDS]
    if found is None:
        await conn.run_sync(s.metadata.create_all)
        row = {"id": 1, "version": s.SCHEMA_VERSION, "applied_at": us(time.time())}
        await conn.execute(insert(s.schema_version).values(**row).on_conflict_do_nothing())
        return []
    if found > s.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"database schema version {found} is newer than this asgimon's "
            f"{s.SCHEMA_VERSION}: upgrade the asgimon package"
        )
    pending = range(found + 1, s.SCHEMA_VERSION + 1)
    # What changes nothing here is no reason to stop: it is applied now.
    trivial = all(
        version in s.ADDITIVE or s.ONLY_ON.get(version, dialect) != dialect for version in pending
    )
    if found < s.SCHEMA_VERSION and not upgrade and not trivial:
        raise SchemaVersionError(
            f"database schema version {found} is older than this asgimon's "
            f"{s.SCHEMA_VERSION}: run `asgimon db upgrade`"
        )
    if added:
        # Kinds registered by the host or a plugin: their tables, where still missing.
        await conn.run_sync(lambda sync: s.metadata.create_all(sync, tables=added))
    applied = []
    for version in pending:
        await conn.run_sync(s.MIGRATIONS[version])
        applied.append(version)
    if applied:
        await conn.execute(
            s.schema_version.update().values(version=applied[-1], applied_at=us(time.time()))
        )
    return applied
