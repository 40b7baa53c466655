"""GET /api/functions/{projectId}: every field against figures computed from raw events."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import FunctionInvocation, Monitor, Storage
from asgimon.analytics.functions import EDGES_MS
from asgimon.analytics.ranges import parse_range

NOW = time.time()


def away_from_edges(rng: random.Random) -> float:
    """A duration at least 3 % from every bucket edge: bins are 2 % wide."""
    while True:
        value = rng.lognormvariate(4, 1.5)
        if all(abs(value - edge) > 0.03 * edge for edge in EDGES_MS):
            return value


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


async def get(monitor: Monitor, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.get(path)


@pytest.mark.parametrize("query", ["", "?range=24h"])
async def test_every_field_matches_the_raw_invocations(storage: Storage, query: str) -> None:
    rng = random.Random(11)
    calls = [
        FunctionInvocation(
            project_id="shop",
            timestamp=NOW - rng.uniform(0, 10 * 86_400),
            function_id=rng.choice(["resize", "render", "mail"]),
            status="error" if rng.random() < 0.1 else "success",
            duration_ms=away_from_edges(rng),
            cold_start=rng.random() < 0.2,
        )
        for _ in range(600)
    ]
    await storage.write(calls)
    body = (await get(Monitor(storage=storage), f"/analytics/api/functions/shop{query}")).json()

    span = parse_range(dict(p.split("=") for p in query.lstrip("?").split("&") if p))
    inside = [c for c in calls if span.start <= c.timestamp < span.end]
    durations = [c.duration_ms for c in inside]
    assert body["totalInvocations"] == len(inside)
    assert body["avgExecutionTime"] == pytest.approx(sum(durations) / len(durations))
    assert abs(body["p95ExecutionTime"] - exact(durations, 0.95)) <= 0.02 * exact(durations, 0.95)
    errors = [c for c in inside if c.status == "error"]
    assert body["errorRate"] == pytest.approx(len(errors) / len(inside))
    per = Counter(c.function_id for c in inside)
    assert body["invocationsByFunction"] == [
        {"functionId": f, "count": n} for f, n in sorted(per.items())
    ]
    bad = Counter(c.function_id for c in errors)
    assert body["errorsByFunction"] == [
        {"functionId": f, "count": bad.get(f, 0)} for f in sorted(per)
    ]
    edges = (0.0, *EDGES_MS, math.inf)
    want = [sum(1 for d in durations if lo < d <= hi) for lo, hi in itertools.pairwise(edges)]
    assert [b["count"] for b in body["executionTimeDistribution"]] == want
    for row in body["functions"]:
        mine = [c.duration_ms for c in inside if c.function_id == row["functionId"]]
        assert row["invocations"] == len(mine)
        assert row["avgExecutionTime"] == pytest.approx(sum(mine) / len(mine))
        assert abs(row["p99ExecutionTime"] - exact(mine, 0.99)) <= 0.02 * exact(mine, 0.99)


async def test_no_invocations_give_zeros(storage: Storage) -> None:
    body = (await get(Monitor(storage=storage), "/analytics/api/functions/none?range=1h")).json()
    assert (body["totalInvocations"], body["errorRate"], body["avgExecutionTime"]) == (0, 0.0, None)
    assert body["functions"] == body["invocationsByFunction"] == []
    assert sum(b["count"] for b in body["executionTimeDistribution"]) == 0
