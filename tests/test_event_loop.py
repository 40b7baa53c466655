"""F24: storage work never blocks the event loop the host app runs on."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import Monitor, _heap, _slices
from asgimon.lag import Longest
from asgimon.rollups import Window
from asgimon.storage.memory import MemoryStorage
from asgimon.storage.sql import SQLStorage


async def hello(request: Request) -> Response:
    return PlainTextResponse("hi")


async def test_no_slow_callbacks_while_writing_to_sqlite(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = Monitor(storage=SQLStorage(sqlite_url), flush_interval=0.05)
    app = monitor.wrap(Starlette(routes=[Route("/items/{n}", hello)]))
    transport = httpx.ASGITransport(app)
    loop = asyncio.get_running_loop()
    # Start-up (engine, schema) happens before the app serves; the serving phase is what counts.
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        await c.get("/items/warm-up")
        await monitor.recorder.flush()
        loop.slow_callback_duration = 0.05
        loop.set_debug(True)
        # A full collection can pause any code for tens of ms; that is not storage blocking.
        gc.disable()
        try:
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for i in range(3000):
                    await c.get(f"/items/{i}")
                    await asyncio.sleep(0)  # keep this task's own steps short
                for i in range(20):
                    await monitor.record_domain_event(f"d{i}.com", "added")
                await monitor.recorder.flush()
        finally:
            loop.set_debug(False)
            await asyncio.sleep(0)  # end the measured step before collections resume
            gc.enable()
    # One client far over the default limit: the refusals are on the measured path too,
    # recorded as one event per second, not one per request.
    denials = monitor.rate_limits.denials
    assert monitor.rate_limits.middleware is not None
    assert monitor.rate_limits.middleware.denied > 2000
    assert 1 <= denials.recorded <= 10
    assert monitor.stats().written == 3021 + denials.recorded
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []


BURST = 50_000


async def captured_records(monitor: Monitor, n: int) -> list[Any]:
    """``n`` request records exactly as the middleware queues them."""
    records: list[Any] = []
    put = monitor.recorder.put_record

    def keep(record: tuple[Any, ...]) -> bool:
        records.append(record)
        return True

    monitor.recorder.put_record = keep  # type: ignore[method-assign]
    try:
        app = monitor.wrap(Starlette(routes=[Route("/items/{n}", hello)]))
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for i in range(n):
                await c.get(f"/items/{i}")
    finally:
        monitor.recorder.put_record = put  # type: ignore[method-assign]
    return records


class Ticker:
    """How late a 1 ms timer fires: what a request in flight would wait."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - due)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_burst_of_50k_requests_is_written_without_holding_the_loop(
    backend: str, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = Longest()
    monkeypatch.setattr(_slices, "OWN_WORK", own)
    storage = MemoryStorage() if backend == "memory" else SQLStorage(sqlite_url)
    monitor = Monitor(storage=storage, queue_max_events=BURST * 2, flush_interval=0.05)
    async with monitor:
        sample = await captured_records(monitor, 50)
        await asyncio.sleep(0.1)  # start-up (schema, first connection) is not the burst
        # A full collection walks the whole heap and pauses any code; it is measured on its
        # own (eventLoop.gcLongestMs), not blamed on the writer here.
        gc.disable()
        try:
            with Ticker() as ticker:
                for start in range(0, BURST, 500):  # arriving as 500-request bursts
                    for i in range(start, start + 500):
                        monitor.recorder.put_record(sample[i % len(sample)])
                    await asyncio.sleep(0)
                await monitor.recorder.flush()
        finally:
            gc.enable()
        stats = monitor.stats()
    assert stats.written == BURST
    assert stats.dropped_total == 0
    longest = own.longest()
    assert longest is not None
    # The writer slices at 0.5 ms; a stretch also holds whatever interrupts it (a young
    # collection, the driver's thread holding the GIL for up to its 5 ms switch interval),
    # so the bound is generous: an unsliced batch is 20 ms and more.
    assert longest < 0.010, f"the writer held the loop {longest * 1000:.1f} ms"
    assert ticker.worst < 0.020, f"a 1 ms timer fired {ticker.worst * 1000:.1f} ms late"


async def test_health_reports_how_long_the_loop_was_held() -> None:
    async with Monitor(storage=MemoryStorage()) as monitor:
        await asyncio.sleep(0.1)
        time.sleep(0.03)  # noqa: ASYNC251 -- a handler that blocks the loop for 30 ms
        await asyncio.sleep(0.05)
        gc.collect()
        loop = (await monitor.health())["eventLoop"]
    assert loop["windowS"] == 60.0
    assert loop["samples"] >= 5
    assert loop["lagMaxMs"] >= 25.0
    assert loop["lagP99Ms"] <= loop["lagMaxMs"]
    assert loop["gcLongestMs"] is not None
    assert loop["gcLongestMs"] > 0


@pytest.mark.parametrize("freeze", [True, False])
async def test_the_start_up_heap_is_frozen_once_unless_turned_off(
    freeze: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_heap, "_frozen", False)
    startup: list[list[int]] = [[] for _ in range(1000)]  # what an app holds once it has started
    before = gc.get_freeze_count()
    async with Monitor(storage=MemoryStorage(), gc_freeze=freeze) as monitor:
        frozen = (await monitor.health())["eventLoop"]["gcFrozenObjects"]
        async with Monitor(storage=MemoryStorage(), gc_freeze=freeze):
            again = gc.get_freeze_count()
    if freeze:
        assert frozen >= before + len(startup)
        # A second monitor in the process freezes nothing more (what was frozen may be freed
        # meanwhile: a list the first one replaced since).
        assert again <= frozen
    else:
        # Nothing was frozen. The count may still fall: an object an earlier test's monitor
        # froze can be freed meanwhile, and leaves the permanent generation with it.
        assert frozen <= before


async def test_a_memory_write_cancelled_at_a_yield_stores_nothing() -> None:
    from asgimon import ApiCall

    storage = MemoryStorage()
    now = time.time()
    batch = [ApiCall(timestamp=now, duration_ms=float(i), total_ms=1.0) for i in range(20_000)]
    write = asyncio.ensure_future(storage.write(batch))
    for _ in range(3):  # into the slices, past the first yields
        await asyncio.sleep(0)
    assert not write.done()
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert await storage.count("api_call") == 0
    assert await storage.rollups(Window("default", "day", 0, now + 86_400)) == []
    retried = await storage.write(batch)
    assert retried.inserted == len(batch)
    [day] = [
        r
        for r in await storage.rollups(Window("default", "day", 0, now + 86_400))
        if r.series == "all:api"
    ]
    assert day.count == len(batch)
