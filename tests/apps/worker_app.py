"""A host app for multi-worker uvicorn tests, configured only through the environment.

Serve it with ``uvicorn tests.apps.worker_app:create_app --factory`` (from the project
root) and ``ANALYTICS_STORAGE_URL`` pointing at the database under test. Every response
names the worker process that served it in ``x-worker-pid``.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from asgimon import Monitor

BACKGROUND_S = 0.2


def _pid_header() -> dict[str, str]:
    return {"x-worker-pid": str(os.getpid())}


async def item(request: Request) -> Response:
    return JSONResponse({"item": request.path_params["item_id"]}, headers=_pid_header())


async def health(request: Request) -> Response:
    """Excluded from recording by asgimon's defaults: used to wait for the workers."""
    return PlainTextResponse("ok", headers=_pid_header())


async def with_background(request: Request) -> Response:
    """Answers at once, then runs a 200 ms background task after the response is sent."""
    return PlainTextResponse(
        "sent", headers=_pid_header(), background=BackgroundTask(asyncio.sleep, BACKGROUND_S)
    )


def create_app() -> ASGIApp:
    """Built per worker process, so each reads the environment and owns its monitor."""
    monitor = Monitor.from_env()

    async def critical(request: Request) -> Response:
        """Reports a critical error and answers 200: what an alert rule hears of."""
        monitor.capture_exception(RuntimeError("the ledger is out of balance"), severity="critical")
        return PlainTextResponse("reported", headers=_pid_header())

    host = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/health", health),
            Route("/background", with_background),
            Route("/critical", critical),
        ]
    )
    return monitor.wrap(host)
