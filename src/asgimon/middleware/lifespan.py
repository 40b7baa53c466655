"""The ASGI lifespan, seen by the middleware: the monitor starts and drains with the app."""

from __future__ import annotations

from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Startable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_lifespan(
    monitor: Startable, app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run the app's lifespan with the monitor started and stopped around it.

    An app that does not speak lifespan (it raises or returns before reading
    ``lifespan.startup``) gets the protocol answered on its behalf, so the monitor still
    starts and drains.
    """
    startup_seen = False

    async def receive_wrapper() -> Message:
        nonlocal startup_seen
        message = await receive()
        if message["type"] == "lifespan.startup":
            startup_seen = True
            await monitor.start()
        return message

    async def send_wrapper(message: Message) -> None:
        if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            await monitor.stop()
        await send(message)

    try:
        await app(scope, receive_wrapper, send_wrapper)
    except BaseException:
        if startup_seen:
            await monitor.stop()  # the app's start-up failed: the server exits, so drain now
            raise
    if startup_seen:
        return
    await _answer(monitor, receive, send)


async def _answer(monitor: Startable, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await monitor.start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await monitor.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
