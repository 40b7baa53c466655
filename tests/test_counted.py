"""API calls counted without a row each: exact rollups under one marker per batch, on every
store, through retries, cancellation and refusals; subscribers still see calls with figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import ApiCall, Event, MemoryStorage, Monitor, Storage
from asgimon.context import add_figure
from asgimon.errors import StorageRejected, StorageUnavailable
from asgimon.pipeline.counted import MARKER_TTL_S, Counted, RawBudget, Tally, markers
from asgimon.pipeline.records import ApiCallBuilder
from asgimon.rollups import RESOLUTIONS, Aggregator, Rollup, Window
from asgimon.sampling import KEEP_ALL, RawSampling
from asgimon.series import API_TOTAL
from asgimon.storage.base import WriteResult
from asgimon.storage.redis import RedisStorage
from asgimon.storage.sql import SQLStorage

from .test_recorder import balanced

T0 = float(1_790_000_000 // 86400 * 86400)
NEVER_KEPT = RawSampling(0.0)


def calls(project: str) -> list[ApiCall]:
    """Calls over two endpoints, three minutes and two hours, with varied durations."""
    out = []
    for i in range(240):
        out.append(
            ApiCall(
                project_id=project,
                timestamp=T0 + 3540 + (i % 3) * 60 + i / 100,
                method="GET" if i % 4 else "POST",
                endpoint=f"/items/{{id}}/{i % 2}",
                status=200 if i % 5 else 404,
                duration_ms=0.3 + (i * 7.919) % 900,
            )
        )
    return out


async def counted_of(evs: Sequence[ApiCall]) -> Counted:
    tally = Tally(NEVER_KEPT, _never, _never, lambda: 1.0)
    for ev in evs:
        tally.take_event(ev)
    made = await tally.counted(markers()(), T0 + 4000)
    assert made is not None
    return made


def _never(item: Any) -> Any:
    raise AssertionError("only events are counted here")


def figures(r: Rollup) -> tuple[Any, ...]:
    return (r.series, r.bucket_start, r.count, r.error_count, r.value_count,
            round(r.value_sum, 6), r.value_min, r.value_max, r.full_hist())  # fmt: skip


async def rollups_of(storage: Storage, project: str) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for resolution in RESOLUTIONS:
        rows = await storage.rollups(Window(project, resolution, T0 - 86400, T0 + 2 * 86400))
        out[resolution] = sorted(figures(r) for r in rows)
    return out


async def test_counted_calls_add_up_to_what_their_events_would_and_only_once(
    storage: Storage,
) -> None:
    await storage.write(calls("as-events"), sampling=KEEP_ALL)
    batch = await counted_of(calls("counted"))
    assert batch.count == 240

    first = await storage.write([], counted=batch)
    assert first.counted == 240
    expected = await rollups_of(storage, "as-events")
    assert expected["minute"]  # endpoint series and the project total, each minute
    assert {row[0] for row in expected["hour"]} == {
        API_TOTAL, "api:GET /items/{id}/0", "api:GET /items/{id}/1",
        "api:POST /items/{id}/0",
    }  # fmt: skip
    assert await rollups_of(storage, "counted") == expected
    assert await storage.count("api_call", project_id="counted") == 0  # no row each

    again = await storage.write([], counted=batch)  # a retry of a committed batch
    assert again.counted == 0
    assert await rollups_of(storage, "counted") == expected
    assert "counted" in await storage.projects()


async def test_a_batch_of_events_and_counted_calls_stores_both(storage: Storage) -> None:
    kept = calls("p")[:10]
    batch = await counted_of(calls("p")[10:])
    result = await storage.write(kept, sampling=KEEP_ALL, counted=batch)
    assert (result.inserted, result.counted) == (10, 230)
    assert await storage.count("api_call", project_id="p") == 10
    rows = await storage.rollups(Window("p", "day", T0, T0 + 86400), API_TOTAL)
    assert sum(r.count for r in rows) == 240
    result = await storage.write(kept, sampling=KEEP_ALL, counted=batch)
    assert (result.inserted, result.duplicates, result.counted) == (0, 10, 0)


async def test_markers_are_kept_a_day_whatever_the_retention(storage: Storage) -> None:
    batch = await counted_of(calls("p"))
    batch.at = time.time() - 2 * 86400
    await storage.write([], counted=batch)
    if isinstance(storage, RedisStorage):
        ttl = await storage._redis().ttl(f"{storage.prefix}:batch:{batch.marker}")
        assert 86_000 < ttl <= MARKER_TTL_S
        return
    # API calls are kept 90 days, their batches' markers a day: gone, the batch counts again.
    await storage.purge(before={"api_call": time.time() - 90 * 86400})
    assert (await storage.write([], counted=batch)).counted == 240
    fresh = await counted_of(calls("p"))
    fresh.at = time.time() - 3600
    await storage.write([], counted=fresh)
    await storage.purge(before={"api_call": time.time() - 90 * 86400})
    assert (await storage.write([], counted=fresh)).counted == 0  # a young one stays


# -- through the monitor ---------------------------------------------------------------------


async def ok(request: Request) -> Response:
    if request.query_params.get("q"):
        add_figure("db_ms", 1.5)
    return PlainTextResponse("ok")


async def boom(request: Request) -> Response:
    return PlainTextResponse("no", status_code=503)


def make(storage: Storage, **options: Any) -> Monitor:
    # The host's rate limit off: hundreds of requests from one client would be refused.
    return Monitor(storage=storage, rate_limit_enabled=False, **options)


def served(monitor: Monitor) -> httpx.AsyncClient:
    app = monitor.wrap(Starlette(routes=[Route("/ok", ok), Route("/boom", boom)]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t")


async def total(monitor: Monitor) -> int:
    rows = await monitor.storage.rollups(Window("default", "day", 0, 2**40), API_TOTAL)
    return sum(r.count for r in rows)


@pytest.mark.parametrize("rate", [0.0, 0.1])
async def test_every_request_counts_once_and_errors_stay_listed(
    storage: Storage, rate: float
) -> None:
    monitor = make(storage, flush_interval=0.01, api_call_sample_rate=rate)
    async with monitor, served(monitor) as client:
        for _ in range(300):
            await client.get("/ok")
        for _ in range(4):
            await client.get("/boom")
        await monitor.recorder.flush()
        assert await total(monitor) == 304
        listed = await monitor.storage.events("api_call", limit=1000)
        assert sum(ev.status == 503 for ev in listed) == 4  # type: ignore[attr-defined]
        if rate == 0.0:
            assert len(listed) == 4
        else:
            assert 4 < len(listed) < 100  # a tenth of 300, give or take
    stats = monitor.stats()
    assert stats.written == 304 + 4  # the calls and the 503s' error reports
    assert balanced(stats)


class Wrapped:
    """A store that does what ``inner`` does, save what a subclass changes."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CommitsThenFails(Wrapped):
    """A store whose first write commits but whose answer is lost (the connection broke)."""

    writes = 0

    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        self.writes += 1
        result = await self.inner.write(events, **options)
        if self.writes == 1:
            raise StorageUnavailable("the answer was lost")
        return result


async def test_a_batch_retried_after_its_commit_is_not_counted_twice() -> None:
    store = CommitsThenFails(MemoryStorage())
    monitor = make(store, flush_interval=0.01, api_call_sample_rate=0.0)
    async with monitor, served(monitor) as client:
        for _ in range(50):
            await client.get("/ok")
        await monitor.recorder.flush()
        assert await total(monitor) == 50
    stats = monitor.stats()
    assert store.writes >= 2
    assert (stats.written, stats.duplicates, stats.retries) == (0, 50, 1)
    assert balanced(stats)


class HangsAfterCommit(Wrapped):
    """A store that commits its first write, then hangs until the write is cancelled."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.committed = asyncio.Event()
        self.calls: list[int] = []

    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        result = await self.inner.write(events, **options)
        counted = options.get("counted")
        self.calls.append(counted.count if counted is not None else 0)
        if not self.committed.is_set():
            self.committed.set()
            await asyncio.Event().wait()
        return result


async def test_a_cancelled_write_is_written_again_under_its_marker() -> None:
    store = HangsAfterCommit(MemoryStorage())
    monitor = make(store, flush_interval=30, api_call_sample_rate=0.0)
    async with monitor, served(monitor) as client:
        for _ in range(20):
            await client.get("/ok")
        flushing = asyncio.create_task(monitor.recorder.flush())
        await asyncio.wait_for(store.committed.wait(), 5)
        flushing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await flushing
        assert monitor.stats().pending == 20
        await monitor.recorder.flush()
        assert store.calls == [20, 20]  # the same batch, twice
        assert await total(monitor) == 20
        stats = monitor.stats()
        assert (stats.written, stats.duplicates, stats.pending) == (0, 20, 0)
        assert balanced(stats)


class RefusesErrors(Wrapped):
    """A store that refuses any batch holding a 503."""

    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        if any(getattr(ev, "status", 0) == 503 for ev in events):
            raise StorageRejected("no 503s here")
        return await self.inner.write(events, **options)


async def test_a_refused_event_does_not_take_the_counted_calls_with_it() -> None:
    store = RefusesErrors(MemoryStorage())
    monitor = make(
        store,
        flush_interval=30,
        api_call_sample_rate=0.0,
        error_tracking_enabled=False,
    )
    async with monitor, served(monitor) as client:
        for _ in range(30):
            await client.get("/ok")
        await client.get("/boom")
        await monitor.recorder.flush()
        assert await total(monitor) == 30
    stats = monitor.stats()
    assert (stats.written, stats.dropped["invalid"]) == (30, 1)
    assert balanced(stats)


async def test_subscribers_see_counted_calls_that_carry_figures(sqlite_url: str) -> None:
    monitor = make(SQLStorage(sqlite_url), flush_interval=0.01, api_call_sample_rate=0.0)
    seen: list[Event] = []

    async def sink(events: Sequence[Event]) -> None:
        seen.extend(events)

    monitor.subscribe(sink)
    async with monitor, served(monitor) as client:
        for i in range(40):
            await client.get("/ok", params={"q": "1"} if i % 4 == 0 else {})
        await monitor.recorder.flush()
        for _ in range(50):
            if len([ev for ev in seen if ev.kind == "api_call"]) >= 10:
                break
            await asyncio.sleep(0.02)
    with_figures = [ev for ev in seen if isinstance(ev, ApiCall)]
    assert len(with_figures) == 10
    assert all(ev.figures for ev in with_figures)
    assert len({ev.id for ev in with_figures}) == 10


def records(builder: ApiCallBuilder, n: int) -> list[tuple[Any, ...]]:
    """Middleware records over three routes (one mounted below a prefix), two projects and
    three minutes, as ``AsgimonMiddleware._record`` queues them: a route by its id in the
    builder's table, or (one in fifty, as past the table's bound) the route itself."""
    routes = [Route("/a/{id:int}", ok), Route("/b", ok), Route("/c", ok)]
    builder.routes.update((id(r), r) for r in routes)
    out = []
    for i in range(n):
        t0 = 1000.0 + i
        took = 0.0001 + (i * 0.000731) % 0.9
        out.append(
            (
                None if i % 3 else "tenant",  # project (from a resolver)
                "GET" if i % 4 else "PUT",
                None,
                routes[i % 3] if i % 50 == 0 else id(routes[i % 3]),
                "",
                "/v1" if i % 3 == 2 else "",
                200 if i % 7 else 404,
                t0,
                t0 + took / 2,
                t0 + took,
                t0 + took + 0.001,
                T0 + (i % 180),
                10,
                None,
                None,
                None,
                None,
            )
        )
    return out


async def test_a_tally_of_records_equals_the_rollups_of_their_events() -> None:
    builder = ApiCallBuilder(100, "default")
    tally = Tally(NEVER_KEPT, builder.series_of, builder, lambda: 1.0)
    items = records(builder, 500)
    assert all(tally.take(item) for item in items)
    made = await tally.counted("m", T0)
    assert made is not None
    assert made.count == 500
    agg = Aggregator()
    agg.add([builder(item) for item in items])
    expected = sorted(figures(r) for r in agg.deltas() if r.resolution == "minute")
    assert sorted(figures(r) for r in made.minutes) == expected
    assert {r.series for r in made.minutes} >= {"api:GET /a/{id}", "api:PUT /v1/c", API_TOTAL}


async def test_ordinary_calls_kept_raw_are_bounded_per_second_errors_never() -> None:
    builder = ApiCallBuilder(100, "default")
    tally = Tally(RawSampling(1.0 - 1e-9), builder.series_of, builder, lambda: 0.0, RawBudget(5))
    items = records(builder, 500)  # over 180 seconds, a few a second
    burst = [(*item[:11], T0 + 7.5, *item[12:]) for item in items[:40]]  # 40 in one second
    failing = [(*item[:6], 503, *item[7:]) for item in items[40:43]]
    kept = [item for item in [*burst, *failing] if not tally.take(item)]
    assert len(kept) == 5 + 3  # five of the burst, and every failing call
    made = await tally.counted("m", T0)
    assert made is not None
    assert made.count == 35


async def test_the_bound_comes_from_the_settings() -> None:
    monitor = make(
        MemoryStorage(), flush_interval=0.01, api_call_sample_rate=0.99, api_call_raw_per_s=3
    )
    async with monitor, served(monitor) as client:
        for _ in range(60):
            await client.get("/ok")
        await monitor.recorder.flush()
        assert await total(monitor) == 60
        listed = await monitor.storage.events("api_call", limit=1000)
    # Nearly every call drawn, three a second kept: the 60 calls take under three seconds.
    assert 3 <= len(listed) <= 9
