"""The overview sent in parts: the header before any figure is read, each panel as its
figures are, a bad query refused before the first byte, a failing panel said in its place."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from asgimon import ErrorEvent, MemoryStorage, Monitor
from asgimon.errors import StorageUnavailable
from asgimon.rollups import Window

from .asgi import http_scope

PANELS_IN_ORDER = ('id="live-h"', 'aria-label="Key figures"', "<figcaption>", "Top errors")


def recorded(*projects: str) -> list[ErrorEvent]:
    return [
        ErrorEvent(project_id=p, timestamp=time.time() - 60, error_type="KeyError", fingerprint="k")
        for p in projects
    ]


class HeldReads(MemoryStorage):
    """Answers the rollup reads only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.holding = asyncio.Event()
        self.readers: list[asyncio.Task[Any]] = []

    async def rollups(self, window: Window, series_prefix: str | tuple[str, ...] = "") -> Any:
        reader = asyncio.current_task()
        assert reader is not None
        self.readers.append(reader)
        self.holding.set()
        await self.release.wait()
        return await super().rollups(window, series_prefix)


class FailingReads(MemoryStorage):
    """Fails the reads that ``fails`` picks, as a store that went away would."""

    def __init__(self, fails: Any) -> None:
        super().__init__()
        self.fails = fails

    async def rollups(self, window: Window, series_prefix: str | tuple[str, ...] = "") -> Any:
        self.fails("rollups", window.project_id)
        return await super().rollups(window, series_prefix)

    async def series_totals(self, window: Window, series_prefix: str | tuple[str, ...] = "") -> Any:
        self.fails("series_totals", window.project_id)
        return await super().series_totals(window, series_prefix)


def overview_scope(query: str = "project=shop&range=24h") -> dict[str, Any]:
    scope = http_scope("/analytics/", headers=[(b"host", b"localhost")])
    scope["query_string"] = query.encode()
    return scope


class Sent(list[Message]):
    """What the app has sent so far; ``body`` is set by the first bytes of the body."""

    def __init__(self) -> None:
        super().__init__()
        self.body = asyncio.Event()


async def start(monitor: Monitor, receive: Any = None) -> tuple[asyncio.Task[None], Sent]:
    """The overview requested straight through ASGI (httpx's transport would wait for the
    whole body), with what the app has sent so far."""
    sent = Sent()

    async def quiet() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)
        if message.get("body"):
            sent.body.set()

    async def request() -> None:
        await monitor.wrap(Starlette())(overview_scope(), receive or quiet, send)

    return asyncio.create_task(request()), sent


def bodies(sent: list[Message]) -> list[bytes]:
    return [m["body"] for m in sent if m["type"] == "http.response.body" and m["body"]]


async def first_bytes_while_held(sent: Sent, storage: HeldReads) -> None:
    async with asyncio.timeout(5):
        await sent.body.wait()
        await storage.holding.wait()


async def test_the_header_goes_out_before_any_figure_is_read() -> None:
    storage = HeldReads()
    await storage.write(recorded("shop", "web"))
    task, sent = await start(Monitor(storage=storage, project_id="shop"))
    await first_bytes_while_held(sent, storage)
    start_message = sent[0]
    assert start_message["status"] == 200
    headers = dict(start_message["headers"])
    assert b"script-src 'self'" in headers[b"content-security-policy"]
    assert headers[b"x-frame-options"] == b"DENY"
    first = b"".join(bodies(sent)).decode()
    assert first.startswith("<!doctype html>")
    assert '<header class="top">' in first
    assert "<h1>Overview <small>shop</small></h1>" in first
    # Nothing the held reads would give, and the document still open.
    assert 'aria-label="Key figures"' not in first
    assert "</html>" not in first

    storage.release.set()
    async with asyncio.timeout(5):
        await task
    assert len(bodies(sent)) > 3
    page = b"".join(bodies(sent)).decode()
    at = [page.index(marker) for marker in (*PANELS_IN_ORDER, "Your projects", "</footer>")]
    assert at == sorted(at)
    assert page.rstrip().endswith("</html>")
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_client_that_leaves_cancels_the_reads_still_running() -> None:
    storage = HeldReads()
    await storage.write(recorded("shop", "web"))
    left = asyncio.Event()

    async def receive() -> Message:
        await left.wait()
        return {"type": "http.disconnect"}

    task, sent = await start(Monitor(storage=storage, project_id="shop"), receive)
    await first_bytes_while_held(sent, storage)
    left.set()
    async with asyncio.timeout(5):
        await task
    # Cancelled tasks hand it on to the reads they gather, a loop turn per level.
    await asyncio.wait(storage.readers, timeout=5)
    assert all(reader.cancelled() for reader in storage.readers)
    assert "</html>" not in b"".join(bodies(sent)).decode()


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("project=shop&range=2y", 422, "range: must be one of"),
        ("project=shop&colour=red", 422, "colour: is not a parameter"),
        ("project=nope", 404, "no project of that name"),
    ],
)
async def test_a_bad_query_gets_its_whole_problem_page(
    query: str, status: int, message: str
) -> None:
    storage = HeldReads()  # never released: a refusal reads no figure
    await storage.write(recorded("shop"))
    transport = httpx.ASGITransport(
        Monitor(storage=storage, project_id="shop").wrap(Starlette()), client=("127.0.0.1", 1)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        async with asyncio.timeout(5):
            answer = await c.get(f"/analytics/?{query}")
    assert answer.status_code == status
    assert message in answer.text
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert "content-security-policy" in answer.headers
    assert not storage.readers


async def test_a_panel_whose_reads_fail_says_so_and_the_page_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fails(read: str, project: str | None) -> None:
        if project == "web":
            raise StorageUnavailable("database is locked")

    storage = FailingReads(fails)
    await storage.write(recorded("shop", "web"))
    task, sent = await start(Monitor(storage=storage, project_id="shop"))
    with caplog.at_level(logging.WARNING, logger="asgimon.dashboard"):
        async with asyncio.timeout(5):
            await task
    page = b"".join(bodies(sent)).decode()
    assert sent[0]["status"] == 200
    for marker in PANELS_IN_ORDER:
        assert marker in page
    projects = page[page.index("<h2>Your projects</h2>") :]
    assert projects.startswith(
        '<h2>Your projects</h2>\n  <p class="message">Storage is unavailable'
    )
    assert page.rstrip().endswith("</html>")
    assert "'Your projects' could not be read: database is locked" in caplog.text


async def test_a_panel_that_breaks_shows_a_message_and_logs_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fails(read: str, project: str | None) -> None:
        if read == "series_totals":
            raise KeyError("not what the figures expected")

    storage = FailingReads(fails)
    await storage.write(recorded("shop"))
    task, sent = await start(Monitor(storage=storage, project_id="shop"))
    with caplog.at_level(logging.ERROR, logger="asgimon.dashboard"):
        async with asyncio.timeout(5):
            await task
    page = b"".join(bodies(sent)).decode()
    # The live figures need no summed series; the key figures, the charts and the tables do.
    assert 'id="live-h"' in page
    assert page.count('class="panel unavailable" role="alert"') == 3
    assert page.count("This panel could not be shown") == 3
    assert "Traceback" not in page
    assert "not what the figures expected" not in page
    assert page.rstrip().endswith("</html>")
    assert "Traceback" in caplog.text
