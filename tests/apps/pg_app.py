"""A host app for the PostgreSQL process-lifecycle faults (F21, F22), configured by environment.

Serve it with ``uvicorn tests.apps.pg_app:create_app --factory`` from the project root, with
``ANALYTICS_STORAGE_URL`` naming the private cluster's database. Every response names the
worker process that served it in ``x-worker-pid``; ``/slow/{n}`` takes ``SLOW_S`` seconds,
so a test can have requests in flight when it signals the server.
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from asgimon import Monitor

SLOW_S = 0.5


def _pid_header() -> dict[str, str]:
    return {"x-worker-pid": str(os.getpid())}


async def item(request: Request) -> Response:
    return JSONResponse({"item": request.path_params["n"]}, headers=_pid_header())


async def slow(request: Request) -> Response:
    await asyncio.sleep(SLOW_S)
    return JSONResponse({"slow": request.path_params["n"]}, headers=_pid_header())


async def health(request: Request) -> Response:
    """Excluded from recording by asgimon's defaults: used to wait for the workers."""
    return PlainTextResponse("ok", headers=_pid_header())


def create_app() -> ASGIApp:
    """Built per worker process, so each reads the environment and owns its monitor."""
    host = Starlette(
        routes=[
            Route("/items/{n}", item),
            Route("/slow/{n}", slow),
            Route("/health", health),
        ]
    )
    return Monitor.from_env().wrap(host)
