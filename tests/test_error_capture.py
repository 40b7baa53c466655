"""Error capture through real apps: what is stored for each way an app fails, and its group."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgimon import ErrorEvent, MemoryStorage, Monitor
from asgimon.errortracking.grouping import DEFAULT, normalise_message
from asgimon.errortracking.logs import ErrorLogHandler

from .asgi import http_scope, run


async def stored_errors(storage: MemoryStorage) -> list[ErrorEvent]:
    evs = await storage.events("error", limit=10_000)
    return sorted((e for e in evs if isinstance(e, ErrorEvent)), key=lambda e: e.timestamp)


def exception_chain(ev: ErrorEvent) -> list[dict[str, Any]]:
    assert ev.exception
    chain: list[dict[str, Any]] = json.loads(ev.exception)
    return chain


class Lookup(Exception):
    pass


def load_user(user_id: str) -> None:
    raise Lookup(f"user {user_id} not found in shard 0x7f3a")


async def user_page(request: Request) -> Response:
    load_user(request.path_params["uid"])
    return PlainTextResponse("never")


async def other_bug(request: Request) -> Response:
    return PlainTextResponse(str(1 / 0))


async def unavailable(request: Request) -> Response:
    return JSONResponse({"error": "down"}, status_code=503)


async def teapot(request: Request) -> Response:
    return PlainTextResponse("short and stout", status_code=418)


async def stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first chunk\n"
        raise RuntimeError("the stream broke half way")

    return StreamingResponse(body())


def late_failure() -> None:
    raise ConnectionError("mail server refused the report")


async def with_background(request: Request) -> Response:
    return PlainTextResponse("accepted", background=BackgroundTask(late_failure))


async def chained(request: Request) -> Response:
    try:
        {"present": 1}["missing"]
    except KeyError as exc:
        raise ValueError("could not build the invoice") from exc
    return PlainTextResponse("never")


async def handled(request: Request) -> Response:
    monitor: Monitor = request.app.state.monitor
    try:
        int("forty-two")
    except ValueError as exc:
        monitor.capture_exception(
            exc, severity="low", context={"order": 7, "card_number": "4111 1111 1111 1111"}
        )
    monitor.capture_message("quota nearly used up for tenant 41", severity="medium")
    return PlainTextResponse("ok")


async def ws_echo(ws: WebSocket) -> None:
    await ws.accept()
    text = await ws.receive_text()
    raise OSError(f"websocket handler failed on {text!r}")


def starlette_app(monitor: Monitor) -> Starlette:
    app = Starlette(
        routes=[
            Route("/users/{uid}", user_page),
            Route("/other", other_bug),
            Route("/unavailable", unavailable),
            Route("/teapot", teapot),
            Route("/stream", stream),
            Route("/background", with_background),
            Route("/chained", chained),
            Route("/handled", handled),
            WebSocketRoute("/ws", ws_echo),
        ]
    )
    app.state.monitor = monitor
    return app


@pytest.fixture
async def setup() -> AsyncIterator[tuple[Monitor, MemoryStorage, httpx.AsyncClient]]:
    storage = MemoryStorage()
    monitor = Monitor(
        storage=storage, flush_interval=0.01, api_rate_limit=None, api_call_sample_rate=1.0
    )
    app = monitor.wrap(starlette_app(monitor))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield monitor, storage, client


async def settle(monitor: Monitor) -> None:
    await monitor.recorder.flush()
    await asyncio.sleep(0.05)


async def test_the_same_bug_from_two_requests_is_one_group_and_another_bug_another(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, client = setup
    for uid in ("41", "9f1c2e77-0d8b-4d7e-9a51-3b3c6c1f1a00"):
        r = await client.get(f"/users/{uid}")
        assert r.status_code == 500
    assert (await client.get("/other")).status_code == 500
    await settle(monitor)
    first, second, other = await stored_errors(storage)
    assert first.fingerprint == second.fingerprint != other.fingerprint
    assert first.error_type == "tests.test_error_capture.Lookup"
    assert (first.endpoint, first.method, first.handled, first.severity) == (
        "/users/{uid}",
        "GET",
        False,
        "high",
    )
    frames = exception_chain(first)[0]["frames"]
    assert frames[-1]["function"] == "load_user"
    assert frames[-1]["inApp"] is True
    assert frames[-1]["filename"] == "tests/test_error_capture.py"
    assert any(not f["inApp"] and f["filename"].startswith("starlette/") for f in frames)
    assert "/" + "work" not in first.stack  # no absolute paths
    groups = {g.fingerprint: g for g in await storage.error_groups("default")}
    assert groups[first.fingerprint].count == 2
    assert groups[other.fingerprint].count == 1


def test_line_offsets_do_not_split_a_group() -> None:
    monitor = Monitor(storage=MemoryStorage())
    source = "def fail(n):\n    raise KeyError(f'item {n}')\n"
    shifted = "\n\n\n# a comment added above\n" + source
    fingerprints = []
    for i, text in enumerate((source, shifted)):
        namespace: dict[str, Any] = {"__name__": "shop.cart"}
        exec(compile(text, "/srv/app/shop/cart.py", "exec"), namespace)
        try:
            namespace["fail"](i * 1000 + 7)
        except KeyError as exc:
            ev = monitor.capture_exception(exc)
            assert ev is not None
            fingerprints.append(ev.fingerprint)
    assert fingerprints[0] == fingerprints[1]


def test_a_custom_fingerprint_replaces_or_extends_the_default() -> None:
    monitor = Monitor(storage=MemoryStorage())

    def report(fingerprint: Any = None, tenant: str = "") -> str:
        try:
            raise TimeoutError("upstream slow")
        except TimeoutError as exc:
            ev = monitor.capture_exception(exc, fingerprint=fingerprint, context={"t": tenant})
            assert ev is not None
            return ev.fingerprint

    default = report()
    assert report() == default
    assert report(["upstream", "billing"]) == report(["upstream", "billing"]) != default
    assert report([DEFAULT, "a"]) != report([DEFAULT, "b"])
    assert report([DEFAULT, "a"]) != default


def test_messages_group_by_their_text_with_numbers_ids_and_hex_stripped() -> None:
    assert normalise_message("user 41 not found") == normalise_message("user 42 not found")
    assert normalise_message("row 9f1c2e77-0d8b-4d7e-9a51-3b3c6c1f1a00 at 0x7f3a") == (
        "row <uuid> at <hex>"
    )
    assert normalise_message("order ord_8f3a2 failed") == normalise_message(
        "order ord_91b7c failed"
    )
    monitor = Monitor(storage=MemoryStorage())
    a = monitor.capture_message("payment 1001 declined")
    b = monitor.capture_message("payment 2002 declined")
    c = monitor.capture_message("refund 1001 declined")
    assert a
    assert b
    assert c
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.exception
    assert json.loads(a.exception)[0]["frames"][-1]["function"].endswith(
        "test_messages_group_by_their_text_with_numbers_ids_and_hex_stripped"
    )


async def test_a_failing_status_without_an_exception_is_reported(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, client = setup
    assert (await client.get("/unavailable")).json() == {"error": "down"}
    assert (await client.get("/unavailable")).status_code == 503
    assert (await client.get("/teapot")).status_code == 418  # not in 500-599
    await settle(monitor)
    a, b = await stored_errors(storage)
    assert a.fingerprint == b.fingerprint
    assert (a.error_type, a.message, a.endpoint, a.context["status"]) == (
        "HTTP 503",
        "GET /unavailable answered 503 Service Unavailable",
        "/unavailable",
        503,
    )


async def test_a_configured_status_is_reported_and_tracking_can_be_turned_off() -> None:
    for statuses, tracking, expected in (
        (((418, 418),), True, 1),
        (((500, 599),), False, 0),
    ):
        storage = MemoryStorage()
        monitor = Monitor(
            storage=storage,
            flush_interval=0.01,
            error_capture_statuses=statuses,
            error_tracking_enabled=tracking,
        )
        app = monitor.wrap(starlette_app(monitor))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/teapot")).text == "short and stout"
            await c.get("/users/1")
            await settle(monitor)
        found = await stored_errors(storage)
        assert len(found) == (expected + 1 if tracking else 0)


async def test_streaming_bodies_and_background_tasks_report_their_errors(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, client = setup
    r = await client.get("/stream")
    assert r.text == "first chunk\n"  # what was sent before the body broke
    r = await client.get("/background")
    assert (r.status_code, r.text) == (200, "accepted")  # the response was already sent
    await settle(monitor)
    streamed, late = await stored_errors(storage)
    assert (streamed.error_type, streamed.message, streamed.endpoint) == (
        "RuntimeError",
        "the stream broke half way",
        "/stream",
    )
    assert (late.error_type, late.endpoint) == ("ConnectionError", "/background")
    assert exception_chain(late)[0]["frames"][-1]["function"] == "late_failure"


async def test_chained_exceptions_are_kept_outermost_first(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, client = setup
    await client.get("/chained")
    await settle(monitor)
    (ev,) = await stored_errors(storage)
    chain = exception_chain(ev)
    assert [c["type"] for c in chain] == ["ValueError", "KeyError"]
    assert ev.error_type == "ValueError"
    assert ev.message == "could not build the invoice"
    assert ev.stack.index("KeyError") < ev.stack.index("ValueError: could not build")


def test_a_cycle_of_causes_is_bounded() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    ev = Monitor(storage=MemoryStorage()).capture_exception(a)
    assert ev is not None
    assert len(exception_chain(ev)) == 2


async def test_handled_errors_carry_the_request_and_scrubbed_context(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, client = setup
    r = await client.get("/handled", headers={"x-request-id": "req-77"})
    assert r.text == "ok"
    await settle(monitor)
    exc, msg = await stored_errors(storage)
    assert (exc.error_type, exc.severity, exc.handled, exc.endpoint, exc.request_id) == (
        "ValueError",
        "low",
        True,
        "/handled",
        "req-77",
    )
    assert exc.context["order"] == 7
    assert exc.context["card_number"] == "[Filtered]"
    assert exc.context["request"]["path"] == "/handled"
    assert (msg.error_type, msg.message, msg.endpoint) == (
        "Message",
        "quota nearly used up for tenant 41",
        "/handled",
    )


async def test_websocket_errors_are_reported_and_the_session_recorded(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, _ = setup
    scope = {**http_scope("/ws"), "type": "websocket", "scheme": "ws", "subprotocols": []}
    app = monitor.wrap(starlette_app(monitor))
    incoming: list[Any] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hello"},
    ]
    with pytest.raises(OSError, match="websocket handler failed"):
        await run(app, scope, incoming)
    await settle(monitor)
    found = await stored_errors(storage)
    assert [(e.error_type, e.method, e.endpoint) for e in found] == [("OSError", "WS", "/ws")]
    assert found[0].message == "websocket handler failed on 'hello'"
    (session,) = await storage.events("api_call")
    assert (session.method, session.status) == ("WS", 101)  # type: ignore[attr-defined]


async def test_fastapi_errors_and_background_tasks_are_reported() -> None:
    storage = MemoryStorage()
    monitor = Monitor(storage=storage, flush_interval=0.01)
    api = FastAPI()

    def send_receipt(order: int) -> None:
        raise LookupError(f"no template for order {order}")

    @api.get("/orders/{order_id}")
    async def order(order_id: int, tasks: BackgroundTasks) -> dict[str, int]:
        tasks.add_task(send_receipt, order_id)
        if order_id > 100:
            raise ArithmeticError("order total overflowed")
        return {"order": order_id}

    transport = httpx.ASGITransport(app=monitor.wrap(api), raise_app_exceptions=False)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/orders/5")).json() == {"order": 5}
        assert (await client.get("/orders/500")).status_code == 500
        await settle(monitor)
    found = await stored_errors(storage)
    assert sorted((e.error_type, e.endpoint) for e in found) == [
        ("ArithmeticError", "/orders/{order_id}"),
        ("LookupError", "/orders/{order_id}"),
    ]


@pytest.fixture
def log_handler() -> Iterator[tuple[Monitor, MemoryStorage, logging.Logger]]:
    storage = MemoryStorage()
    monitor = Monitor(storage=storage)
    logger = logging.getLogger("shop.payments")
    handler = ErrorLogHandler(monitor)
    logger.addHandler(handler)
    try:
        yield monitor, storage, logger
    finally:
        logger.removeHandler(handler)


async def test_the_log_handler_reports_error_records(
    log_handler: tuple[Monitor, MemoryStorage, logging.Logger],
) -> None:
    monitor, storage, logger = log_handler
    async with monitor:
        logger.warning("below the level: not reported")
        logger.error("payment %s failed", "pay_1")
        logger.error("payment %s failed", "pay_2")
        try:
            raise PermissionError("card blocked")
        except PermissionError:
            logger.exception("charging failed")
        logger.critical("ledger out of balance by %d", 3)
        logging.getLogger("asgimon.recorder").error("asgimon's own: never reported")
        await monitor.recorder.flush()
    found = await stored_errors(storage)
    assert [(e.error_type, e.severity) for e in found] == [
        ("log.ERROR", "high"),
        ("log.ERROR", "high"),
        ("PermissionError", "high"),
        ("log.CRITICAL", "critical"),
    ]
    assert found[0].fingerprint == found[1].fingerprint
    assert found[0].message == "payment pay_1 failed"
    assert found[2].context["log_message"] == "charging failed"
    assert found[2].context["logger"] == "shop.payments"


async def test_a_failure_inside_capture_leaves_the_response_alone_and_is_counted(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor, storage, client = setup

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("scrubber bug")

    monkeypatch.setattr(monitor.errors.rules.scrubber, "fork", broken)
    before = monitor.stats().internal_errors
    r = await client.get("/unavailable")
    assert (r.status_code, r.json()) == (503, {"error": "down"})
    assert (await client.get("/users/1")).status_code == 500
    assert monitor.capture_message("still never raises") is None
    assert monitor.stats().internal_errors == before + 3
    await settle(monitor)
    assert await stored_errors(storage) == []


async def test_with_the_store_down_error_capture_leaves_responses_alone_and_counts(
    tmp_path: Any,
) -> None:
    from asgimon.storage.sql import SQLStorage

    # A store that can never be opened: every write of every report fails.
    storage = SQLStorage(f"sqlite:///{tmp_path}/missing-dir/asgimon.db")
    monitor = Monitor(
        storage=storage, flush_interval=0.01, retry_deadline=0.2, retry_backoff_max=0.05
    )
    app = monitor.wrap(starlette_app(monitor))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for _ in range(20):
            r = await client.get("/unavailable")
            assert (r.status_code, r.json()) == (503, {"error": "down"})
            r = await client.get("/users/7")
            assert (r.status_code, r.text) == (500, "Internal Server Error")
            assert (await client.get("/handled")).text == "ok"
        deadline = asyncio.get_running_loop().time() + 5
        while monitor.stats().dropped.get("storage_unavailable", 0) < 80:
            assert asyncio.get_running_loop().time() < deadline, monitor.stats()
            await asyncio.sleep(0.05)
        health = await monitor.health()
    assert health["status"] == "degraded"
    assert health["recorder"]["retries"] > 0
    # 20 times (a failing status, an exception, a handled one and a message) plus the API calls.
    assert health["recorder"]["droppedTotal"] >= 80


async def test_errors_in_tracked_functions_name_them_and_are_reported_once(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, _ = setup

    @monitor.track_function("resize-image")
    async def resize(width: int) -> None:
        raise MemoryError(f"no room for {width}px; token=tk-123456789 in the url")

    with pytest.raises(MemoryError):
        await resize(4096)
    try:
        raise TimeoutError("upstream took 30 s")
    except TimeoutError as exc:
        monitor.capture_exception(exc)
        monitor.capture_exception(exc)  # the same exception again: one report
    await settle(monitor)
    found = await stored_errors(storage)
    assert [(e.error_type, e.context.get("function_id")) for e in found] == [
        ("MemoryError", "resize-image"),
        ("TimeoutError", None),
    ]
    (invocation,) = await storage.events("function")
    assert invocation.status == "error"  # type: ignore[attr-defined]
    assert "tk-123456789" not in (invocation.error_message or "")  # type: ignore[attr-defined]
    assert "tk-123456789" not in found[0].message


async def test_a_failing_response_after_a_reported_error_is_one_report() -> None:
    storage = MemoryStorage()
    monitor = Monitor(storage=storage, flush_interval=0.01)

    async def pay(request: Request) -> Response:
        try:
            raise TimeoutError("payment provider timed out")
        except TimeoutError as exc:
            monitor.capture_exception(exc, severity="high")
        return JSONResponse({"error": "payment provider unavailable"}, status_code=503)

    app = monitor.wrap(Starlette(routes=[Route("/pay", pay), Route("/down", unavailable)]))
    transport = httpx.ASGITransport(app=app)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/pay")).status_code == 503
        assert (await client.get("/down")).status_code == 503
        await settle(monitor)
    found = await stored_errors(storage)
    assert [e.error_type for e in found] == ["TimeoutError", "HTTP 503"]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ itself fails")


def deep(n: int) -> None:
    if n:
        deep(n - 1)
    raise LookupError("at the bottom")


def cyclic() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "a"}
    loop["self"] = loop
    return loop


def _nest(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(depth):
        out = {"d": out}
    return out


BAD_REPORTS: list[tuple[str, Any, dict[str, Any]]] = [
    ("a message of ten megabytes", ValueError("x" * 10_000_000), {}),
    ("NUL and lone surrogates", ValueError("nul\x00 and \ud800 lone"), {}),
    ("an exception whose str() raises", Unprintable(), {}),
    ("an exception never raised", KeyError("no traceback"), {}),
    ("a context that refers to itself", ValueError("cycle"), {"context": cyclic()}),
    ("a context of objects and bytes", ValueError("objects"), {"context": {"o": object()}}),
    ("a context nested 500 deep", ValueError("deep"), {"context": {"d": _nest(500)}}),
    (
        "a context of a million keys",
        ValueError("wide"),
        {"context": dict.fromkeys(map(str, range(10**6)), 1)},
    ),
    ("a fingerprint of odd parts", ValueError("odd"), {"fingerprint": [None, 3, "\x00", "a:b"]}),
]


@pytest.mark.parametrize(
    ("case", "exc", "options"), BAD_REPORTS, ids=[c for c, _, _ in BAD_REPORTS]
)
async def test_any_exception_or_context_gives_a_bounded_valid_report(
    case: str, exc: BaseException, options: dict[str, Any]
) -> None:
    storage = MemoryStorage()
    monitor = Monitor(storage=storage, flush_interval=0.01)
    async with monitor:
        ev = monitor.capture_exception(exc, **options)
        await monitor.recorder.flush()
    assert ev is not None, case
    (stored,) = await stored_errors(storage)
    assert len(stored.message) <= 2000
    assert "\x00" not in stored.message
    stored.message.encode("utf-8")  # no lone surrogate left
    assert len(json.dumps(stored.context)) <= 16_384
    assert ":" not in stored.fingerprint
    assert monitor.stats().internal_errors == 0


async def test_a_recursion_deep_stack_is_bounded() -> None:
    storage = MemoryStorage()
    monitor = Monitor(storage=storage, flush_interval=0.01)
    async with monitor:
        try:
            deep(900)
        except LookupError as exc:
            ev = monitor.capture_exception(exc)
        await monitor.recorder.flush()
    assert ev is not None
    (frames,) = [len(link["frames"]) for link in exception_chain(ev)]
    assert frames == 50
    assert len(ev.stack) <= 32_768


class Haunted(Exception):
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("no attributes here")


async def test_what_the_review_found_stays_fixed(
    setup: tuple[Monitor, MemoryStorage, httpx.AsyncClient],
) -> None:
    monitor, storage, _ = setup
    # An exception whose attribute lookup fails is still reported, and nothing raises.
    assert monitor.capture_exception(Haunted("odd")) is not None
    # One tracker shared by concurrent tasks, and nested: no ValueError into host code.
    shared = monitor.track_function("shared")

    async def use() -> None:
        async with shared:
            await asyncio.sleep(0.01)

    await asyncio.gather(use(), use())
    with shared, shared:
        pass
    # A secret header past the first 40, echoed in a message: still blanked.
    headers = [(f"x-h{i}".encode(), b"v") for i in range(45)]
    headers.append((b"x-api-key", b"late-secret-987654"))
    scope = {**http_scope("/late"), "headers": headers}
    monitor.capture_unhandled(ValueError("rejected late-secret-987654"), scope)
    await settle(monitor)
    found = await stored_errors(storage)
    assert "late-secret-987654" not in repr(found)
    assert len(found[-1].context["request"]["headers"]) == 40


async def test_a_tracked_function_in_a_request_scrubs_its_stored_message() -> None:
    storage = MemoryStorage()
    monitor = Monitor(storage=storage, flush_interval=0.01, api_call_sample_rate=1.0)

    async def call(request: Request) -> Response:
        async with monitor.track_function("charge"):
            raise PermissionError("rejected " + request.headers["x-api-key"])

    app = monitor.wrap(Starlette(routes=[Route("/charge", call)]))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/charge", headers={"x-api-key": "K-SECRET-123456"})
        assert r.status_code == 500
        await settle(monitor)
    everything = repr(await storage.events("function")) + repr(await storage.events("error"))
    assert "K-SECRET-123456" not in everything
    assert "[Filtered]" in everything
