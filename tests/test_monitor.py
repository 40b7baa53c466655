"""The Monitor's lifecycle, lifespan handling, explicit recording and trackers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

import asgimon
from asgimon import BuildEvent, ErrorEvent, FunctionInvocation, Monitor
from asgimon.testing import MemoryStorage, memory_monitor, recorded

from .asgi import http_scope, run


async def hello(request: Request) -> Response:
    return PlainTextResponse("hi")


async def drive_lifespan(app: Any, during: Any) -> list[str]:
    """Run startup, then ``during()``, then shutdown, as a server does."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[str] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        return await to_app.get()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        if message["type"].startswith("lifespan.shutdown"):
            done.set()

    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    )
    await to_app.put({"type": "lifespan.startup"})
    while not sent:  # noqa: ASYNC110 - polling a list the fake server fills
        await asyncio.sleep(0.001)
    await during()
    await to_app.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(done.wait(), 5)
    await task
    return sent


async def test_the_middleware_alone_starts_and_drains_the_monitor_through_lifespan() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("app startup")
        yield
        events.append("app shutdown")

    monitor = Monitor(
        storage=MemoryStorage(), flush_interval=30, api_call_sample_rate=1.0
    )  # only shutdown can flush
    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
    app.add_middleware(monitor.middleware_class, monitor=monitor)

    async def during() -> None:
        assert monitor.started
        assert monitor.recorder.running
        await run(app, http_scope("/"), [{"type": "http.request", "body": b""}])

    sent = await drive_lifespan(app, during)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["app startup", "app shutdown"]
    assert not monitor.started
    assert await monitor.storage.count("api_call") == 1


async def test_an_app_that_does_not_speak_lifespan_gets_it_answered() -> None:
    async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("only http here")  # as Django's ASGI handler does
        await PlainTextResponse("raw")(scope, receive, send)

    monitor = Monitor(storage=MemoryStorage(), flush_interval=30, api_call_sample_rate=1.0)
    app = monitor.wrap(raw_app)

    async def during() -> None:
        assert monitor.started
        await run(app, http_scope("/x"), [{"type": "http.request", "body": b""}])

    sent = await drive_lifespan(app, during)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [c.endpoint for c in await monitor.storage.events("api_call")] == ["<unmatched>"]  # type: ignore[attr-defined]


async def test_a_failing_app_startup_still_fails() -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("db down")
        yield

    monitor = Monitor(storage=MemoryStorage(), api_call_sample_rate=1.0)
    app = monitor.wrap(Starlette(lifespan=lifespan))
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    with pytest.raises(RuntimeError, match="db down"):
        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == ["lifespan.startup.failed"]
    await monitor.stop()


async def test_without_lifespan_the_monitor_starts_lazily_on_the_first_request() -> None:
    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01, api_call_sample_rate=1.0)
    app = monitor.wrap(Starlette(routes=[Route("/", hello)]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as c:
        assert (await c.get("/")).text == "hi"
        for _ in range(100):
            if await monitor.storage.count("api_call"):
                break
            await asyncio.sleep(0.01)
    assert monitor.started
    assert await monitor.storage.count("api_call") == 1
    await monitor.stop()


async def test_trackers_time_sync_and_async_code_and_record_errors() -> None:
    monitor = memory_monitor()

    @monitor.track_function("resize", deployment_id="dep-1", cold_start=True)
    async def resize(n: int) -> int:
        await asyncio.sleep(0.02)
        return n * 2

    @monitor.track_function("parse")
    def parse(text: str) -> int:
        return int(text)

    async with monitor:
        assert await resize(4) == 8
        assert parse("7") == 7
        with pytest.raises(ValueError, match="invalid literal"):
            parse("seven")
        with monitor.track_build_phase("dep-1", "install", framework="vite"):
            await asyncio.sleep(0.01)
        with pytest.raises(KeyError):
            async with monitor.track_build_phase("dep-1", "build"):
                raise KeyError("missing")
        functions = await recorded(monitor, "function")
        builds = await recorded(monitor, "build")
    assert all(isinstance(f, FunctionInvocation) for f in functions)
    by_id = {(f.function_id, f.status): f for f in functions}  # type: ignore[attr-defined]
    assert set(by_id) == {("resize", "success"), ("parse", "success"), ("parse", "error")}
    resized = by_id["resize", "success"]
    assert isinstance(resized, FunctionInvocation)
    assert resized.duration_ms >= 20
    assert resized.cold_start
    assert resized.deployment_id == "dep-1"
    failed = by_id["parse", "error"]
    assert isinstance(failed, FunctionInvocation)
    assert failed.error_type == "ValueError"
    phases = {(b.phase, b.status) for b in builds if isinstance(b, BuildEvent)}
    assert phases == {("install", "success"), ("build", "failure")}
    install = next(b for b in builds if isinstance(b, BuildEvent) and b.phase == "install")
    assert install.duration_ms >= 10
    assert install.framework == "vite"


async def test_a_tracker_with_bad_arguments_never_breaks_the_tracked_code() -> None:
    monitor = memory_monitor()
    async with monitor:
        with monitor.track_build_phase("dep-1", "compile"):  # not a phase: dropped, counted
            value = 42
        assert value == 42
        assert await recorded(monitor, "build") == []
    assert monitor.stats().dropped["invalid"] == 1


async def test_capture_exception_records_a_scrubbed_bounded_event_and_never_raises() -> None:
    monitor = memory_monitor()
    async with monitor:
        try:
            raise LookupError("x" * 10_000)
        except LookupError as exc:
            event = monitor.capture_exception(exc, severity="low", context={"order": 7})
        assert isinstance(event, ErrorEvent)
        assert monitor.capture_exception(ValueError("v"), severity="bogus") is None
        [stored] = await recorded(monitor, "error")
    assert isinstance(stored, ErrorEvent)
    assert stored.error_type == "LookupError"
    assert stored.severity == "low"
    assert len(stored.message) == 2000
    assert stored.context == {"order": 7}
    assert stored.handled
    assert "test_capture_exception" in stored.stack
    assert monitor.stats().dropped["invalid"] == 1


async def test_fingerprints_group_by_type_and_frames_not_line_numbers() -> None:
    monitor = memory_monitor()

    def fail(kind: type[Exception]) -> None:
        raise kind("boom")

    fingerprints = []
    async with monitor:
        for kind in (ValueError, ValueError, TypeError):
            try:
                fail(kind)
            except Exception as exc:
                event = monitor.capture_exception(exc)
                assert event is not None
                fingerprints.append(event.fingerprint)
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


async def test_async_with_stops_and_flushes_everything() -> None:
    monitor = Monitor(storage=MemoryStorage(), flush_interval=60)
    async with monitor:
        for i in range(50):
            await monitor.record_domain_event(f"d{i}.com", "added")
    stats = monitor.stats()
    assert (stats.recorded, stats.written, stats.pending, stats.dropped_total) == (50, 50, 0, 0)
    assert await monitor.storage.count("domain") == 50


def test_the_public_api_is_curated_and_sorted() -> None:
    assert asgimon.__all__ == sorted(asgimon.__all__)
    for name in asgimon.__all__:
        assert getattr(asgimon, name) is not None
    public = {n for n in dir(asgimon) if not n.startswith("_")} - {"annotations"}
    modules = {
        "alerts",
        "cli",
        "demo",
        "analytics",
        "breaker",
        "errortracking",
        "context",
        "errors",
        "events",
        "fields",
        "histogram",
        "integrations",
        "lag",
        "retention",
        "middleware",
        "monitor",
        "parts",
        "pipeline",
        "plugins",
        "ratelimit",
        "recording",
        "redis_pools",
        "rollups",
        "sampling",
        "series",
        "setting_rules",
        "setting_values",
        "settings",
        "storage",
        "tracking",
        "dashboard",
        "testing",
    }
    assert public - modules == set(asgimon.__all__)
