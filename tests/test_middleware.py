"""Requests of every shape reach storage with the right template, status and three timings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgimon import ApiCall, ErrorEvent, Monitor
from asgimon.storage.sql import SQLStorage
from asgimon.testing import recorded

from .asgi import http_scope, run


class Boom(Exception):
    pass


async def item(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["item_id"]})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.05)
            yield f"chunk{i}".encode()

    return StreamingResponse(chunks())


async def endless(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield b"x"
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks())


async def boom(request: Request) -> Response:
    raise Boom("it broke")


async def slow_task() -> None:
    await asyncio.sleep(0.2)


async def background(request: Request) -> Response:
    return PlainTextResponse("queued", background=BackgroundTask(slow_task))


async def echo_body(request: Request) -> Response:
    return Response(await request.body())


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(text.upper())
    await websocket.close()


async def sub_item(request: Request) -> Response:
    return PlainTextResponse("sub")


def host_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/stream", stream),
            Route("/endless", endless),
            Route("/boom", boom),
            Route("/background", background),
            Route("/echo", echo_body, methods=["POST"]),
            Route("/health", sub_item),
            WebSocketRoute("/ws", ws),
            Mount("/v1", routes=[Route("/things/{thing_id}", sub_item)]),
        ]
    )


@pytest.fixture
async def monitor(sqlite_url: str) -> AsyncIterator[Monitor]:
    mon = Monitor(storage=SQLStorage(sqlite_url), flush_interval=0.01, api_call_sample_rate=1.0)
    async with mon:
        yield mon


def client(app: Any, *, raise_app_exceptions: bool = False) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


async def calls(monitor: Monitor) -> list[ApiCall]:
    found = await recorded(monitor, "api_call")
    assert all(isinstance(c, ApiCall) for c in found)
    return found  # type: ignore[return-value]


async def test_a_normal_request_reaches_sqlite(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    async with client(app) as c:
        r = await c.get("/items/42", headers={"x-request-id": "req-1"})
    assert r.json() == {"id": "42"}
    [call] = await calls(monitor)
    assert (call.method, call.endpoint, call.status) == ("GET", "/items/{item_id}", 200)
    assert call.request_id == "req-1"
    assert call.response_bytes == len(r.content)
    assert call.ttfb_ms is not None
    assert 0 < call.ttfb_ms <= call.duration_ms <= call.total_ms < 1000


async def test_streaming_timings_split_first_byte_from_completion(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    async with client(app) as c:
        r = await c.get("/stream")
    assert r.text == "chunk0chunk1chunk2"
    [call] = await calls(monitor)
    assert call.status == 200
    assert call.response_bytes == len(r.content)
    assert call.ttfb_ms is not None
    # The head goes out before the first chunk's sleep: all three sleeps follow it.
    assert call.duration_ms - call.ttfb_ms >= 145
    assert call.total_ms >= call.duration_ms


async def test_a_raising_app_is_recorded_and_its_exception_reraised_unchanged(
    monitor: Monitor,
) -> None:
    app = monitor.wrap(host_app())
    async with client(app, raise_app_exceptions=True) as c:
        with pytest.raises(Boom, match="it broke") as info:
            await c.get("/boom")
    assert type(info.value) is Boom
    [call] = await calls(monitor)
    assert (call.endpoint, call.status) == ("/boom", 500)
    [error] = await recorded(monitor, "error")
    assert isinstance(error, ErrorEvent)
    assert error.error_type.endswith("Boom")
    assert error.message == "it broke"
    assert (error.endpoint, error.method, error.handled) == ("/boom", "GET", False)
    assert "in boom" in error.stack


async def test_background_tasks_count_in_total_not_in_response_time(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    async with client(app) as c:
        r = await c.get("/background")
    assert r.text == "queued"
    [call] = await calls(monitor)
    # The task's 200 ms sleep lies between the response's end and the call's end, whatever
    # the machine's speed adds to both.
    assert call.total_ms - call.duration_ms >= 190


async def test_a_websocket_session_is_recorded_and_passes_through(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    scope = {**http_scope("/ws"), "type": "websocket", "scheme": "ws", "subprotocols": []}
    sent = await run(
        app,
        scope,
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "hello"},
            0.05,
            {"type": "websocket.disconnect", "code": 1000},
        ],
    )
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "HELLO"
    [call] = await calls(monitor)
    assert (call.method, call.endpoint, call.status) == ("WS", "/ws", 101)
    assert call.total_ms >= 0
    assert call.ttfb_ms is not None


async def test_a_client_that_leaves_mid_response_is_recorded_as_499(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    sent = await run(
        app,
        http_scope("/endless"),
        [
            {"type": "http.request", "body": b"", "more_body": False},
            0.1,
            {"type": "http.disconnect"},
        ],
    )
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    assert not any(m["type"] == "http.response.body" and not m.get("more_body") for m in sent)
    [call] = await calls(monitor)
    assert (call.endpoint, call.status) == ("/endless", 499)
    assert call.total_ms >= 90


async def test_the_request_body_reaches_the_app_intact(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    body = b"x" * 100_000
    async with client(app) as c:
        r = await c.post("/echo", content=body)
    assert r.content == body
    [call] = await calls(monitor)
    assert call.request_bytes == len(body)
    assert call.response_bytes == len(body)


async def test_mounted_sub_apps_unmatched_paths_and_exclusions(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    async with client(app) as c:
        assert (await c.get("/v1/things/9")).text == "sub"
        assert (await c.get("/no/such/path")).status_code == 404
        assert (await c.get("/another/miss")).status_code == 404
        for excluded in ("/health", "/favicon.ico", "/robots.txt", "/.well-known/x"):
            await c.get(excluded)
        assert (await c.get("/analytics/api/health")).status_code == 200
    got = sorted((c.endpoint, c.status) for c in await calls(monitor))
    assert got == [("/v1/things/{thing_id}", 200), ("<unmatched>", 404), ("<unmatched>", 404)]


async def test_distinct_endpoints_are_capped_per_project(sqlite_url: str) -> None:
    routes = [Route(f"/r{i}", item) for i in range(5)]
    monitor = Monitor(
        storage=SQLStorage(sqlite_url),
        flush_interval=0.01,
        api_call_sample_rate=1.0,
        max_endpoints=3,
    )
    async with monitor:
        app = monitor.wrap(Starlette(routes=routes))
        async with client(app) as c:
            for i in range(5):
                await c.get(f"/r{i}")
        endpoints = sorted(c.endpoint for c in await calls(monitor))
    assert endpoints == ["/r0", "/r1", "/r2", "<other>", "<other>"]


async def test_fastapi_routers_give_their_templates(monitor: Monitor) -> None:
    from fastapi import APIRouter, FastAPI

    api = FastAPI()
    router = APIRouter(prefix="/users")

    @router.get("/{user_id}/orders/{order_id}")
    async def order(user_id: int, order_id: str) -> dict[str, Any]:
        return {"user": user_id, "order": order_id}

    api.include_router(router)
    sub = FastAPI()

    @sub.get("/ping/{n}")
    async def ping(n: int) -> dict[str, int]:
        return {"n": n}

    api.mount("/sub", sub)
    api.add_middleware(monitor.middleware_class, monitor=monitor)
    async with client(api) as c:
        assert (await c.get("/users/3/orders/x")).json() == {"user": 3, "order": "x"}
        assert (await c.get("/users/abc/orders/x")).status_code == 422
        assert (await c.get("/sub/ping/5")).json() == {"n": 5}
    got = sorted((c.endpoint, c.status) for c in await calls(monitor))
    assert got == [
        ("/sub/ping/{n}", 200),
        ("/users/{user_id}/orders/{order_id}", 200),
        ("/users/{user_id}/orders/{order_id}", 422),
    ]


async def test_user_ids_come_from_scope_user_or_a_resolver(sqlite_url: str) -> None:
    from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection

    class HeaderAuth(AuthenticationBackend):
        async def authenticate(
            self, conn: HTTPConnection
        ) -> tuple[AuthCredentials, SimpleUser] | None:
            name = conn.headers.get("x-user")
            return (AuthCredentials(["authenticated"]), SimpleUser(name)) if name else None

    monitor = Monitor(storage=SQLStorage(sqlite_url), flush_interval=0.01, api_call_sample_rate=1.0)
    inner = Starlette(
        routes=[Route("/items/{item_id}", item)],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())],
    )
    async with monitor:
        async with client(monitor.wrap(inner)) as c:
            await c.get("/items/1", headers={"x-user": "alice"})
            await c.get("/items/2")
        users = sorted(str(c.user_id) for c in await calls(monitor))
    assert users == ["None", "alice"]

    other = Monitor(
        storage=SQLStorage(sqlite_url.replace(".db", "2.db")),
        flush_interval=0.01,
        api_call_sample_rate=1.0,
        user_resolver=lambda scope: dict(scope["headers"]).get(b"x-api-key", b"").decode() or None,
    )
    async with other:
        async with client(other.wrap(host_app())) as c:
            await c.get("/items/1", headers={"x-api-key": "key-9"})
        assert [c.user_id for c in await calls(other)] == ["key-9"]


async def test_in_flight_gauge_counts_requests_being_served(monitor: Monitor) -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    async def waits(request: Request) -> Response:
        seen.append(monitor.requests.count)
        await gate.wait()
        return PlainTextResponse("done")

    app = monitor.wrap(Starlette(routes=[Route("/wait", waits)]))
    async with client(app) as c:
        tasks = [asyncio.create_task(c.get("/wait")) for _ in range(3)]
        while len(seen) < 3:  # noqa: ASYNC110 - waiting for three requests to be inside
            await asyncio.sleep(0.01)
        assert monitor.requests.count == 3
        gate.set()
        await asyncio.gather(*tasks)
    assert monitor.requests.count == 0


async def test_disabled_analytics_records_nothing(sqlite_url: str) -> None:
    monitor = Monitor(
        storage=SQLStorage(sqlite_url), flush_interval=0.01, api_call_sample_rate=1.0, enabled=False
    )
    async with monitor:
        async with client(monitor.wrap(host_app())) as c:
            assert (await c.get("/items/1")).status_code == 200
        assert await calls(monitor) == []


async def test_root_path_is_left_out_of_exclusions_and_templates(monitor: Monitor) -> None:
    app = monitor.wrap(host_app())
    for path in ("/api/health", "/api/boom", "/api/items/3"):
        scope = {**http_scope(path), "root_path": "/api"}
        with contextlib.suppress(Boom):
            await run(app, scope, [{"type": "http.request", "body": b""}])
    got = sorted((c.endpoint, c.status) for c in await calls(monitor))
    assert got == [("/boom", 500), ("/items/{item_id}", 200)]
    [error] = await recorded(monitor, "error")
    assert isinstance(error, ErrorEvent)
    assert error.endpoint == "/boom"


async def test_a_final_send_that_fails_is_a_client_disconnect(monitor: Monitor) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": False})

    async def broken_send(message: Any) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset by peer")

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    with pytest.raises(OSError, match="reset"):
        await monitor.wrap(app)(http_scope("/x"), receive, broken_send)
    [call] = await calls(monitor)
    assert call.status == 499
    assert call.response_bytes == 0


async def test_a_pathsend_response_completes_when_the_server_takes_the_file(
    monitor: Monitor,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
        await asyncio.sleep(0.2)  # work after the response, as a background task would do

    await run(monitor.wrap(app), http_scope("/file"), [{"type": "http.request", "body": b""}])
    [call] = await calls(monitor)
    assert call.status == 200
    assert call.total_ms - call.duration_ms >= 190


@pytest.mark.parametrize(
    "length", [b"18446744073709551615", b"-5", b"12abc", b"99999999999999999999999999"]
)
async def test_a_lying_content_length_is_not_stored(monitor: Monitor, length: bytes) -> None:
    headers = [(b"host", b"t"), (b"content-length", length)]
    await run(monitor.wrap(host_app()), http_scope("/items/1", headers=headers), [])
    [call] = await calls(monitor)
    assert call.request_bytes is None
    assert monitor.stats().dropped_total == 0


async def test_a_project_resolver_that_answers_none_falls_back_to_the_default(
    sqlite_url: str,
) -> None:
    answers = iter([None, "p" * 300, "tenant-a", ""])
    monitor = Monitor(
        storage=SQLStorage(sqlite_url),
        flush_interval=0.01,
        api_call_sample_rate=1.0,
        project_resolver=lambda s: next(answers),
    )
    async with monitor:
        async with client(monitor.wrap(host_app())) as c:
            for _ in range(4):
                await c.get("/items/1")
        projects = sorted(c.project_id for c in await calls(monitor))
    assert projects == ["default", "default", "p" * 128, "tenant-a"]
    assert monitor.stats().dropped_total == 0


async def test_the_monitor_starts_lazily_again_after_a_stop() -> None:
    from asgimon import MemoryStorage

    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01, api_call_sample_rate=1.0)
    app = monitor.wrap(host_app())
    for _ in range(2):
        async with client(app) as c:
            await c.get("/items/1")
            for _ in range(100):
                if monitor.stats().pending == 0 and monitor.started:
                    break
                await asyncio.sleep(0.01)
        await monitor.stop()
    stats = monitor.stats()
    assert (stats.recorded, stats.written, stats.pending) == (2, 2, 0)
