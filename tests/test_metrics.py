"""``GET {mount}/metrics``: Prometheus and OpenMetrics text that parses, agrees with the JSON
API and with the raw events, shows a principal only its projects, and counts exactly
across four uvicorn workers."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from asgimon import (
    ApiCall,
    BuildEvent,
    DeploymentEvent,
    DomainEvent,
    ErrorEvent,
    Event,
    FunctionInvocation,
    MemoryStorage,
    Monitor,
    Storage,
)
from asgimon.dashboard.metric_families import BUCKETS_S, FAMILIES, Snapshot
from asgimon.dashboard.metrics import RollupCollector, encode, read_project
from asgimon.events import RateLimitEvent
from asgimon.storage.sql import SQLStorage

from . import uvicorn_proc
from .tokens import JWT_SETTINGS, bearer, mint

DAY = 86_400
NOW = time.time()
ORIGIN = NOW // DAY * DAY
# Every event of the history falls today, before NOW (even just after midnight).
SPAN = min(600.0, NOW - ORIGIN)
# Durations keep 3 % away from every bucket bound: the histogram's bins are 2 % wide.
DURATIONS_MS = (1, 3, 7, 15, 30, 40, 60, 90, 150, 400, 600, 900, 2000, 4000, 6000, 9000, 12000)
ROUTES = (("GET", "/items/{id}"), ("POST", "/orders"), ("GET", "/"))
OPENMETRICS = "application/openmetrics-text;version=1.0.0"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# The OpenMetrics parser has no annotations; this is its signature.
openmetrics_families: Callable[[str], Iterator[Metric]] = (
    openmetrics_parser.text_string_to_metric_families
)


ERROR_TYPES = ("KeyError", "TimeoutError", "ValueError")


def today(rng: random.Random) -> float:
    return NOW - SPAN + rng.random() * SPAN * 0.99


def history(project: str = "shop", seed: int = 3) -> list[Event]:
    """A day of every kind of event, and one API call yesterday that counts nowhere today."""
    rng = random.Random(seed)
    events: list[Event] = []
    for _ in range(300):
        method, endpoint = rng.choice(ROUTES)
        duration = float(rng.choice(DURATIONS_MS))
        events.append(
            ApiCall(
                project_id=project,
                timestamp=today(rng),
                method=method,
                endpoint=endpoint,
                status=rng.choice((200, 201, 404, 500, 503)),
                duration_ms=duration,
                total_ms=duration,
            )
        )
    for _ in range(60):
        failed = rng.random() < 0.3
        events.append(
            FunctionInvocation(
                project_id=project,
                timestamp=today(rng),
                function_id=rng.choice(("resize", "send")),
                status="error" if failed else "success",
                duration_ms=float(rng.choice(DURATIONS_MS)),
                error_type="TimeoutError" if failed else None,
            )
        )
    for i in range(40):
        error_type = rng.choice(ERROR_TYPES)
        events.append(
            ErrorEvent(
                project_id=project,
                timestamp=today(rng),
                error_type=error_type,
                fingerprint=f"{ERROR_TYPES.index(error_type):032x}",
                severity=rng.choice(("low", "high", "critical")),
                message=f"failure {i}",
            )
        )
    for i in range(12):
        events.append(
            DeploymentEvent(
                project_id=project,
                timestamp=today(rng),
                deployment_id=f"d{i}",
                type="completed",
                status=rng.choice(("success", "failure")),
                duration_ms=rng.uniform(1e3, 9e4),
                framework=rng.choice(("nextjs", None)),
            )
        )
    events += [
        DeploymentEvent(
            project_id=project, timestamp=today(rng), deployment_id=f"s{i}", type="started"
        )
        for i in range(5)
    ]
    for i in range(10):
        end = today(rng)
        events.append(
            BuildEvent(
                project_id=project,
                timestamp=end,
                deployment_id=f"d{i}",
                phase=rng.choice(("clone", "install", "build")),
                start_time=end - rng.uniform(1, 60),
                end_time=end,
                status=rng.choice(("success", "failure")),
                framework="nextjs",
            )
        )
    events += [
        DomainEvent(project_id=project, timestamp=today(rng), domain="shop.example", type=t)
        for t in ("added", "verified", "ssl_issued", "added")
    ]
    for i in range(5):
        at = today(rng)
        events.append(
            RateLimitEvent(
                project_id=project,
                timestamp=at,
                key=f"user:{i}",
                rule=rng.choice(("default", "/orders")),
                count=i + 1,
                last_at=at,
                shadow=i == 4,
            )
        )
    events.append(
        ApiCall(
            project_id=project,
            timestamp=ORIGIN - 3600,
            endpoint="/items/{id}",
            duration_ms=3.0,
            total_ms=3.0,
        )
    )
    return events


def parse(text: str) -> Samples:
    """Every sample of a text exposition, as prometheus_client's own parser reads it."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def client(monitor: Monitor, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=(host, 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://localhost")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Storage = (
        MemoryStorage() if request.param == "memory" else SQLStorage(f"sqlite:///{tmp_path}/m.db")
    )
    await backend.start()
    await backend.write(history())
    yield backend
    await backend.close()


async def scrape(monitor: Monitor, accept: str = "", **params: Any) -> httpx.Response:
    async with client(monitor) as c:
        return await c.get("/analytics/metrics", params=params, headers={"accept": accept})


async def test_the_text_parses_and_agrees_with_the_json_api(store: Storage) -> None:
    monitor = Monitor(storage=store, api_rate_limit=None)
    monitor.dashboard.metrics.clock = lambda: NOW
    response = await scrape(monitor)
    window = {"start": iso(ORIGIN), "end": iso(NOW)}
    async with client(monitor) as c:
        api = {
            name: (await c.get(f"/analytics/api/{name}/shop", params=window)).json()
            for name in ("performance", "functions", "errors", "deployments", "ratelimits")
        }
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse(response.text)

    endpoints = api["performance"]["endpoints"]
    assert len(endpoints) == len(ROUTES)
    for e in endpoints:
        route = {"http_request_method": e["method"], "http_route": e["endpoint"]}
        count = total(samples, "http_server_request_duration_seconds_count", **route)
        assert count == e["count"], e
        inf = total(samples, "http_server_request_duration_seconds_bucket", le="+Inf", **route)
        assert inf == e["count"], e
        assert total(samples, "asgimon_http_server_errors_total", **route) == e["errors"], e
    functions = api["functions"]
    for f in functions["invocationsByFunction"]:
        name = {"faas_name": f["functionId"]}
        both = total(samples, "faas_invocations_total", **name) + total(
            samples, "faas_errors_total", **name
        )
        assert both == f["count"], f
        assert total(samples, "faas_invoke_duration_seconds_count", **name) == f["count"], f
    for f in functions["errorsByFunction"]:
        assert total(samples, "faas_errors_total", faas_name=f["functionId"]) == f["count"], f
    assert total(samples, "asgimon_errors_total") == api["errors"]["totalErrors"]
    for s in api["errors"]["errorsBySeverity"]:
        assert total(samples, "asgimon_errors_total", severity=s["severity"]) == s["count"], s
    for t in api["errors"]["errorsByType"]:
        assert total(samples, "asgimon_errors_total", error_type=t["type"]) == t["count"], t
    for d in api["deployments"]["deploymentsByStatus"]:
        assert total(samples, "asgimon_deployments_total", status=d["status"]) == d["count"], d
    for r in api["ratelimits"]["byRule"]:
        rule = {"rule": r["rule"]}
        enforced = total(
            samples, "asgimon_rate_limit_denied_requests_total", mode="enforced", **rule
        )
        assert enforced == r["denied"], r
        shadow = total(samples, "asgimon_rate_limit_denied_requests_total", mode="shadow", **rule)
        assert shadow == r["shadowDenied"], r


async def test_every_figure_agrees_with_the_raw_events(store: Storage) -> None:
    monitor = Monitor(storage=store, api_rate_limit=None)
    monitor.dashboard.metrics.clock = lambda: NOW
    samples = parse((await scrape(monitor)).text)
    events = [e for e in history() if e.timestamp >= ORIGIN]
    calls = [e for e in events if isinstance(e, ApiCall)]
    for method, endpoint in ROUTES:
        mine = [c for c in calls if (c.method, c.endpoint) == (method, endpoint)]
        route = {"project": "shop", "http_request_method": method, "http_route": endpoint}
        for bound in BUCKETS_S:
            within = sum(c.duration_ms <= bound * 1000 for c in mine)
            le = total(
                samples, "http_server_request_duration_seconds_bucket", le=repr(bound), **route
            )
            assert le == within, (endpoint, bound)
        seconds = sum(c.duration_ms for c in mine) / 1000
        assert total(samples, "http_server_request_duration_seconds_sum", **route) == pytest.approx(
            seconds
        )
        errors = sum(c.status >= 500 for c in mine)
        assert total(samples, "asgimon_http_server_errors_total", **route) == errors
    invocations = [e for e in events if isinstance(e, FunctionInvocation)]
    ok = Counter(i.function_id for i in invocations if i.status == "success")
    for name, n in ok.items():
        assert total(samples, "faas_invocations_total", faas_name=name) == n
    deployments = [e for e in events if isinstance(e, DeploymentEvent)]
    steps = Counter(d.type for d in deployments)
    for step, n in steps.items():
        assert total(samples, "asgimon_deployment_events_total", type=step) == n
    done = [d for d in deployments if d.type == "completed"]
    framework = Counter(d.framework or "unknown" for d in done if d.status == "failure")
    for name, n in framework.items():
        failed = total(samples, "asgimon_deployments_total", framework=name, status="failure")
        assert failed == n
    seconds = sum(d.duration_ms or 0.0 for d in done) / 1000
    assert total(samples, "asgimon_deployment_duration_seconds_sum") == pytest.approx(seconds)
    builds = [e for e in events if isinstance(e, BuildEvent)]
    for phase in {b.phase for b in builds}:
        failed = sum(b.phase == phase and b.status == "failure" for b in builds)
        assert total(samples, "asgimon_build_phases_total", phase=phase, status="failure") == failed
        count = total(samples, "asgimon_build_phase_duration_seconds_count", phase=phase)
        assert count == sum(b.phase == phase for b in builds)
    domains = Counter(e.type for e in events if isinstance(e, DomainEvent))
    for step, n in domains.items():
        assert total(samples, "asgimon_domain_events_total", type=step) == n


async def test_openmetrics_when_accept_asks_for_it() -> None:
    storage = MemoryStorage()
    await storage.write(history())
    monitor = Monitor(storage=storage, api_rate_limit=None)
    monitor.dashboard.metrics.clock = lambda: NOW
    response = await scrape(monitor, OPENMETRICS)
    plain = await scrape(monitor)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    families = {f.name: f for f in openmetrics_families(response.text)}
    assert response.text.count("# EOF") == 1
    assert response.text.endswith("# EOF\n")
    hist = families["http_server_request_duration_seconds"]
    assert hist.unit == "seconds"
    created = {s.value for s in hist.samples if s.name.endswith("_created")}
    assert created == {ORIGIN}
    counts = [s.value for s in hist.samples if s.name.endswith("_count")]
    assert sum(counts) == 300
    # The classic text format carries no _created series: each would be one more gauge.
    assert "_created" not in plain.text
    assert {f.name for f in FAMILIES} <= {
        f.name + ("_total" if f.type == "counter" else "") for f in families.values()
    }


async def test_a_new_day_starts_the_counters_again() -> None:
    """Counters count from 00:00 UTC: the next day is a reset, which rate() takes in stride."""
    storage = MemoryStorage()
    await storage.write(history())
    monitor = Monitor(storage=storage, api_rate_limit=None)
    monitor.dashboard.metrics.clock = lambda: NOW
    before = parse((await scrape(monitor)).text)
    await storage.write(history(seed=4))
    later = parse((await scrape(monitor)).text)
    monitor.dashboard.metrics.clock = lambda: ORIGIN + DAY + 60
    tomorrow = parse((await scrape(monitor)).text)
    counters = [k for k in before if k[0].endswith(("_total", "_count", "_sum", "_bucket"))]
    assert counters
    for key in counters:
        assert later[key] >= before[key], key
    assert total(later, "http_server_request_duration_seconds_count") == 600
    assert total(tomorrow, "http_server_request_duration_seconds_count") == 0


async def test_a_principal_sees_only_its_projects() -> None:
    storage = MemoryStorage()
    await storage.write(history("tenant-a") + history("tenant-b", seed=5))
    key = "an-ingest-key-of-at-least-32-characters"
    monitor = Monitor(
        storage=storage, api_rate_limit=None, ingest_keys=(("tenant-a", key),), **JWT_SETTINGS
    )
    alice = bearer(mint({"sub": "alice", "projects": ["tenant-a"]}))
    admin = bearer(mint({"sub": "ops", "admin": True}))
    async with client(monitor, "203.0.113.9") as c:
        mine = await c.get("/analytics/metrics", headers=alice)
        narrowed = await c.get("/analytics/metrics?project=tenant-a", headers=alice)
        theirs = await c.get("/analytics/metrics?project=tenant-b", headers=alice)
        everyone = await c.get("/analytics/metrics", headers=admin)
        nobody = await c.get("/analytics/metrics", headers={"accept": "text/plain"})
        ingest_only = await c.get("/analytics/metrics", headers=bearer(key))
    assert mine.status_code == 200
    seen = parse(mine.text)
    assert {dict(labels).get("project") for _, labels in seen} == {"tenant-a"}
    assert "tenant-b" not in mine.text
    assert total(seen, "http_server_request_duration_seconds_count") == 300
    # The process's own health is the operator's, as in /api/health.
    assert total(seen, "asgimon_recorder_recorded_events_total") == 0
    assert "process=" not in mine.text
    assert narrowed.text == mine.text
    assert theirs.status_code == 403
    assert theirs.json()["error"]["code"] == "forbidden_project"
    all_seen = parse(everyone.text)
    assert total(all_seen, "http_server_request_duration_seconds_count", project="tenant-b") == 300
    assert 'asgimon_storage_up{process="' in everyone.text
    # A scraper without a token is told so; it is not sent to the sign-in page.
    assert nobody.status_code == 401
    assert nobody.headers["www-authenticate"] == "Bearer"
    # An ingest key writes events and opens nothing else.
    assert ingest_only.status_code == 404


@pytest.mark.parametrize(
    ("host", "headers"),
    [
        ("203.0.113.9", {}),
        ("127.0.0.1", {"x-forwarded-for": "203.0.113.9"}),
        ("127.0.0.1", {"forwarded": "for=203.0.113.9"}),
    ],
)
async def test_strangers_get_a_404(host: str, headers: dict[str, str]) -> None:
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit=None)
    async with client(monitor, host) as c:
        response = await c.get("/analytics/metrics", headers=headers)
    assert response.status_code == 404
    assert "asgimon" not in response.text


async def test_a_bad_project_parameter_is_a_422() -> None:
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit=None)
    response = await scrape(monitor, project="a/b")
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "project"


async def test_without_prometheus_client_the_answer_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client.exposition", None)
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit=None)
    response = await scrape(monitor)
    assert response.status_code == 501
    assert "pip install 'asgimon[prometheus]'" in response.json()["error"]["message"]


async def test_the_openapi_document_lists_the_text_answer() -> None:
    monitor = Monitor(storage=MemoryStorage(), api_rate_limit=None)
    async with client(monitor) as c:
        document = (await c.get("/analytics/api/openapi.json")).json()
    answer = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(answer) == {"text/plain", "application/openmetrics-text"}


def many_endpoints(n: int) -> Iterable[Event]:
    for i in range(n):
        yield ApiCall(
            project_id="big",
            timestamp=NOW - 1,
            endpoint=f"/route/{i}/{{id}}",
            duration_ms=float(DURATIONS_MS[i % len(DURATIONS_MS)]),
            total_ms=1.0,
        )


@pytest.mark.parametrize("openmetrics", [False, True])
async def test_encoding_yields_to_the_loop_and_matches_the_whole(openmetrics: bool) -> None:
    """A few series at a time, the loop free in between; the same bytes as one encoding."""
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    storage = MemoryStorage()
    await storage.write(list(many_endpoints(400)))
    snapshot = Snapshot(origin=ORIGIN, projects=[await read_project(storage, "big", NOW)])
    collector = RollupCollector(snapshot, created=openmetrics)
    encoder = generate_openmetrics if openmetrics else generate_latest
    ticks = 0
    done = asyncio.Event()

    async def tick() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    body = await encode(collector, encoder, openmetrics=openmetrics)
    done.set()
    await ticker
    assert body == encoder(collector)
    assert ticks > 5


# -- four uvicorn workers on one SQLite file ------------------------------------------------

N_REQUESTS = 400
ITEMS = {"http_request_method": "GET", "http_route": "/items/{item_id}"}


async def scrape_counts(base_url: str, n: int) -> list[tuple[str, float]]:
    """``n`` scrapes at once on connections of their own: (the answering process, the count
    of ``GET /items/{item_id}``) of each."""

    async def one(k: int) -> tuple[str, float]:
        await asyncio.sleep(k * 0.005)
        async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as c:
            response = await c.get("/analytics/metrics")
        assert response.status_code == 200, response.text
        samples = parse(response.text)
        (process,) = {dict(ls)["process"] for name, ls in samples if name.endswith("_up")}
        return process, total(samples, "http_server_request_duration_seconds_count", **ITEMS)

    return list(await asyncio.gather(*(one(k) for k in range(n))))


@pytest.mark.slow
async def test_four_workers_count_every_request_whoever_answers(tmp_path: Path) -> None:
    server_cm = uvicorn_proc.uvicorn_server(
        "tests.apps.worker_app:create_app",
        f"sqlite:///{tmp_path / 'workers.db'}",
        tmp_path / "uvicorn.log",
        workers=4,
    )
    async with server_cm as server, asyncio.timeout(60):
        traffic = await uvicorn_proc.send_items(
            [server.base_url],
            N_REQUESTS,
            concurrency=16,
            reconnect_every=10,
            send_request_ids=False,
        )
        assert traffic.statuses == Counter({200: N_REQUESTS}), server.output()
        assert len(traffic.by_worker) > 1, traffic.by_worker
        # Each worker flushes within its 0.2 s interval: scrape until the last has.
        deadline = time.monotonic() + 15
        seen = await scrape_counts(server.base_url, 1)
        while seen[0][1] < N_REQUESTS and time.monotonic() < deadline:
            seen = await scrape_counts(server.base_url, 1)
        answers: set[str] = set()
        for _ in range(10):
            seen = await scrape_counts(server.base_url, 12)
            assert {count for _, count in seen} == {N_REQUESTS}, (seen, server.output())
            answers |= {process for process, _ in seen}
            if len(answers) == server.workers:
                break
    assert len(answers) > 1, f"one worker answered every scrape: {answers}"
