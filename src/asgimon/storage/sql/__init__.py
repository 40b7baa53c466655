"""The SQL store on SQLAlchemy Core (async): SQLite through aiosqlite, PostgreSQL through asyncpg.

Writes are batched, one transaction per batch; on SQLite every write transaction is
``BEGIN IMMEDIATE`` (a deferred one that later upgrades to a write lock fails with
``database is locked`` under concurrent writers instead of waiting), in WAL mode with a busy
timeout, so several worker processes can share one file. Inserts are idempotent on
``(project_id, id)`` and only the rows actually inserted feed the rollups, which are merged by
UPSERT, histograms included, so a retried batch or a second worker never double counts.
"""

from __future__ import annotations

from .alerts import Alerts
from .base import DRIVER_ROWS_PER_CALL, ROWS_PER_CALL
from .groups import Groups
from .maintenance import Maintenance
from .overrides import Overrides
from .writes import Writes

__all__ = ["DRIVER_ROWS_PER_CALL", "ROWS_PER_CALL", "SQLStorage"]


class SQLStorage(Writes, Groups, Overrides, Alerts, Maintenance):
    """SQLite or PostgreSQL, chosen by URL.

    >>> storage = SQLStorage("sqlite:///asgimon.db")
    >>> storage = SQLStorage("postgresql://user@127.0.0.1/app")    # pip install 'asgimon[postgres]'

    ``on_connect`` runs on every new DB-API connection (after asgimon's own set-up); tests
    use it to inject faults such as ``PRAGMA max_page_count``.
    """
