"""Requests are filed under the route that served them when the router does not name it.

FastAPI's router names only its own API routes in ``scope["route"]``: its OpenAPI document,
its docs, the plain routes added with ``add_route`` and the apps it mounts are found by
their endpoint among the app's routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from asgimon import ApiCall, AsgimonMiddleware, MemoryStorage, Monitor
from asgimon.middleware.routes import EndpointRoutes
from asgimon.testing import recorded


async def plain(request: Request) -> Response:
    return PlainTextResponse(f"hello {request.path_params['name']}")


async def shared(request: Request) -> Response:
    return PlainTextResponse("shared")


def fastapi_app(static: Path) -> FastAPI:
    api = FastAPI()

    @api.get("/items/{n}")
    async def item(n: int) -> dict[str, int]:
        return {"n": n}

    api.add_route("/plain/{name}", plain)
    api.add_route("/one", shared)
    api.add_route("/other", shared)  # two routes, one endpoint: which one is not guessed
    api.mount("/static", StaticFiles(directory=static), name="static")
    return api


async def endpoints_of(monitor: Monitor, app: Any, paths: list[str]) -> list[tuple[str, int]]:
    transport = httpx.ASGITransport(monitor.wrap(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for path in paths:
            await client.get(path)
    calls = await recorded(monitor, "api_call")
    return [(c.endpoint, c.status) for c in calls if isinstance(c, ApiCall)]


async def test_fastapi_routes_outside_its_api_are_named_by_their_template(
    tmp_path: Path,
) -> None:
    (tmp_path / "app.css").write_text("body {}")
    monitor = Monitor(storage=MemoryStorage(), api_call_sample_rate=1.0, flush_interval=0.01)
    paths = ["/items/3", "/openapi.json", "/docs", "/plain/ann", "/static/app.css", "/nope"]
    async with monitor:
        found = await endpoints_of(monitor, fastapi_app(tmp_path), paths)
    assert found == [
        ("/items/{n}", 200),
        ("/openapi.json", 200),
        ("/docs", 200),
        ("/plain/{name}", 200),
        ("/static/{path}", 200),
        ("<unmatched>", 404),
    ]


async def test_an_endpoint_behind_two_routes_is_not_filed_under_either(tmp_path: Path) -> None:
    monitor = Monitor(storage=MemoryStorage(), api_call_sample_rate=1.0, flush_interval=0.01)
    async with monitor:
        found = await endpoints_of(monitor, fastapi_app(tmp_path), ["/one", "/other"])
    assert found == [("<unmatched>", 200), ("<unmatched>", 200)]


async def test_the_route_is_found_behind_the_apps_own_middleware(tmp_path: Path) -> None:
    # Added with add_middleware, the monitor's middleware wraps the app's inner stack, not
    # the app: the router is found down its chain of wrapped apps.
    monitor = Monitor(storage=MemoryStorage(), api_call_sample_rate=1.0, flush_interval=0.01)
    api = fastapi_app(tmp_path)
    api.add_middleware(AsgimonMiddleware, monitor=monitor)
    transport = httpx.ASGITransport(api)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/plain/bo")).text == "hello bo"
        await client.get("/openapi.json")
        calls = await recorded(monitor, "api_call")
    assert [c.endpoint for c in calls if isinstance(c, ApiCall)] == [
        "/plain/{name}",
        "/openapi.json",
    ]


def test_past_the_cap_an_unknown_endpoint_is_not_looked_up() -> None:
    class Counting(list[Any]):
        scans = 0

        def __iter__(self) -> Any:
            Counting.scans += 1
            return super().__iter__()

    routes = Counting([Route("/plain/{name}", plain)])
    table = EndpointRoutes(routes, max_endpoints=2)
    for endpoint in (plain, shared, plain, shared):
        table.route_of({"endpoint": endpoint})
    assert Counting.scans == 2  # once per endpoint
    assert table.route_of({"endpoint": object()}) is None
    assert Counting.scans == 2  # a third endpoint, past the cap: no scan on the request path
