"""Serving the demo: the dashboard's address first, a week of history, then live traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import uvicorn
from starlette.types import ASGIApp

from asgimon.errors import AsgimonError, StorageError
from asgimon.monitor import Monitor

from .app import create_app
from .history import backfill
from .traffic import synthetic_traffic

DEFAULTS = {
    "ANALYTICS_STORAGE_URL": "sqlite:///asgimon-demo.db",
    # The synthetic traffic is one client: a limit it meets only at checkout, so the
    # rate-limit page has refusals to show and the other pages have traffic.
    "RATE_LIMIT_MAX": "100000",
    "RATE_LIMIT_ENDPOINTS": "POST /checkout=120/minute",
}
"""Settings the demo uses unless the environment sets them."""

AppFactory = Callable[[Monitor], ASGIApp]


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before anything is printed: a port in use is one clear
    error, and port 0 picks a free one whose number the banner can still show."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AsgimonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _url_host(host: str) -> str:
    # A wildcard address accepts connections but is no address to connect to.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


async def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    duration: float | None = None,
    *,
    app_factory: AppFactory = create_app,
    home: str = "/projects/p1/items/1",
    environ: Mapping[str, str] | None = None,
) -> None:
    """Serve ``app_factory``'s app with synthetic traffic until Ctrl-C or ``duration`` s.

    >>> asyncio.run(serve(port=8000, duration=60))     # doctest: +SKIP
    """
    monitor = Monitor.from_env({**DEFAULTS, **(os.environ if environ is None else environ)})
    app = app_factory(monitor)
    sock = listen(host, port)
    try:
        # A store out of reach ends the demo in one line, before anything is served (the
        # monitor alone would keep retrying it, as an app should).
        await monitor.storage.start()
    except StorageError:
        sock.close()
        await monitor.storage.close()
        raise
    base = f"http://{_url_host(host)}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                await serving  # start-up failed: its exception says why
                raise AsgimonError("the demo server did not start (its log above says why)")
            await asyncio.sleep(0.05)
        mount = monitor.settings.mount_path
        print(f"asgimon dashboard: {base}{mount}/", flush=True)
        print(f"  the demo app:    {base}{home}, storage {monitor.settings.storage_url}")
        print(f"  summary (JSON):  {base}{mount}/api/summary")
        print(f"  recorder health: {base}{mount}/api/health", flush=True)
        if await backfill(monitor):
            print("  (a week of made-up history was written into the empty store)", flush=True)
        traffic = asyncio.create_task(synthetic_traffic(base, monitor))
        try:
            # Until the time is up or the server stops (uvicorn handles Ctrl-C).
            await asyncio.wait([serving], timeout=duration)
        finally:
            traffic.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await traffic
    finally:
        server.should_exit = True
        await serving
        sock.close()
