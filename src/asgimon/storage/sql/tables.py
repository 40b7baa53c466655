"""The SQL schema: one table per event kind, the rollups, and the schema version.

Timestamps are integers of epoch microseconds (``created_at``: when the event happened;
``received_at``: when asgimon stored it, so retention cannot be gamed by client clocks).
Every event table has the primary key ``(project_id, id)``, which makes inserts idempotent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from asgimon.events import EVENT_TYPES, Event
from asgimon.fields import Field, declared
from asgimon.histogram import loads
from asgimon.rollups import Rollup
from asgimon.series import API_TOTAL, ERROR_TOTAL, FUNCTION_TOTAL

from .rows import rollup_row

SCHEMA_VERSION = 8
PREFIX = "asgimon_"

metadata = MetaData()

SERIES_TYPE = String(512).with_variant(String(512, collation="C"), "postgresql")


# The API calls that sampling (asgimon.sampling) did not keep raw: only what finds a retry of
# one again, keyed by time so that the purge deletes a range of the key.
api_call_ids = Table(
    PREFIX + "api_call_ids",
    metadata,
    Column("project_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("id", String(64), nullable=False),
    PrimaryKeyConstraint("project_id", "created_at", "id"),
    sqlite_with_rowid=False,
)

rollups = Table(
    PREFIX + "rollups",
    metadata,
    Column("project_id", String(128), nullable=False),
    Column("resolution", String(8), nullable=False),
    # Byte order, so a series prefix is a range of the primary key. SQLite compares text
    # bytewise already; PostgreSQL's default collation is the database's locale, under
    # which neither ``LIKE 'x:%'`` nor ``>= 'x:' AND < 'x;'`` can use the index.
    Column("series", SERIES_TYPE, nullable=False),
    Column("bucket_start", BigInteger, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("error_count", BigInteger, nullable=False),
    Column("value_count", BigInteger, nullable=False),
    Column("value_sum", Float, nullable=False),
    Column("value_min", Float),
    Column("value_max", Float),
    Column("hist", Text, nullable=False),
    # The histogram packed for fast reads (asgimon.histogram.Packed), written for closed
    # hour and day buckets by the compaction job; any later merge into the row clears it.
    Column("hist_packed", LargeBinary),
    PrimaryKeyConstraint("project_id", "resolution", "series", "bucket_start"),
)
Index(
    f"ix_{PREFIX}rollups_range", rollups.c.project_id, rollups.c.resolution, rollups.c.bucket_start
)

schema_version = Table(
    PREFIX + "schema_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
    Column("applied_at", BigInteger, nullable=False),
)

job_claims = Table(
    PREFIX + "job_claims",
    metadata,
    Column("job", String(100), nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("holder", String(200), nullable=False),
    Column("claimed_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("job", "period_start"),
)

# Each error group's lifecycle (asgimon.errortracking.state.GroupState), one row per group.
error_groups = Table(
    PREFIX + "error_groups",
    metadata,
    Column("project_id", String(128), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("message", Text, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("first_release", String(128)),
    Column("last_release", String(128)),
    Column("resolved_at", BigInteger),
    Column("ignore_until", BigInteger),
    Column("ignore_count", BigInteger),
    Column("ignored_seen", BigInteger, nullable=False),
    Column("regressions", Integer, nullable=False),
    Column("regressed_at", BigInteger),
    Column("changed_at", BigInteger),
    Column("changed_by", String(200)),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("project_id", "fingerprint"),
)
Index(f"ix_{PREFIX}error_groups_last_seen", error_groups.c.last_seen)

# Per-key limits of the host's rate limit (asgimon.ratelimit.overrides), read by every worker.
rate_limit_overrides = Table(
    PREFIX + "rate_limit_overrides",
    metadata,
    Column("key", String(64), primary_key=True, autoincrement=False),
    Column("subject", String(400), nullable=False),
    Column("rate", String(200), nullable=False),
    Column("note", String(500), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(200)),
    Column("expires_at", BigInteger),
)

# Alert rules, their states and silences (asgimon.alerts.records.Record): a JSON body under
# a kind and an id, with the version that conditional writes compare.
alerts = Table(
    PREFIX + "alerts",
    metadata,
    Column("kind", String(16), nullable=False),
    Column("id", String(64), nullable=False),
    Column("project_id", String(128), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    PrimaryKeyConstraint("kind", "id"),
    Index(PREFIX + "alerts_project", "kind", "project_id"),
)

# Every transition, delivery outcome and in-app notification, appended once each.
alert_history = Table(
    PREFIX + "alert_history",
    metadata,
    Column("id", String(64), primary_key=True, autoincrement=False),
    Column("project_id", String(128), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("body", Text, nullable=False),
    Index(PREFIX + "alert_history_project_at", "project_id", "at"),
    Index(PREFIX + "alert_history_rule_at", "rule_id", "at"),
    Index(PREFIX + "alert_history_at", "at"),  # the purge's
)

_SQL_TYPES: dict[str, Any] = {
    "long_text": Text,
    "small_int": SmallInteger,
    "big_int": BigInteger,
    "float": Float,
    "bool": Boolean,
    "instant": BigInteger,  # epoch microseconds
    "json": Text,
}


def _column(f: Field) -> Column[Any]:
    kind = f.spec.kind
    sql_type = String(kind.length) if kind.name == "text" else _SQL_TYPES[kind.name]
    return Column(f.name, sql_type, nullable=f.optional)


def _event_table(cls: type[Event]) -> Table:
    """An event kind's table, from the fields its class declares."""
    fields = declared(cls)
    table = Table(
        PREFIX + cls.table,
        metadata,
        Column("id", String(64), nullable=False),
        Column("project_id", String(128), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("received_at", BigInteger, nullable=False),
        *map(_column, fields),
        PrimaryKeyConstraint("project_id", "id"),
    )
    name = cls.table
    Index(f"ix_{PREFIX}{name}_project_created", table.c.project_id, table.c.created_at.desc())
    for f in fields:
        if f.spec.indexed:
            Index(f"ix_{PREFIX}{name}_{f.name}_created", table.c[f.name], table.c.created_at.desc())
    return table


_tables: dict[str, Table] = {}


def table_of(kind: str) -> Table:
    """The table of a registered event kind (built on first use: a kind registered after
    import gets its table too). KeyError for a kind nobody registered."""
    table = _tables.get(kind)
    if table is None:
        table = _tables[kind] = _event_table(EVENT_TYPES[kind])
    return table


def event_tables() -> dict[str, Table]:
    """Every registered kind's table, by kind: call it before creating the schema."""
    return {kind: table_of(kind) for kind in EVENT_TYPES}


event_tables()  # the built-in kinds' tables, in metadata from import on


def _v2_job_claims(conn: Connection) -> None:
    """Version 2: the table periodic jobs claim their periods in, so one worker runs each."""
    job_claims.create(conn, checkfirst=True)


def _v3_packed_histograms(conn: Connection) -> None:
    """Version 3: closed buckets' histograms kept packed beside the JSON, for fast reads;
    build and error series renamed to the parts the analytics API breaks them down by."""
    table = conn.dialect.identifier_preparer.format_table(rollups)
    kind = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN hist_packed {kind}")
    # The series that gained parts: builds by framework, errors by group and type.
    conn.exec_driver_sql(
        f"UPDATE {table} SET series = series || ':-' "
        "WHERE series LIKE 'build:%' AND series NOT LIKE 'build:%:%'"
    )
    conn.exec_driver_sql(
        f"UPDATE {table} SET series = series || ':-:unknown' "
        "WHERE series LIKE 'error:%' AND series NOT LIKE 'error:%:%'"
    )
    _add_project_totals(conn)


def _add_project_totals(conn: Connection) -> None:
    """The project totals (``all:api``, ``all:fn``, ``all:error``), which version 3 reads
    for headline figures, summed from the series they total over every bucket before it."""
    t = rollups
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(t)
    for total, prefix in ((API_TOTAL, "api:"), (FUNCTION_TOTAL, "fn:"), (ERROR_TOTAL, "error:")):
        of_prefix = t.c.series.like(prefix + "%")
        pairs = conn.execute(select(t.c.project_id, t.c.resolution).where(of_prefix).distinct())
        for project, resolution in pairs.all():
            here = [t.c.project_id == project, t.c.resolution == resolution, of_prefix]
            # A few hundred buckets at a time, however large the table.
            after = -(2**62)
            while buckets := _next_buckets(conn, [*here, t.c.bucket_start > after]):
                window = [*here, t.c.bucket_start.between(buckets[0], buckets[-1])]
                summed = _summed(conn, Rollup(project, total, resolution, 0), window)
                conn.execute(insert.on_conflict_do_nothing(), [rollup_row(r) for r in summed])
                after = buckets[-1]


def _next_buckets(conn: Connection, cond: list[Any]) -> list[int]:
    stmt = select(rollups.c.bucket_start).where(*cond).distinct()
    return list(conn.execute(stmt.order_by(rollups.c.bucket_start).limit(500)).scalars())


def _summed(conn: Connection, like: Rollup, cond: list[Any]) -> list[Rollup]:
    """The rollups under ``cond`` merged per bucket, into rollups of ``like``'s series."""
    t = rollups
    sums: dict[int, Rollup] = {}
    stmt = select(
        t.c.bucket_start,
        t.c["count"],
        t.c.error_count,
        t.c.value_count,
        t.c.value_sum,
        t.c.value_min,
        t.c.value_max,
        t.c.hist,
    ).where(*cond)
    for bucket, *figures, hist in conn.execute(stmt):
        part = Rollup(like.project_id, like.series, like.resolution, bucket, *figures)
        part.hist = loads(hist)
        into = sums.get(bucket)
        if into is None:
            sums[bucket] = part
        else:
            into.merge(part)
    return list(sums.values())


def _v4_series_byte_order(conn: Connection) -> None:
    """Version 4: the rollups' series compared byte by byte, so a prefix is a key range."""
    if conn.dialect.name == "postgresql":
        table = conn.dialect.identifier_preparer.format_table(rollups)
        # Rebuilds the primary key (not the table: the type stays), under an exclusive lock.
        conn.exec_driver_sql(
            f'ALTER TABLE {table} ALTER COLUMN series TYPE VARCHAR(512) COLLATE "C"'
        )


def _v5_sampled_api_call_ids(conn: Connection) -> None:
    """Version 5: the ids of the API calls not kept raw, so that a retry of one is found."""
    api_call_ids.create(conn, checkfirst=True)


def _v6_error_groups(conn: Connection) -> None:
    """Version 6: error groups' lifecycle, and each error's chain of frames."""
    error_groups.create(conn, checkfirst=True)
    errors = table_of("error")
    if "exception" not in {c["name"] for c in inspect(conn).get_columns(errors.name)}:
        name = conn.dialect.identifier_preparer.format_table(errors)
        conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN exception TEXT")


def _v7_rate_limits(conn: Connection) -> None:
    """Version 7: the host's rate-limit refusals, and per-key overrides of its limits."""
    table_of("ratelimit").create(conn, checkfirst=True)
    rate_limit_overrides.create(conn, checkfirst=True)


def _v8_alerts(conn: Connection) -> None:
    """Version 8: alert rules, states, silences and their history."""
    alerts.create(conn, checkfirst=True)
    alert_history.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    2: _v2_job_claims,
    3: _v3_packed_histograms,
    4: _v4_series_byte_order,
    5: _v5_sampled_api_call_ids,
    6: _v6_error_groups,
    7: _v7_rate_limits,
    8: _v8_alerts,
}
"""Version N's migration takes a database from N - 1 to N. A fresh database is created at
the latest version directly."""

ONLY_ON: dict[int, str] = {4: "postgresql"}
"""Migrations that change one kind of database only. Where they change nothing they are
applied at start, without waiting for ``asgimon db upgrade``."""

ADDITIVE = frozenset({5, 6, 7, 8})
"""Migrations that only add what nothing older reads (a table, a nullable column): applied
at start too."""
