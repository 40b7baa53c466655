"""Database query timing: statements a request runs through SQLAlchemy (sync and async
engines, SQLite and PostgreSQL), normalised, timed and attributed to the request's endpoint;
N+1 patterns flagged; shown by the performance API and pages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import Event, MemoryStorage, Monitor, Storage
from asgimon.context import close_request, open_request
from asgimon.events import EVENT_TYPES, ApiCall
from asgimon.plugins import queries
from asgimon.plugins.queries import (
    MAX_PER_REQUEST,
    MAX_STATEMENT,
    OTHER,
    QUERIES,
    QueryEvents,
    QueryTiming,
    normalise,
    record_query,
    series_parts,
)
from asgimon.plugins.sqlalchemy import instrument, uninstrument
from asgimon.storage.sql import SQLStorage

from .conftest import PG_URL, pg_schema

API = "/analytics/api"
ITEM = "SELECT name FROM items WHERE id = :id"
ITEM_SHAPE = "SELECT name FROM items WHERE id = ?"
BROKEN = "SELECT nope FROM missing WHERE id = 5"
SECRET = "SELECT name FROM items WHERE name <> 'hunter2-secret' AND id <> 424242 AND id IN (7, 8)"


class Database(Protocol):
    """The host app's database, as its endpoints use it."""

    async def run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]: ...


class SyncDatabase:
    """A sync engine, run off the loop as Starlette runs a sync endpoint (the context copied)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        with self.engine.connect() as conn:
            return [conn.execute(text(sql), params).scalar() for sql, params in statements]

    async def run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        return await run_in_threadpool(self._run, statements)


class AsyncDatabase:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        async with self.engine.connect() as conn:
            return [(await conn.execute(text(sql), params)).scalar() for sql, params in statements]


def host_app(db: Database) -> Starlette:
    async def item(request: Request) -> Response:
        (name,) = await db.run([(ITEM, {"id": int(request.path_params["item_id"])})])
        return PlainTextResponse(str(name))

    async def listing(request: Request) -> Response:
        # One statement per row: the N+1 pattern.
        names = await db.run([(ITEM, {"id": i}) for i in range(1, 21)])
        return PlainTextResponse(",".join(map(str, names)))

    async def secret(request: Request) -> Response:
        await db.run([(SECRET, {})])
        return PlainTextResponse("ok")

    async def broken(request: Request) -> Response:
        try:
            await db.run([(BROKEN, {})])
        except OperationalError:
            return PlainTextResponse("no such table")
        return PlainTextResponse("found")

    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/items", listing),
            Route("/secret", secret),
            Route("/broken", broken),
            Route("/health", secret),  # excluded by default: not a recorded request
        ]
    )


def monitor_of(storage: Storage | None = None) -> Monitor:
    return Monitor(
        storage=storage or MemoryStorage(),
        flush_interval=0.01,
        api_rate_limit=None,
        rate_limit_enabled=False,
        api_call_sample_rate=1.0,  # every request's raw row, to compare with
    )


async def drained(monitor: Monitor) -> None:
    """The requests stored, the statements they ran turned into events, and those stored."""
    await monitor.recorder.flush()
    assert await monitor.recorder.sinks.settled()
    await monitor.recorder.flush()


async def timings(storage: Storage) -> list[QueryTiming]:
    found = [ev for ev in await storage.events(queries.KIND) if isinstance(ev, QueryTiming)]
    return sorted(found, key=lambda ev: (ev.endpoint, ev.metric))


def seed(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(
            text("INSERT INTO items (id, name) VALUES (:id, :name)"),
            [{"id": i, "name": f"item-{i}"} for i in range(1, 21)],
        )


@pytest.fixture(params=["sync", "async"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The host's SQLite file, through a sync engine or an async one (aiosqlite)."""
    path = tmp_path / "app.db"
    sync = create_engine(f"sqlite:///{path}")
    seed(sync)  # before instrumenting, and outside any request anyway
    if request.param == "sync":
        instrument(sync)
        yield SyncDatabase(sync)
        uninstrument(sync)
    else:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        instrument(engine)
        yield AsyncDatabase(engine)
        uninstrument(engine)
        await engine.dispose()
    sync.dispose()


async def opened(monitor: Monitor, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=monitor.wrap(host_app(db)))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


# -- through a real app ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_request_s_statements_are_attributed_to_its_endpoint(
    db: Database, backend: str, tmp_path: Path
) -> None:
    storage = MemoryStorage() if backend == "memory" else SQLStorage(f"sqlite:///{tmp_path}/m.db")
    monitor = monitor_of(storage)
    async for client in opened(monitor, db):
        answer = await client.get("/items/7", headers={"x-request-id": "req-7"})
        assert answer.text == "item-7"
        await drained(monitor)
        performance = await client.get(f"{API}/performance/default", params={"range": "1h"})
        # Read while the monitor holds the store open.
        (call,) = await storage.events("api_call")
        (timing,) = await timings(storage)
    assert isinstance(call, ApiCall)
    assert (timing.endpoint, timing.method) == ("/items/{item_id}", "GET")
    assert (timing.api_call_id, timing.request_id) == (call.id, "req-7")
    assert timing.statement == ITEM_SHAPE
    assert timing.database.endswith("app.db")
    assert (timing.metric, timing.calls, timing.n_plus_one) == ("time", 1, False)
    assert 0 < timing.total_ms == timing.max_ms < call.duration_ms
    assert timing.timestamp == call.timestamp  # in the request's bucket

    assert performance.status_code == 200, performance.text
    (row,) = performance.json()["queries"]
    assert row == {
        "endpoint": "/items/{item_id}",
        "method": "GET",
        "statementHash": timing.statement_hash,
        "statement": ITEM_SHAPE,
        "database": timing.database,
        "calls": 1,
        "requests": 1,
        "totalMs": pytest.approx(timing.total_ms),
        "avgMs": pytest.approx(timing.total_ms),
        "maxRequestMs": pytest.approx(timing.total_ms),
        "nPlusOneRequests": 0,
    }


async def test_a_loop_of_single_row_selects_is_flagged_n_plus_one(db: Database) -> None:
    monitor = monitor_of()
    async for client in opened(monitor, db):
        assert (await client.get("/items")).status_code == 200
        assert (await client.get("/items/3")).status_code == 200
        await drained(monitor)
        answer = await client.get(f"{API}/performance/default", params={"range": "1h"})
        page = await client.get("/analytics/performance", params={"range": "1h"})
        endpoint_page = await client.get(
            "/analytics/performance/endpoint",
            params={"method": "GET", "endpoint": "/items", "range": "1h"},
        )
    found = await timings(monitor.storage)
    loop = [ev for ev in found if ev.endpoint == "/items"]
    assert [(ev.metric, ev.calls, ev.n_plus_one) for ev in loop] == [
        ("repeats", 20, True),
        ("time", 20, True),
    ]
    (record,) = [ev for ev in loop if ev.metric == "time"]
    assert record.max_ms <= record.total_ms
    assert record.total_ms >= 20 * 0.001  # each statement measured, none zero

    assert answer.status_code == 200, answer.text
    rows = {r["endpoint"]: r for r in answer.json()["queries"]}
    assert set(rows) == {"/items", "/items/{item_id}"}
    n_plus_one = rows["/items"]
    assert (n_plus_one["calls"], n_plus_one["requests"], n_plus_one["nPlusOneRequests"]) == (
        20,
        1,
        1,
    )
    assert n_plus_one["statement"] == ITEM_SHAPE
    assert n_plus_one["avgMs"] == pytest.approx(n_plus_one["totalMs"] / 20)
    assert n_plus_one["maxRequestMs"] == pytest.approx(n_plus_one["totalMs"])
    single = rows["/items/{item_id}"]
    assert (single["calls"], single["nPlusOneRequests"]) == (1, 0)
    # The same statement on both endpoints: one hash, two rows.
    assert single["statementHash"] == n_plus_one["statementHash"]

    for shown in (page, endpoint_page):
        assert shown.status_code == 200, shown.text
        assert "Database queries" in shown.text
        assert ITEM_SHAPE in shown.text
        assert "N+1 in 1" in shown.text
    assert "/items/{item_id}" not in endpoint_page.text.split("Database queries")[1]


async def test_literals_never_reach_storage_nor_the_api(db: Database) -> None:
    monitor = monitor_of()
    async for client in opened(monitor, db):
        await client.get("/secret")
        await drained(monitor)
        answer = await client.get(f"{API}/performance/default", params={"range": "1h"})
        listed = await client.get(f"{API}/events/default", params={"kind": queries.KIND})
    (timing,) = await timings(monitor.storage)
    assert timing.statement == "SELECT name FROM items WHERE name <> ? AND id <> ? AND id IN (?)"
    for shown in (repr(timing), answer.text, listed.text):
        assert "hunter2" not in shown
        assert "424242" not in shown
    assert listed.status_code == 200, listed.text
    assert [e["statement"] for e in listed.json()["events"]] == [timing.statement]


async def test_a_statement_that_fails_is_timed_and_its_error_goes_on(db: Database) -> None:
    monitor = monitor_of()
    async for client in opened(monitor, db):
        assert (await client.get("/broken")).text == "no such table"
        await drained(monitor)
    (timing,) = await timings(monitor.storage)
    assert (timing.endpoint, timing.statement) == (
        "/broken",
        "SELECT nope FROM missing WHERE id = ?",
    )
    assert (timing.calls, timing.total_ms > 0) == (1, True)


async def test_statements_outside_a_request_record_nothing(db: Database) -> None:
    monitor = monitor_of()
    async for client in opened(monitor, db):
        await db.run([(ITEM, {"id": 1})])  # in the app's own code, outside any request
        record_query("SELECT 1", 1.0)
        assert (await client.get("/health")).status_code == 200  # an excluded path
        await drained(monitor)
    assert await monitor.storage.events(queries.KIND) == []
    assert await monitor.storage.events("api_call") == []


async def test_instrumenting_twice_records_once_and_uninstrumenting_stops(tmp_path: Path) -> None:
    seeding = create_engine(f"sqlite:///{tmp_path}/app.db")
    seed(seeding)
    seeding.dispose()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/app.db")
    instrument(engine)
    instrument(engine)
    instrument(engine.sync_engine)  # the same engine, as its sync side
    monitor = monitor_of()
    try:
        async for client in opened(monitor, AsyncDatabase(engine)):
            await client.get("/items/1")
            await drained(monitor)
            (timing,) = await timings(monitor.storage)
            assert timing.calls == 1
            uninstrument(engine)
            uninstrument(engine)  # nothing left to remove: no error
            await client.get("/items/2")
            await drained(monitor)
            assert len(await monitor.storage.events("api_call")) == 2
            assert len(await timings(monitor.storage)) == 1
    finally:
        await engine.dispose()


async def test_postgresql_through_asyncpg() -> None:
    async for schema in pg_schema():
        url = PG_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
        engine = create_async_engine(url, connect_args={"server_settings": {"search_path": schema}})
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"))
            await conn.execute(
                text("INSERT INTO items SELECT g, 'item-' || g FROM generate_series(1, 20) g")
            )
        instrument(engine)
        monitor = monitor_of()
        try:
            async for client in opened(monitor, AsyncDatabase(engine)):
                assert (await client.get("/items")).text.startswith("item-1,item-2")
                await drained(monitor)
            (record,) = [ev for ev in await timings(monitor.storage) if ev.metric == "time"]
            assert (record.endpoint, record.calls, record.n_plus_one) == ("/items", 20, True)
            assert record.statement == ITEM_SHAPE  # asyncpg's $1, normalised as any other
            assert record.database == engine.url.database
        finally:
            uninstrument(engine)
            await engine.dispose()


def test_every_monitor_turns_statements_into_events() -> None:
    """Through the ``asgimon.integrations`` entry point: nothing to wire by hand."""
    assert queries.SINK in monitor_of().recorder.sinks.report()


# -- the parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "shape"),
    [
        ("SELECT * FROM t WHERE a = 'x' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT 'it''s', E'a\\'b', N'x', X'ff', -1.5e3, .5, 0x1F", "SELECT ?, ?, ?, ?, ?, ?, ?"),
        ("SELECT * FROM t WHERE id IN (1, 2, 3, 4)", "SELECT * FROM t WHERE id IN (?)"),
        ("SELECT * FROM t WHERE id IN (?, ?,?)", "SELECT * FROM t WHERE id IN (?)"),
        ("INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)", "INSERT INTO t (a, b) VALUES (?)"),
        ("INSERT INTO t (a) VALUES (%s)", "INSERT INTO t (a) VALUES (?)"),
        ("UPDATE t SET a = %(a)s WHERE id = :id", "UPDATE t SET a = ? WHERE id = ?"),
        ("SELECT x::int FROM t WHERE a = $1", "SELECT x::int FROM t WHERE a = ?"),
        ("SELECT $$a 'b'$$, $tag$c$tag$", "SELECT ?, ?"),
        ('SELECT "col 1", `t2`.c3 FROM "Table"', 'SELECT "col 1", `t2`.c3 FROM "Table"'),
        ("SELECT t1.c2 FROM t1  \n\t WHERE c3 = 1", "SELECT t1.c2 FROM t1 WHERE c3 = ?"),
        ("SELECT 1 /* trace=ab12 */ -- user 7\n FROM t", "SELECT ? FROM t"),
        (
            "SELECT a FROM t WHERE b = '-- not a comment' AND c = 1",
            "SELECT a FROM t WHERE b = ? AND c = ?",
        ),
        ("SELECT a FROM t WHERE b = 'never closed", "SELECT a FROM t WHERE b = ?"),
    ],
)
def test_normalise(statement: str, shape: str) -> None:
    assert normalise(statement) == shape


def test_normalise_bounds_the_text() -> None:
    long = "SELECT " + ", ".join(f"column_{i}" for i in range(5000)) + " FROM t"
    shape = normalise(long)
    assert len(shape) == MAX_STATEMENT
    assert shape.endswith("…")
    assert normalise(long) == shape  # past the cache's size too, the same every time


def test_record_query_adds_up_per_statement_in_the_request() -> None:
    ctx, token = open_request()
    try:
        record_query("SELECT a FROM t WHERE id = 1", 2.0)
        record_query("SELECT a FROM t WHERE id = 2", 5.0)
        record_query("SELECT a FROM t WHERE id = 3", 1.0)
        record_query("SELECT a FROM t WHERE id = 3", 1.0, database="replica")
        record_query("SELECT b FROM u", float("nan"))
        record_query(None, 1.0)  # type: ignore[arg-type]  # never raises, records nothing
        record_query("SELECT c FROM v", "slow")  # type: ignore[arg-type]
    finally:
        close_request(token)
    assert ctx.queries == {
        ("", "SELECT a FROM t WHERE id = ?"): [3, 8.0, 5.0],
        ("replica", "SELECT a FROM t WHERE id = ?"): [1, 1.0, 1.0],
        ("", "SELECT b FROM u"): [1, 0.0, 0.0],
    }
    assert ctx.figures is not None
    assert ctx.figures[QUERIES] is ctx.queries  # what leaves the request with its record


def test_a_request_tells_apart_a_bounded_number_of_statements() -> None:
    ctx, token = open_request()
    try:
        for i in range(MAX_PER_REQUEST + 50):
            record_query(f"SELECT c{i} FROM t", 1.0)
    finally:
        close_request(token)
    assert ctx.queries is not None
    assert len(ctx.queries) == MAX_PER_REQUEST + 1
    assert ctx.queries["", OTHER] == [50, 50.0, 1.0]


def call_with(held: dict[tuple[str, str], list[float]], **over: Any) -> ApiCall:
    fields: dict[str, Any] = {
        "id": f"c-{uuid.uuid4().hex}",
        "endpoint": "/a:b",  # a colon in a template: the series still reads back
        "method": "POST",
        "timestamp": 1_700_000_000.0,
        "figures": {QUERIES: held},
        **over,
    }
    return ApiCall(**fields)


async def test_the_subscriber_bounds_statements_per_project() -> None:
    queued: list[Event] = []
    sink = QueryEvents(lambda ev, size: queued.append(ev), threshold=2, max_statements=2)
    held = {("", f"SELECT {c} FROM t"): [3, 3.0, 1.5] for c in "abcd"}
    await sink([call_with(held), ApiCall(), call_with({}, project_id="other")])
    assert all(isinstance(ev, QueryTiming) for ev in queued)
    records = [ev for ev in queued if isinstance(ev, QueryTiming) and ev.metric == "time"]
    assert [(ev.statement, ev.calls) for ev in records] == [
        ("SELECT a FROM t", 3),
        ("SELECT b FROM t", 3),
        (OTHER, 6),  # c and d, past the bound, as one
    ]
    assert all(ev.n_plus_one for ev in records)  # 3 > 2
    assert len(queued) == 6  # each ran more than once: a repeats event each
    assert series_parts(records[0].series()) == ("time", "POST", "/a:b", records[0].statement_hash)
    assert [ev.value() for ev in queued[:2]] == [3.0, 2.0]
    assert len({ev.id for ev in queued}) == 6
    for ev in queued:
        ev.validate(now=1_700_000_000.0)


def test_the_kind_is_registered_and_feeds_its_series() -> None:
    assert EVENT_TYPES[queries.KIND] is QueryTiming
    ev = QueryTiming(endpoint="/x", statement_hash="ab", calls=7, total_ms=7.0, n_plus_one=True)
    assert (ev.series(), ev.value(), ev.is_error()) == ("db:time:GET /x:ab", 7.0, True)
    repeats = QueryTiming(endpoint="/x", statement_hash="ab", calls=7, metric="repeats")
    assert (repeats.series(), repeats.value(), repeats.is_error()) == (
        "db:repeats:GET /x:ab",
        6.0,
        False,
    )


def test_a_huge_statement_is_read_only_to_its_first_kilobytes() -> None:
    five = "SELECT * FROM t WHERE id IN (" + ", ".join(map(str, range(5000))) + ")"
    six = "SELECT * FROM t WHERE id IN (" + ", ".join(map(str, range(6000))) + ")"
    # IN lists of any length past the cut are one statement, read once each.
    assert queries.normalise(five) == queries.normalise(six)
    assert len(queries.normalise(six)) <= queries.MAX_INPUT


async def test_statements_wait_their_turn_behind_the_hosts_own_records() -> None:
    from asgimon.events import ApiCall

    put: list[object] = []
    full = queries.QueryEvents(lambda ev, size: put.append(ev), room=lambda: False)
    call = ApiCall(endpoint="/a", figures={queries.QUERIES: {("", "SELECT ?"): [3, 1.0, 0.5]}})
    await full([call])
    assert put == []
    assert full.skipped == 1
