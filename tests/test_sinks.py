"""Subscribers receive every stored event once, whichever way it came, and never hold the
writer: slow, failing and lagging subscribers are bounded and counted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import Event, MemoryStorage, Monitor, Storage
from asgimon.storage.sql import SQLStorage

KEY = "k" * 32


async def hello(request: Request) -> Response:
    return PlainTextResponse("hi")


class Collector:
    """A subscriber that checks each event is already in storage when it arrives."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.seen: list[Event] = []
        self.unstored: list[str] = []

    async def __call__(self, events: Sequence[Event]) -> None:
        for kind in {ev.kind for ev in events}:
            stored = {s.id for s in await self.storage.events(kind, limit=100_000)}
            self.unstored += [ev.id for ev in events if ev.kind == kind and ev.id not in stored]
        self.seen.extend(events)


@pytest.fixture(params=["memory", "sqlite"])
def storage(request: pytest.FixtureRequest, sqlite_url: str) -> Storage:
    return MemoryStorage() if request.param == "memory" else SQLStorage(sqlite_url)


@pytest.fixture
async def monitor(storage: Storage) -> AsyncIterator[Monitor]:
    # Every call kept raw: the collector looks each one up in storage.
    monitor = Monitor(
        storage=storage, flush_interval=0.05, ingest_keys=(("*", KEY),), api_call_sample_rate=1.0
    )
    yield monitor
    await monitor.stop()


def client(monitor: Monitor) -> httpx.AsyncClient:
    app = monitor.wrap(Starlette(routes=[Route("/items/{n}", hello)]))
    transport = httpx.ASGITransport(app, client=("127.0.0.1", 1))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def settled(monitor: Monitor) -> None:
    await monitor.recorder.flush()
    for _ in range(200):
        if all(r["pending"] == 0 for r in monitor.recorder.sinks.report().values()):
            await asyncio.sleep(0.02)  # the last delivery may still be running
            return
        await asyncio.sleep(0.01)


async def test_requests_records_and_ingested_events_each_arrive_once_after_storing(
    monitor: Monitor, storage: Storage
) -> None:
    collector = Collector(storage)
    monitor.subscribe(collector, name="collector")
    await monitor.start()
    event_id = str(uuid.uuid4())
    body = {
        "events": [
            {
                "kind": "deployment",
                "id": event_id,
                "projectId": "default",
                "timestamp": datetime.now(UTC).isoformat(),
                "deploymentId": "d-http",
                "type": "started",
            }
        ]
    }
    async with client(monitor) as c:
        for i in range(30):
            assert (await c.get(f"/items/{i}")).status_code == 200
        await monitor.record_function_invocation("fn", duration_ms=12.0)
        headers = {"Authorization": f"Bearer {KEY}"}
        first = await c.post("/analytics/api/events", json=body, headers=headers)
        assert first.status_code == 200, first.text
        again = await c.post("/analytics/api/events", json=body, headers=headers)
        assert again.json() == {"accepted": 0, "duplicates": 1}
        await settled(monitor)
        health = await monitor.health()
    kinds = sorted(ev.kind for ev in collector.seen)
    assert kinds.count("api_call") >= 30  # and the admin's own calls to the API
    assert kinds.count("function") == 1
    assert [ev.id for ev in collector.seen if ev.kind == "deployment"] == [event_id]
    assert len({(ev.kind, ev.id) for ev in collector.seen}) == len(collector.seen)
    assert collector.unstored == []
    report = health["sinks"]["collector"]
    assert report["delivered"] >= 32
    assert (report["dropped"], report["failures"], report["timeouts"]) == (0, 0, 0)


async def test_a_slow_and_a_failing_subscriber_cost_only_themselves(
    monitor: Monitor, storage: Storage
) -> None:
    release = asyncio.Event()

    async def stuck(events: Sequence[Event]) -> None:
        await release.wait()

    async def broken(events: Sequence[Event]) -> None:
        raise RuntimeError("subscriber bug")

    healthy = Collector(storage)
    monitor.subscribe(stuck, name="stuck", timeout=0.2)
    monitor.subscribe(broken, name="broken")
    monitor.subscribe(healthy, name="healthy")
    await monitor.start()
    for round_ in range(3):
        for i in range(200):
            await monitor.record_function_invocation(f"fn{round_}", duration_ms=float(i))
        await monitor.recorder.flush()
        await asyncio.sleep(0.25)
    stats = monitor.stats()
    assert stats.written == 600  # the writer never waited for a subscriber
    assert stats.internal_errors == 0
    report = monitor.recorder.sinks.report()
    assert len(healthy.seen) == 600
    assert report["healthy"]["delivered"] == 600
    assert report["broken"]["failures"] >= 1
    assert report["broken"]["dropped"] == 600
    assert "subscriber bug" in report["broken"]["lastError"]
    assert report["stuck"]["timeouts"] >= 2
    assert report["stuck"]["delivered"] == 0
    release.set()


async def test_a_subscriber_that_lags_keeps_the_newest_events_within_its_bound(
    monitor: Monitor,
) -> None:
    gate = asyncio.Event()
    got: list[Event] = []

    async def slow(events: Sequence[Event]) -> None:
        await gate.wait()
        got.extend(events)

    monitor.subscribe(slow, name="slow", max_pending=250)
    await monitor.start()
    for batch in range(10):
        for i in range(100):
            await monitor.record_function_invocation("fn", duration_ms=float(batch * 100 + i))
        await monitor.recorder.flush()
        await asyncio.sleep(0)
    report = monitor.recorder.sinks.report()["slow"]
    assert report["pending"] <= 250
    gate.set()
    await settled(monitor)
    report = monitor.recorder.sinks.report()["slow"]
    assert report["delivered"] + report["dropped"] == 1000
    assert report["dropped"] > 0
    # What survived is the newest: the last batch is always delivered.
    assert max(ev.duration_ms for ev in got if hasattr(ev, "duration_ms")) == 999.0


async def test_events_still_queued_at_shutdown_are_delivered_or_counted(
    monitor: Monitor,
) -> None:
    got: list[Event] = []

    async def sink(events: Sequence[Event]) -> None:
        await asyncio.sleep(0.01)
        got.extend(events)

    monitor.subscribe(sink, name="sink")
    await monitor.start()
    for i in range(50):
        await monitor.record_function_invocation("fn", duration_ms=float(i))
    await monitor.stop()
    report = monitor.recorder.sinks.report()["sink"]
    assert monitor.stats().written == 50
    assert report["delivered"] == len(got) == 50
    assert report["pending"] == 0


def test_two_subscribers_may_not_share_a_name() -> None:
    monitor = Monitor(storage=MemoryStorage())

    async def sink(events: Sequence[Event]) -> None:
        return None

    monitor.subscribe(sink, name="stream")
    with pytest.raises(ValueError, match="'stream' is already registered"):
        monitor.subscribe(sink, name="stream")
