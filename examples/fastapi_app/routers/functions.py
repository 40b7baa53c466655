"""``/functions/{id}/invoke``: the platform's serverless functions, each a plain coroutine
function handed the request's JSON, timed by ``monitor.track_function``."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status

from examples.fastapi_app.deps import ServicesDep, UserDep
from examples.fastapi_app.schemas import Invocation

router = APIRouter(prefix="/functions", tags=["functions"])

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_PIXELS = 40_000_000


class FunctionError(Exception):
    """A function's own failure: the caller gets a 502, the dashboard the invocation's error."""


async def resize(event: dict[str, Any]) -> dict[str, Any]:
    width, height = int(event.get("width", 800)), int(event.get("height", 600))
    if width * height > MAX_PIXELS:
        raise FunctionError(f"{width}x{height} is past the {MAX_PIXELS:,}-pixel memory limit")
    await asyncio.sleep(random.lognormvariate(-4, 0.6))
    return {"width": width, "height": height}


async def render(event: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(random.lognormvariate(-3.5, 0.7))
    if random.random() < 0.03:
        raise FunctionError("the headless browser crashed")
    return {"pages": int(event.get("pages", 1))}


async def thumbnail(event: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(random.lognormvariate(-4.5, 0.5))
    return {"size": int(event.get("size", 128))}


FUNCTIONS: dict[str, Handler] = {"resize": resize, "render": render, "thumbnail": thumbnail}


@router.post("/{function_id}/invoke")
async def invoke(
    function_id: str,
    user: UserDep,
    services: ServicesDep,
    event: Annotated[dict[str, Any] | None, Body()] = None,
) -> Invocation:
    handler = FUNCTIONS.get(function_id)
    if handler is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no function {function_id!r}")
    # The first invocation in a process pays for loading the function: a cold start.
    cold = function_id not in services.warm_functions
    services.warm_functions.add(function_id)
    try:
        # Its time and outcome recorded, and its exception reported with the function's name.
        async with services.monitor.track_function(function_id, cold_start=cold):
            if cold:
                await asyncio.sleep(0.2)
            result = await handler(event or {})
    except FunctionError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"{function_id}: {exc}") from exc
    return Invocation(function=function_id, result=result)
