"""Figures that code inside a request attaches to it, reaching the subscribers with the call."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgimon import ApiCall, Event, MemoryStorage, Monitor
from asgimon.context import add_figure, current


async def query(request: Request) -> PlainTextResponse:
    n = int(request.path_params["n"])
    for _ in range(n):
        add_figure("db_ms", 1.5)  # a database instrumentation, once per query
        await asyncio.sleep(0.001)  # the other requests run meanwhile
    add_figure("cache", "miss" if n else "hit")
    return PlainTextResponse("ok")


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def test_figures_added_inside_a_request_reach_its_call_and_no_other() -> None:
    seen: list[ApiCall] = []

    async def collect(events: Sequence[Event]) -> None:
        seen.extend(ev for ev in events if isinstance(ev, ApiCall))

    # Every call kept raw, so that the one without figures is handed over too.
    monitor = Monitor(storage=MemoryStorage(), flush_interval=0.01, api_call_sample_rate=1.0)
    monitor.subscribe(collect, name="collector")
    app = monitor.wrap(Starlette(routes=[Route("/q/{n:int}", query), Route("/plain", plain)]))
    async with monitor:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as c:
            # At once, so the requests interleave: each keeps its own figures.
            await asyncio.gather(*(c.get(f"/q/{n}") for n in (0, 1, 2, 3)), c.get("/plain"))
        await monitor.recorder.flush()
        for _ in range(100):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.01)
    by_path: defaultdict[str, list[ApiCall]] = defaultdict(list)
    for call in seen:
        by_path[call.endpoint].append(call)
    figures = sorted((c.figures or {}).get("db_ms", 0.0) for c in by_path["/q/{n}"])
    assert figures == [0.0, 1.5, 3.0, 4.5]
    caches = sorted((c.figures or {})["cache"] for c in by_path["/q/{n}"])
    assert caches == ["hit", "miss", "miss", "miss"]
    assert [c.figures for c in by_path["/plain"]] == [None]


def test_outside_a_request_there_is_no_context_and_adding_does_nothing() -> None:
    assert current() is None
    add_figure("db_ms", 1.0)
    assert current() is None
