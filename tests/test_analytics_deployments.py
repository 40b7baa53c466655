"""GET /api/deployments/{projectId}: every field against figures computed from raw events."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import pytest
from starlette.applications import Starlette

from asgimon import DeploymentEvent, Monitor, Storage
from asgimon.analytics.ranges import BadQuery, parse_range

NOW = time.time()
DAY = 86_400


def test_ranges_default_to_seven_days_widened_to_whole_days() -> None:
    span = parse_range({}, now=NOW)
    assert span.resolution == "day"
    assert span.start == math.floor((NOW - 7 * DAY) / DAY) * DAY
    assert span.end == math.ceil(NOW / DAY) * DAY
    hour = parse_range({"range": "24h"}, now=NOW)
    assert (hour.resolution, hour.start % 3600, hour.end % 3600) == ("hour", 0, 0)
    explicit = parse_range(
        {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-03T12:00:00Z"}, now=NOW
    )
    assert explicit.resolution == "day"
    assert explicit.start == datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    assert explicit.end == datetime(2026, 11, 4, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"range": "2w"}, "range"),
        ({"range": ""}, "range"),
        ({"range": "7d", "start": "2026-11-01T00:00:00Z"}, "range"),
        ({"start": "2026-11-01T00:00:00Z"}, "end"),
        ({"end": "2026-11-01T00:00:00Z"}, "start"),
        ({"start": "yesterday", "end": "2026-11-01T00:00:00Z"}, "start"),
        ({"start": "2026-11-01T00:00:00", "end": "2026-11-02T00:00:00Z"}, "start"),
        ({"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "end"),
        ({"start": "2020-01-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}, "end"),
        ({"start": "0001-01-01T00:30:00+01:00", "end": "0001-01-02T00:00:00+01:00"}, "start"),
        ({"start": "9999-12-31T20:00:00-05:00", "end": "9999-12-31T22:00:00-05:00"}, "start"),
    ],
)
def test_bad_ranges_name_their_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(BadQuery) as info:
        parse_range(query, now=NOW)
    assert info.value.field == field


def history(rng: random.Random) -> list[DeploymentEvent]:
    events = []
    for i in range(120):
        ts = NOW - rng.uniform(0, 12 * DAY)
        events.append(
            DeploymentEvent(project_id="shop", timestamp=ts, deployment_id=f"d{i}", type="started")
        )
        events.append(
            DeploymentEvent(
                project_id="shop",
                timestamp=ts + 30,
                deployment_id=f"d{i}",
                type="completed",
                status=rng.choice(["success", "success", "failure"]),
                duration_ms=rng.uniform(1000, 90_000) if rng.random() < 0.9 else None,
                framework=rng.choice(["nextjs", "vite", None]),
            )
        )
    events.append(
        DeploymentEvent(
            project_id="other",
            timestamp=NOW - 60,
            deployment_id="x",
            type="completed",
            status="failure",
            framework="django",
        )
    )
    return events


async def get(monitor: Monitor, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.get(path)


@pytest.mark.parametrize("query", ["", "?range=24h", "?range=30d"])
async def test_every_field_matches_the_raw_events(storage: Storage, query: str) -> None:
    events = history(random.Random(5))
    await storage.write(events)
    monitor = Monitor(storage=storage)
    response = await get(monitor, f"/analytics/api/deployments/shop{query}")
    assert response.status_code == 200, response.text
    body = response.json()

    params = dict(p.split("=") for p in query.lstrip("?").split("&") if p)
    span = parse_range(params)
    inside = [e for e in events if e.project_id == "shop" and span.start <= e.timestamp < span.end]
    done = [e for e in inside if e.type == "completed"]
    failed = [e for e in done if e.status == "failure"]
    timed = [e.duration_ms for e in done if e.duration_ms is not None]
    assert body["totalDeployments"] == len(done)
    if done:
        assert body["successRate"] == pytest.approx((len(done) - len(failed)) / len(done))
        assert body["failureRate"] == pytest.approx(len(failed) / len(done))
    if timed:
        assert body["avgDuration"] == pytest.approx(sum(timed) / len(timed))
    by_date = Counter(datetime.fromtimestamp(e.timestamp, UTC).date().isoformat() for e in done)
    assert body["deploymentsByDate"] == [
        {"date": d, "count": c} for d, c in sorted(by_date.items())
    ]
    assert body["deploymentsByStatus"] == [
        {"status": "success", "count": len(done) - len(failed)},
        {"status": "failure", "count": len(failed)},
    ]
    frameworks = Counter(e.framework or "unknown" for e in done)
    assert body["frameworkDistribution"] == [
        {"framework": f, "count": c, "share": pytest.approx(c / len(done))}
        for f, c in sorted(frameworks.items())
    ]
    newest = sorted(inside, key=lambda e: e.timestamp, reverse=True)[:100]
    assert [d["id"] for d in body["deployments"]] == [e.id for e in newest]


async def test_an_unknown_project_or_empty_range_gives_zeros(storage: Storage) -> None:
    monitor = Monitor(storage=storage)
    body = (await get(monitor, "/analytics/api/deployments/nobody?range=1h")).json()
    assert body["totalDeployments"] == 0
    assert (body["successRate"], body["failureRate"], body["avgDuration"]) == (0.0, 0.0, None)
    assert body["deploymentsByDate"] == body["frameworkDistribution"] == body["deployments"] == []


async def test_a_bad_query_is_a_422_naming_the_field(storage: Storage) -> None:
    response = await get(Monitor(storage=storage), "/analytics/api/deployments/shop?range=5y")
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "range", "message": "must be one of 1h, 24h, 7d, 30d, 90d"}
    ]


async def test_a_csv_export_of_a_project_with_any_name_is_served(storage: Storage) -> None:
    await storage.write(
        [
            DeploymentEvent(
                project_id="项目",
                timestamp=NOW - 60,
                deployment_id="d",
                type="completed",
                status="success",
            )
        ]
    )
    response = await get(Monitor(storage=storage), "/analytics/api/deployments/项目?format=csv")
    assert response.status_code == 200
    assert 'filename="__-deployments.csv"' in response.headers["content-disposition"]
    assert response.text.count("\r\n") == 2  # the header and the one deployment
