"""The demo's app: a small deployment-platform API in plain Starlette, monitored by asgimon.

Plain Starlette because it is what asgimon already depends on: the demo runs from an
installed wheel with no web framework added.
"""

from __future__ import annotations

import asyncio
import random

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from asgimon.monitor import Monitor


def create_app(monitor: Monitor) -> ASGIApp:
    """The demo API with the middleware around it and the dashboard at its mount path."""

    async def get_item(request: Request) -> Response:
        await asyncio.sleep(random.lognormvariate(-4.5, 0.6))
        item_id: int = request.path_params["item_id"]
        if item_id % 17 == 0:
            raise HTTPException(404, "no such item")
        return JSONResponse({"project": request.path_params["project_id"], "item": item_id})

    async def checkout(request: Request) -> Response:
        await asyncio.sleep(random.lognormvariate(-3.5, 0.5))
        try:
            if random.random() < 0.05:
                raise TimeoutError("payment provider timed out")
        except TimeoutError as exc:
            monitor.capture_exception(exc, severity="high", context={"provider": "acme-pay"})
            raise HTTPException(503, "payment provider unavailable") from exc
        return JSONResponse({"status": "paid"})

    async def invoke(request: Request) -> Response:
        function_id: str = request.path_params["function_id"]
        async with monitor.track_function(function_id, cold_start=random.random() < 0.1):
            await asyncio.sleep(random.lognormvariate(-4, 0.7))
            if random.random() < 0.03:
                raise HTTPException(502, "function crashed")
        return JSONResponse({"function": function_id})

    async def home(request: Request) -> Response:
        return RedirectResponse(monitor.settings.mount_path + "/")

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/projects/{project_id}/items/{item_id:int}", get_item),
            Route("/checkout", checkout, methods=["POST"]),
            Route("/functions/{function_id}/invoke", invoke, methods=["POST"]),
        ]
    )
    return monitor.wrap(app)
