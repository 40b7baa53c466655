"""F24: storage work never blocks the event loop the host app runs on."""

from __future__ import annotations

import asyncio
import gc
import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import Monitor
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
    assert monitor.stats().written == 3021
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow == []
