"""The recorder's ledger under failure: every event is written or dropped by a named reason."""

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

from asgimon import (
    DomainEvent,
    Event,
    MemoryStorage,
    Monitor,
    Recorder,
    RecorderStats,
    StorageFull,
    StorageRejected,
    StorageUnavailable,
    WriteResult,
)
from asgimon.pipeline.recorder import API_CALL_SIZE


class ScriptedStorage(MemoryStorage):
    """A real in-memory store whose writes fail the way it is told to."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Exception] = []
        self.poison: set[str] = set()
        self.hang = False
        self.gate: asyncio.Event | None = None
        self.attempts = 0

    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        self.attempts += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        if any(e.id in self.poison for e in events):
            raise StorageRejected("poison")
        return await super().write(events, **options)


def events(n: int) -> list[DomainEvent]:
    now = time.time()
    return [DomainEvent(timestamp=now, domain=f"d{i}.com", type="added") for i in range(n)]


def balanced(stats: RecorderStats) -> bool:
    return stats.recorded == stats.written + stats.duplicates + stats.dropped_total + stats.pending


async def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    recorder = Recorder(MemoryStorage(), max_events=10)
    accepted = [recorder.put(e) for e in events(25)]
    assert accepted == [True] * 10 + [False] * 15
    stats = recorder.stats()
    assert (stats.pending, stats.dropped["queue_full"]) == (10, 15)
    assert balanced(stats)


async def test_the_byte_cap_bounds_the_queue_too() -> None:
    recorder = Recorder(MemoryStorage(), max_bytes=2048)
    for e in events(20):
        recorder.put(e, size=500)
    stats = recorder.stats()
    assert stats.pending == 4
    assert stats.pending_bytes == 2000
    assert stats.dropped["queue_full"] == 16


async def test_transient_failures_are_retried_with_backoff_until_written() -> None:
    storage = ScriptedStorage()
    storage.failures = [StorageUnavailable("locked")] * 3
    recorder = Recorder(storage, flush_interval=0.01, retry_backoff_max=0.05)
    for e in events(30):
        recorder.put(e)
    await recorder.start()
    await recorder.stop(timeout=5)
    stats = recorder.stats()
    assert (stats.written, stats.retries, stats.dropped_total) == (30, 3, 0)
    assert stats.last_error is not None
    assert "locked" in stats.last_error
    assert await storage.count("domain") == 30


async def test_past_the_retry_deadline_a_batch_is_dropped_by_reason() -> None:
    storage = ScriptedStorage()
    storage.failures = [StorageUnavailable("down")] * 1000
    recorder = Recorder(storage, batch_size=10, retry_deadline=0.2, retry_backoff_max=0.05)
    for e in events(10):
        recorder.put(e)
    await recorder.flush()
    stats = recorder.stats()
    assert stats.dropped["storage_unavailable"] == 10
    assert stats.pending == 0
    assert balanced(stats)


async def test_a_full_store_is_given_up_on_after_a_few_tries() -> None:
    storage = ScriptedStorage()
    storage.failures = [StorageFull("disk full")] * 1000
    recorder = Recorder(storage, retry_deadline=60, retry_backoff_max=0.01)
    for e in events(5):
        recorder.put(e)
    await recorder.flush()
    stats = recorder.stats()
    assert stats.dropped["storage_full"] == 5
    assert storage.attempts == 3
    assert balanced(stats)


async def test_only_the_poison_event_of_a_batch_is_dropped() -> None:
    storage = ScriptedStorage()
    batch = events(64)
    storage.poison = {batch[17].id, batch[40].id}
    recorder = Recorder(storage, batch_size=64)
    for e in batch:
        recorder.put(e)
    await recorder.flush()
    stats = recorder.stats()
    assert (stats.written, stats.dropped["invalid"]) == (62, 2)
    assert balanced(stats)
    stored = {e.id for e in await storage.events("domain", limit=100)}
    assert stored == {e.id for e in batch} - storage.poison


async def test_shutdown_with_a_hung_store_ends_on_time_and_counts_what_it_lost() -> None:
    storage = ScriptedStorage()
    storage.hang = True
    recorder = Recorder(storage, flush_interval=0.01, shutdown_timeout=0.3)
    await recorder.start()
    for e in events(40):
        recorder.put(e)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await recorder.stop()
    assert time.monotonic() - started < 2.0
    stats = recorder.stats()
    assert stats.dropped["shutdown_timeout"] == 40
    assert stats.pending == 0
    assert balanced(stats)


async def test_an_internal_bug_never_reaches_the_host_and_is_counted(monkeypatch: Any) -> None:
    """F35: asgimon's own conversion code raising leaves the host response identical."""

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01)

    def broken(raw: Any) -> Event:
        raise RuntimeError("bug in asgimon")

    # Both ways a record is turned into something stored: an event, or a counted call.
    monkeypatch.setattr(monitor.recorder, "_convert", broken)
    monkeypatch.setattr(monitor.recorder, "_series_of", broken)
    app = monitor.wrap(Starlette(routes=[Route("/", hello)]))
    transport = httpx.ASGITransport(app)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        responses = [await c.get("/") for _ in range(20)]
    assert {(r.status_code, r.text) for r in responses} == {(200, "hello")}
    stats = monitor.stats()
    assert stats.dropped["internal_error"] == 20
    assert stats.internal_errors >= 1
    assert balanced(stats)


async def test_a_broken_resolver_drops_the_record_not_the_request() -> None:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    def resolver(scope: Any) -> str:
        raise KeyError("no user")

    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01, user_resolver=resolver)
    app = monitor.wrap(Starlette(routes=[Route("/", hello)]))
    transport = httpx.ASGITransport(app)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        assert (await c.get("/")).text == "hello"
    stats = monitor.stats()
    assert stats.dropped["internal_error"] == 1
    assert balanced(stats)


async def test_a_cancelled_flush_puts_its_batch_back() -> None:
    storage = ScriptedStorage()
    storage.hang = True
    recorder = Recorder(storage)
    for e in events(15):
        recorder.put(e)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(recorder.flush(), 0.1)
    stats = recorder.stats()
    assert stats.pending == 15
    assert balanced(stats)
    storage.hang = False
    await recorder.flush()
    stats = recorder.stats()
    assert (stats.written, stats.pending, stats.dropped_total) == (15, 0, 0)


async def test_a_flush_still_writing_when_stop_gives_up_is_counted_once() -> None:
    storage = ScriptedStorage()
    storage.gate = asyncio.Event()
    recorder = Recorder(storage, flush_interval=60)
    await recorder.start()
    for e in events(10):
        recorder.put(e)
    outside = asyncio.create_task(recorder.flush())
    while storage.attempts == 0:  # noqa: ASYNC110 - waiting for the write to begin
        await asyncio.sleep(0.005)
    await recorder.stop(timeout=0.1)
    storage.gate.set()
    await outside
    stats = recorder.stats()
    assert (stats.written, stats.dropped_total, stats.pending) == (10, 0, 0)
    assert balanced(stats)


class StubbornStorage(MemoryStorage):
    """A store whose write ignores cancellation and finishes a second later, as a hung
    driver's cleanup can."""

    async def write(self, events: Sequence[Event], **options: Any) -> WriteResult:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(1.0)
        return await super().write(events, **options)


async def test_a_write_that_finishes_after_stop_gave_up_is_not_counted_twice() -> None:
    recorder = Recorder(StubbornStorage(), flush_interval=0.01, shutdown_timeout=0.2)
    await recorder.start()
    for e in events(10):
        recorder.put(e)
    await asyncio.sleep(0.05)
    await recorder.stop()
    await asyncio.sleep(1.5)  # the abandoned write completes now
    stats = recorder.stats()
    assert (stats.dropped["shutdown_timeout"], stats.written, stats.pending) == (10, 0, 0)
    assert balanced(stats)


def hello_app(monitor: Monitor) -> Any:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello")

    return monitor.wrap(Starlette(routes=[Route("/items/{n}", hello)]))


async def test_request_records_and_events_share_the_queue_bounds() -> None:
    monitor = Monitor(
        storage=MemoryStorage(), queue_max_events=10, batch_size=1000, flush_interval=60
    )
    transport = httpx.ASGITransport(hello_app(monitor))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for i in range(25):
            assert (await c.get(f"/items/{i}")).text == "hello"  # the host never notices
        assert not any(monitor.recorder.put(e) for e in events(5))
        stats = monitor.stats()
        assert (stats.recorded, stats.pending, stats.dropped["queue_full"]) == (30, 10, 20)
        assert balanced(stats)
    stats = monitor.stats()
    assert (stats.written, stats.dropped_total, stats.pending) == (10, 20, 0)


async def test_request_records_count_towards_the_byte_cap() -> None:
    max_bytes = 3 * API_CALL_SIZE + 100
    monitor = Monitor(storage=MemoryStorage(), queue_max_bytes=max_bytes, flush_interval=60)
    transport = httpx.ASGITransport(hello_app(monitor))
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for i in range(5):
            await c.get(f"/items/{i}")
        stats = monitor.stats()
        assert (stats.pending, stats.pending_bytes) == (3, 3 * API_CALL_SIZE)
        assert stats.dropped["queue_full"] == 2


async def test_requests_served_from_another_thread_are_all_recorded() -> None:
    # As a test client does, each thread serves the app on a loop of its own while the
    # monitor runs on this one: those records take the locked way, and none is lost.
    monitor = Monitor(storage=MemoryStorage(), flush_interval=60, rate_limit_enabled=False)
    app = hello_app(monitor)

    async def serve(n: int) -> None:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            for i in range(n):
                assert (await c.get(f"/items/{i}")).text == "hello"

    async with monitor:
        threads = [asyncio.to_thread(asyncio.run, serve(200)) for _ in range(3)]
        await asyncio.gather(*threads, serve(100))
        assert monitor.stats().recorded == 700
    stats = monitor.stats()
    assert (stats.written, stats.dropped_total, stats.pending) == (700, 0, 0)
