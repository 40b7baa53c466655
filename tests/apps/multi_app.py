"""Host apps for many workers and many servers sharing one PostgreSQL database.

Serve with ``uvicorn tests.apps.multi_app:create_app --factory`` (or ``create_probe_app``)
from the project root, ``ANALYTICS_STORAGE_URL`` naming the database under test. Every
response names the worker process that served it in ``x-worker-pid``.

``create_probe_app`` also registers a periodic job, ``probe``, every second: each run appends
one line ``"<pid> <wall time>"`` to the file named by ``ASGIMON_PROBE_LOG``. Lines this short
are written with one ``write()`` on an ``O_APPEND`` file, so workers never interleave them.
"""

from __future__ import annotations

import asyncio
import os
import time
import zlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from asgimon import Monitor

PROBE_JOB = "probe"
PROBE_EVERY_S = 1
MAX_DELAY_S = 0.003


def _pid_header() -> dict[str, str]:
    return {"x-worker-pid": str(os.getpid())}


def delay_for(item_id: str) -> float:
    """0-3 ms, fixed per item id, so latencies spread over many histogram bins."""
    return (zlib.crc32(item_id.encode()) % 31) / 30 * MAX_DELAY_S


async def item(request: Request) -> Response:
    item_id = request.path_params["item_id"]
    await asyncio.sleep(delay_for(item_id))
    return JSONResponse({"item": item_id}, headers=_pid_header())


async def health(request: Request) -> Response:
    """Excluded from recording by asgimon's defaults: used to wait for the workers."""
    return PlainTextResponse("ok", headers=_pid_header())


def _host() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", item), Route("/health", health)])


def create_app() -> ASGIApp:
    """Built per worker process, so each reads the environment and owns its monitor."""
    return Monitor.from_env().wrap(_host())


def _append(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line)


def create_probe_app() -> ASGIApp:
    """:func:`create_app` plus the ``probe`` job, logging each run to ``ASGIMON_PROBE_LOG``."""
    monitor = Monitor.from_env()
    path = os.environ["ASGIMON_PROBE_LOG"]

    async def probe() -> None:
        line = f"{os.getpid()} {time.time():.6f}\n"
        await asyncio.to_thread(_append, path, line)

    monitor.every(PROBE_JOB, PROBE_EVERY_S, probe)
    return monitor.wrap(_host())
