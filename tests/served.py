"""An ASGI app served by a real uvicorn on a free loopback port, inside the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from .pg_cluster import free_port


@contextlib.asynccontextmanager
async def serving(app: Any, *, ws: str = "none") -> AsyncIterator[int]:
    """Yields the port once the server listens; a server that fails to start raises here.
    ``ws="websockets-sansio"`` for websockets (the legacy implementation warns)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws=ws
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            for _ in range(1000):
                if server.started or task.done():
                    break
                await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
