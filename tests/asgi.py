"""A minimal ASGI driver for what httpx's ASGITransport cannot do: websockets, disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message

Script = Callable[[], Awaitable[Message]]


def http_scope(
    path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers or [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def run(
    app: ASGIApp, scope: dict[str, Any], incoming: list[Message | float]
) -> list[Message]:
    """Feed ``incoming`` messages to the app (a float is a pause first), collect what it sends.

    When ``incoming`` runs out, ``receive`` blocks forever, as a quiet client does.
    """
    sent: list[Message] = []
    queue = list(incoming)

    async def receive() -> Message:
        while queue:
            item = queue.pop(0)
            if isinstance(item, float):
                await asyncio.sleep(item)
                continue
            return item
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent
