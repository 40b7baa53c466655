"""Analytics answer plain figures; only the JSON API spells them camelCase with ISO instants.

An alert rule or a page reads ``figures["api_error_rate"]`` and compares datetimes; the
API's answer for the same query is exactly those figures in their wire form.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import httpx
from starlette.applications import Starlette

from asgimon import Event, MemoryStorage, Monitor
from asgimon.analytics.query import Query
from asgimon.analytics.ranges import parse_range
from asgimon.dashboard.endpoints import ENDPOINTS, OVERVIEW
from asgimon.dashboard.wire import to_wire

from .test_analytics_endpoints import world

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
ISO_TEXT = re.compile(r"^\d{4}-\d\d-\d\d")


def walk(value: Any, path: str = "") -> Iterator[tuple[str, str | None, Any]]:
    """(path, key, None) for each key of each mapping, (path, None, leaf) for each leaf."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path, k, None
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, f"{path}[{i}]")
    else:
        yield path, None, value


async def test_every_analytics_answer_is_plain_figures_and_the_api_answers_its_wire_form() -> None:
    now = time.time()
    storage = MemoryStorage()
    await storage.write(world(now).all())
    monitor = Monitor(storage=storage)
    span = parse_range({"range": "30d"}, now)
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        for name, endpoint in {**ENDPOINTS, "overview": OVERVIEW}.items():
            q = Query(storage, monitor.settings, "shop", span, now, {"kind": "error"})
            figures = await endpoint.compute(q)
            seen_instant = False
            for path, key, value in walk(figures):
                if key is not None:
                    assert SNAKE.match(key), f"{name}: {path}.{key} is not a plain name"
                elif isinstance(value, str):
                    assert not ISO_TEXT.match(value), f"{name}: {path} is text, not an instant"
                seen_instant |= isinstance(value, date | datetime)
            # The overview's rows are totals; every other answer has a range or a trend.
            assert seen_instant or name in ("events", "overview"), name
            if name == "events":
                assert figures["events"]
                assert all(isinstance(e, Event) for e in figures["events"])
            if name == "overview":
                continue  # the API answers a list of these rows, checked below
            params = "?range=30d" + ("&kind=error" if name == "events" else "")
            answer = await client.get(f"/analytics/api/{name}/shop{params}")
            assert answer.status_code == 200, answer.text
            # Same request time? The range is whole days, so both cover the same buckets.
            assert answer.json() == to_wire(figures), name
        overview = (await client.get("/analytics/api/overview?range=30d")).json()
        row = next(r for r in overview["projects"] if r["projectId"] == "shop")
        q = Query(storage, monitor.settings, "shop", span, now, {})
        assert row == to_wire(await OVERVIEW.compute(q))


def test_the_wire_form_spells_names_and_instants_and_keeps_data() -> None:
    at = datetime.fromisoformat("2026-03-01T12:30:00.250000+00:00")
    assert to_wire(
        {"p95_api_latency": 1.5, "first_seen": at, "by_date": [{"date": at.date(), "count": 2}]}
    ) == {
        "p95ApiLatency": 1.5,
        "firstSeen": "2026-03-01T12:30:00.250000Z",
        "byDate": [{"date": "2026-03-01", "count": 2}],
    }
