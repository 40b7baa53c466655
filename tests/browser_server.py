"""A real uvicorn in a thread serving a host app with asgimon, for the browser tests.

The store is seeded before the server starts, in the server's own event loop, and the host
app answers ``/work`` (for the live figures) and ``/boom/{text}`` (an exception whose
message is the path).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgimon import Event, MemoryStorage, Monitor

from .pg_cluster import free_port


@dataclass
class Served:
    base_url: str
    monitor: Monitor
    server: uvicorn.Server

    @property
    def mount(self) -> str:
        return self.base_url + self.monitor.settings.mount_path


async def _ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


async def _boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom at " + request.path_params["text"])


@contextmanager
def serve(events: Sequence[Event], **settings: Any) -> Iterator[Served]:
    storage = MemoryStorage()
    # The pages' tests make the host fail on purpose, more often than its default rate limit
    # allows one client; the rate-limit page's own tests turn it back on.
    settings.setdefault("rate_limit_enabled", False)
    monitor = Monitor(
        storage=storage, project_id="shop", flush_interval=0.2, api_call_sample_rate=1.0, **settings
    )
    host = Starlette(routes=[Route("/work", _ping), Route("/boom/{text:path}", _boom)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(monitor.wrap(host), host="127.0.0.1", port=port, log_level="warning")
    )

    async def main() -> None:
        await storage.write(list(events))
        await server.serve()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", monitor, server)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        assert not thread.is_alive(), "the server did not stop: a live stream held it?"
