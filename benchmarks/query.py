"""Query latency of the analytics API at volume, on SQLite and PostgreSQL.

    .venv/bin/python benchmarks/query.py                     # 10M API calls + 1M events, both
    .venv/bin/python benchmarks/query.py --reuse             # keep the data; reuse it next time
    .venv/bin/python benchmarks/query.py --api-calls 2000 --domain-events 500 \\
        --backends sqlite --requests 5                       # smoke run, a few seconds
    .venv/bin/python benchmarks/query.py --reuse --trace     # where each request's time goes

Load: ``--api-calls`` ``ApiCall`` events and ``--domain-events`` other events (function
invocations, deployments started/completed with their build phases clone to upload, domain
and certificate events, captured errors), spread over the last 90 days with a daily cycle,
weekends quieter and traffic growing by half over the period, across five projects of
which the benchmarked one (``bench``) holds 80 %. API calls hit 50 endpoints, each with its
own log-normal latency, status mix and share of traffic. The events are written in time
order through ``await storage.write(batch)``, batches of 5000 with API calls and the other
kinds interleaved, which inserts the raw rows and merges the minute, hour and day rollups:
what the recorder does, without its queue. The next batch is generated while the store
writes the current one. Then the monitor's two periodic jobs run once each, as its
scheduler would (``monitor.purge()``: minute rollups beyond a week, error events beyond 30
days; ``monitor.compact()``: the histograms of every closed hour and day bucket packed), so
the store is in the steady state a running app keeps it in (on PostgreSQL followed by the
``VACUUM (ANALYZE)`` of every table of the schema that autovacuum would run after such a
change: the machine's server runs with autovacuum off).

Query: ``Monitor(storage=storage, api_rate_limit=None)`` (the API's own rate limit would
answer 429 to a benchmark) wraps an empty Starlette app; every GET endpoint is called under
``/analytics`` through ``httpx.ASGITransport`` as a loopback client with ``range=30d``. Each
round calls each endpoint twice: *cold* right after ``monitor.dashboard.api.cache.clear()``
(the closed-bucket rollup cache empty; the Redis tier is off), then *warm*, the same request
repeated at once. The rounds go round-robin over the endpoints, ``--requests`` rounds (40)
after one untimed round; figures are the median and the p95 (nearest rank: the 38th of 40)
per endpoint, backend and state. The monitor is not started, so no periodic job or flush
task runs during the timing; the API's own paths are never recorded anyway. ``--trace``
times every storage call inside each cold request (rows, time awaiting the query, time
decoding the rows) and adds that table.

The SQLite file (``--sqlite-path``) and the PostgreSQL schema (``--pg-schema``, on the
machine's shared server: only that schema is created, used and dropped) are deleted at the
end unless ``--reuse``, which keeps them and skips the load next time if they were loaded
completely with the same sizes, seed and batch by an asgimon that wrote the same rollups
(a marker written after the load, a JSON file beside the SQLite file or a comment on the
schema, holds those and a fingerprint of the rollups of a sample) and this asgimon's schema
version opens them; the periodic jobs then run again, doing what they would have done since.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextvars
import gc
import hashlib
import json
import math
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy import text
from sqlalchemy.engine import Row
from starlette.applications import Starlette

from asgimon import Monitor
from asgimon.errors import SchemaVersionError
from asgimon.events import (
    ApiCall,
    BuildEvent,
    DeploymentEvent,
    DomainEvent,
    ErrorEvent,
    Event,
    FunctionInvocation,
)
from asgimon.rollups import Window, aggregate
from asgimon.storage.sql import SQLStorage

BACKENDS = ("sqlite", "postgresql")
DOMAIN_KINDS = ("deployment", "build", "function", "domain", "error")
PROJECT = "bench"
PROJECTS = (("bench", 0.80), ("shop", 0.08), ("blog", 0.06), ("docs", 0.04), ("status", 0.02))
DAYS = 90
MARGIN_S = 3600  # the oldest events stay an hour inside the 90-day raw retention
BATCH = 5000
TARGET_MS = 50.0
RANGE = "30d"
POOL_BITS = 12  # per-endpoint pools of 4096 precomputed latencies

# method, route, median ms, log-normal sigma, share of traffic, 5xx rate
ENDPOINTS: list[tuple[str, str, float, float, float, float]] = [
    ("GET", "/", 3.0, 0.5, 6.0, 0.001),
    ("GET", "/health", 0.6, 0.3, 9.0, 0.0),
    ("GET", "/static/{path:path}", 1.2, 0.6, 12.0, 0.0),
    ("GET", "/favicon.ico", 0.5, 0.3, 2.0, 0.0),
    ("GET", "/api/items", 14.0, 0.6, 8.0, 0.004),
    ("GET", "/api/items/{item_id}", 6.0, 0.5, 10.0, 0.002),
    ("POST", "/api/items", 28.0, 0.6, 1.2, 0.01),
    ("PUT", "/api/items/{item_id}", 22.0, 0.6, 0.8, 0.01),
    ("PATCH", "/api/items/{item_id}", 18.0, 0.6, 0.5, 0.01),
    ("DELETE", "/api/items/{item_id}", 16.0, 0.5, 0.3, 0.01),
    ("GET", "/api/items/{item_id}/reviews", 24.0, 0.7, 2.5, 0.004),
    ("POST", "/api/items/{item_id}/reviews", 40.0, 0.6, 0.3, 0.01),
    ("GET", "/api/categories", 5.0, 0.4, 3.0, 0.001),
    ("GET", "/api/categories/{slug}", 9.0, 0.5, 2.0, 0.002),
    ("GET", "/api/search", 85.0, 0.8, 4.0, 0.01),
    ("GET", "/api/search/suggest", 12.0, 0.6, 5.0, 0.003),
    ("GET", "/api/users/me", 7.0, 0.5, 5.0, 0.002),
    ("GET", "/api/users/{user_id}", 8.0, 0.5, 1.5, 0.002),
    ("PATCH", "/api/users/{user_id}", 30.0, 0.6, 0.2, 0.01),
    ("GET", "/api/users/{user_id}/orders", 38.0, 0.7, 1.2, 0.005),
    ("GET", "/api/cart", 10.0, 0.5, 3.5, 0.003),
    ("POST", "/api/cart/items", 20.0, 0.5, 1.5, 0.006),
    ("DELETE", "/api/cart/items/{item_id}", 15.0, 0.5, 0.5, 0.006),
    ("POST", "/api/checkout", 320.0, 0.7, 0.4, 0.03),
    ("POST", "/api/orders", 65.0, 0.6, 0.4, 0.02),
    ("GET", "/api/orders/{order_id}", 11.0, 0.5, 0.8, 0.003),
    ("POST", "/api/orders/{order_id}/pay", 260.0, 0.8, 0.3, 0.04),
    ("POST", "/api/orders/{order_id}/cancel", 45.0, 0.6, 0.05, 0.02),
    ("GET", "/api/orders/{order_id}/invoice", 140.0, 0.6, 0.1, 0.01),
    ("POST", "/api/login", 125.0, 0.4, 1.0, 0.005),
    ("POST", "/api/logout", 4.0, 0.4, 0.4, 0.0),
    ("POST", "/api/token/refresh", 9.0, 0.4, 2.0, 0.002),
    ("POST", "/api/signup", 180.0, 0.5, 0.1, 0.01),
    ("POST", "/api/password/reset", 90.0, 0.5, 0.03, 0.01),
    ("GET", "/api/feed", 48.0, 0.7, 3.0, 0.006),
    ("GET", "/api/notifications", 13.0, 0.6, 2.5, 0.003),
    ("POST", "/api/notifications/read", 8.0, 0.5, 0.6, 0.003),
    ("GET", "/api/recommendations", 110.0, 0.8, 1.5, 0.02),
    ("GET", "/api/reports/daily", 950.0, 0.6, 0.02, 0.05),
    ("GET", "/api/reports/export", 2400.0, 0.7, 0.01, 0.08),
    ("POST", "/api/uploads", 420.0, 0.9, 0.2, 0.02),
    ("GET", "/api/uploads/{upload_id}", 25.0, 0.6, 0.3, 0.005),
    ("POST", "/webhooks/stripe", 32.0, 0.5, 0.3, 0.01),
    ("POST", "/webhooks/github", 27.0, 0.5, 0.1, 0.01),
    ("GET", "/api/settings", 6.0, 0.4, 0.8, 0.001),
    ("PUT", "/api/settings", 21.0, 0.5, 0.1, 0.005),
    ("GET", "/api/admin/stats", 600.0, 0.7, 0.02, 0.03),
    ("GET", "/api/admin/users", 75.0, 0.6, 0.05, 0.01),
    ("GET", "/metrics", 2.5, 0.4, 3.0, 0.0),
    ("GET", "<unmatched>", 0.8, 0.5, 0.7, 0.0),
]
FOUR_XX = [400] * 3 + [401] * 4 + [403] * 2 + [404] * 8 + [409, 422, 422, 429]
FIVE_XX = [500] * 6 + [502, 503, 503, 504]

FUNCTIONS = [  # id, median ms, sigma, share
    ("api-render", 45.0, 0.6, 30.0),
    ("image-resize", 320.0, 0.5, 8.0),
    ("og-image", 210.0, 0.5, 6.0),
    ("auth-callback", 60.0, 0.4, 5.0),
    ("send-email", 150.0, 0.6, 5.0),
    ("webhook-relay", 35.0, 0.5, 8.0),
    ("search-index", 900.0, 0.7, 1.5),
    ("sitemap", 1400.0, 0.5, 0.5),
    ("cron-cleanup", 2500.0, 0.6, 0.3),
    ("edge-geo", 4.0, 0.4, 15.0),
    ("edge-ab-test", 3.0, 0.4, 12.0),
    ("pdf-invoice", 1800.0, 0.6, 0.7),
    ("stripe-events", 80.0, 0.5, 2.0),
    ("ssr-product", 120.0, 0.6, 4.0),
    ("ssr-home", 95.0, 0.5, 2.0),
]
FUNCTION_ERRORS = [
    ("TimeoutError", "function timed out after 10 s"),
    ("ValueError", "invalid payload"),
    ("ConnectionError", "upstream refused the connection"),
    ("MemoryError", "out of memory"),
]
FRAMEWORKS = [("nextjs", 0.45), ("astro", 0.2), ("sveltekit", 0.15), ("remix", 0.1), ("vite", 0.1)]
PHASES = [  # phase, median seconds, sigma, failure rate
    ("clone", 2.0, 0.4, 0.002),
    ("install", 24.0, 0.5, 0.02),
    ("build", 55.0, 0.5, 0.05),
    ("optimize", 8.0, 0.5, 0.005),
    ("upload", 5.0, 0.6, 0.005),
]
DOMAIN_TYPES = [
    ("verified", 0.25),
    ("ssl_issued", 0.2),
    ("ssl_renewed", 0.3),
    ("ssl_expiring", 0.1),
    ("added", 0.06),
    ("ssl_failed", 0.05),
    ("removed", 0.04),
]
SEVERITIES = [("low", 0.2), ("medium", 0.4), ("high", 0.3), ("critical", 0.1)]
ERROR_TYPES = [
    "ValueError",
    "KeyError",
    "TypeError",
    "TimeoutError",
    "ConnectionError",
    "IntegrityError",
    "PermissionError",
    "ZeroDivisionError",
    "RuntimeError",
    "JSONDecodeError",
]
# Shares of the non-API events by kind (deployments: started, completed, build phases).
UNIT_SHARES = {"function": 0.70, "error": 0.08, "domain": 0.02, "deployment": 0.20}


# -- the events ----------------------------------------------------------------------------


def lognormal_pool(rng: random.Random, median: float, sigma: float) -> list[float]:
    """``2**POOL_BITS`` latencies of one endpoint: log-normal, with a 0.5 % slow tail."""
    out = []
    for _ in range(1 << POOL_BITS):
        v = median * rng.lognormvariate(0, sigma)
        if rng.random() < 0.005:
            v *= rng.uniform(5, 20)
        out.append(round(min(v, 120_000.0), 3))
    return out


def weighted_table(rng: random.Random, items: Sequence[tuple[Any, float]], size: int) -> list[Any]:
    """A shuffled lookup table of ``size`` entries in proportion to the weights (O(1) picks)."""
    total = sum(w for _, w in items)
    exact = [(item, w * size / total) for item, w in items]
    counts = [int(x) for _, x in exact]
    # Largest remainders get the entries left over, so every item with weight appears.
    by_remainder = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i][1])
    for i in by_remainder[: size - sum(counts)]:
        counts[i] += 1
    table = [item for (item, _), n in zip(exact, counts, strict=True) for _ in range(n)]
    rng.shuffle(table)
    return table


@dataclass
class Endpoint:
    method: str
    route: str
    latencies: list[float]
    statuses: list[int]  # 1024 entries
    has_body: bool


class Clock:
    """Maps a position in the event stream (0..1) to a time in the last 90 days.

    Traffic follows a daily cycle (busiest mid-afternoon UTC), is 30 % lower on weekends and
    grows by half from the first day to the last.
    """

    def __init__(self, end: float) -> None:
        self.start = end - DAYS * 86_400 + MARGIN_S
        self.end = end
        hours = math.ceil((self.end - self.start) / 3600)
        cum = [0.0]
        for h in range(hours):
            t = self.start + h * 3600
            hour_of_day = (t % 86_400) / 3600
            weekday = datetime.fromtimestamp(t, UTC).weekday()
            rate = (1 + 0.6 * math.cos(2 * math.pi * (hour_of_day - 15) / 24)) * (
                0.7 if weekday >= 5 else 1.0
            )
            rate *= 1 + 0.5 * h / hours
            cum.append(cum[-1] + rate)
        self.cum = [c / cum[-1] for c in cum]

    def at(self, u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        h = min(bisect.bisect_right(self.cum, u) - 1, len(self.cum) - 2)
        lo, hi = self.cum[h], self.cum[h + 1]
        frac = (u - lo) / (hi - lo) if hi > lo else 0.0
        return min(self.start + (h + frac) * 3600, self.end)


class Generator:
    """Deterministic (``seed``) batches of events in time order, cheap per event."""

    def __init__(self, api_calls: int, domain_events: int, seed: int, end: float) -> None:
        self.api_calls = api_calls
        self.domain_events = domain_events
        self.rng = rng = random.Random(seed)
        self.clock = Clock(end)
        self.id_prefix = f"{seed:04x}{rng.getrandbits(32):08x}"
        self.projects = weighted_table(rng, PROJECTS, 1024)
        self.endpoints: list[Endpoint] = []
        for method, route, median, sigma, _share, five_xx in ENDPOINTS:
            statuses = []
            for _ in range(1024):
                x = rng.random()
                if x < five_xx:
                    statuses.append(rng.choice(FIVE_XX))
                elif x < five_xx + 0.03:
                    statuses.append(rng.choice(FOUR_XX))
                elif method == "POST" and x < 0.5:
                    statuses.append(201)
                elif method == "DELETE":
                    statuses.append(204)
                else:
                    statuses.append(200)
            self.endpoints.append(
                Endpoint(
                    method,
                    route,
                    lognormal_pool(rng, median, sigma),
                    statuses,
                    method in ("POST", "PUT", "PATCH"),
                )
            )
        self.endpoint_table = weighted_table(
            rng, [(e, row[4]) for e, row in zip(self.endpoints, ENDPOINTS, strict=True)], 1 << 16
        )
        self.users = [f"user-{i:05d}" for i in range(20_000)]
        self.response_sizes = [int(rng.lognormvariate(7.5, 1.2)) for _ in range(4096)]
        self.function_table = weighted_table(rng, [(f[0], f[3]) for f in FUNCTIONS], 4096)
        self.function_pools = {f: lognormal_pool(rng, m, s) for f, m, s, _ in FUNCTIONS}
        self.unit_table = weighted_table(
            rng, [(k, share / self._unit_size(k)) for k, share in UNIT_SHARES.items()], 4096
        )
        mean_size = 1 / sum(share / self._unit_size(k) for k, share in UNIT_SHARES.items())
        self.units_expected = max(1.0, domain_events / mean_size)
        self.domain_types = weighted_table(rng, DOMAIN_TYPES, 128)
        self.frameworks = {p: weighted_table(rng, FRAMEWORKS, 64) for p, _ in PROJECTS}
        self.domains = {
            p: [f"{p}.example.com", f"www.{p}.example.com", f"api.{p}.dev"] for p, _ in PROJECTS
        }
        self.fingerprints = self._error_catalog(rng)
        self.fingerprint_table = weighted_table(
            rng, [(f, 1 / (i + 1)) for i, f in enumerate(self.fingerprints)], 4096
        )
        self.last_deployment: dict[str, str | None] = {p: None for p, _ in PROJECTS}
        self._seq = 0
        self._domain_stream = self._domain_events()

    @staticmethod
    def _unit_size(kind: str) -> float:
        # A deployment: started, completed and about 4.8 build phases (a failure stops it).
        return 6.8 if kind == "deployment" else 1.0

    def _error_catalog(self, rng: random.Random) -> list[dict[str, Any]]:
        out = []
        for i in range(60):
            error_type = ERROR_TYPES[i % len(ERROR_TYPES)]
            method, route = ENDPOINTS[(i * 7) % len(ENDPOINTS)][:2]
            frames = "".join(
                f'  File "/app/service/module_{i}_{j}.py", line {40 + 13 * j}, in handler_{j}\n'
                f"    result = step_{j}(request, payload)\n"
                for j in range(12)
            )
            out.append(
                {
                    "fingerprint": f"{rng.getrandbits(64):016x}",
                    "error_type": error_type,
                    "message": f"{error_type}: failure {i} while handling {route}",
                    "stack": f"Traceback (most recent call last):\n{frames}{error_type}: {i}\n",
                    "severity": rng.choices([s for s, _ in SEVERITIES], [w for _, w in SEVERITIES])[
                        0
                    ],
                    "handled": rng.random() < 0.4,
                    "method": method,
                    "endpoint": route,
                    "context": {"release": f"v1.{i % 9}.{i % 4}", "region": "eu-west-1"},
                }
            )
        return out

    def _id(self) -> str:
        self._seq += 1
        return f"{self.id_prefix}-{self._seq:09x}"

    def batches(self, size: int = BATCH) -> Iterator[list[Event]]:
        """Batches of ``size`` events in time order, API calls and the rest interleaved."""
        total = self.api_calls + self.domain_events
        api_done = 0
        for first in range(0, total, size):
            last = min(first + size, total)
            api_to = round(last * self.api_calls / total) if total else 0
            n_api = api_to - api_done
            n_other = (last - first) - n_api
            t_lo, t_hi = self.clock.at(first / total), self.clock.at(last / total)
            batch: list[Event] = list(self._api_batch(n_api, t_lo, t_hi))
            batch.extend(next(self._domain_stream) for _ in range(n_other))
            api_done = api_to
            yield batch

    def _api_batch(self, n: int, t_lo: float, t_hi: float) -> list[ApiCall]:
        rng = self.rng
        rand, bits = rng.random, rng.getrandbits
        width = t_hi - t_lo
        stamps = sorted(t_lo + width * rand() for _ in range(n))
        projects, endpoints, users = self.projects, self.endpoint_table, self.users
        sizes = self.response_sizes
        out = []
        for ts in stamps:
            ep = endpoints[bits(16)]
            d = ep.latencies[bits(POOL_BITS)]
            status = ep.statuses[bits(10)]
            user = bits(15)
            out.append(
                ApiCall(
                    id=self._id(),
                    project_id=projects[bits(10)],
                    timestamp=ts,
                    method=ep.method,
                    endpoint=ep.route,
                    status=status,
                    duration_ms=d,
                    ttfb_ms=round(d * 0.92, 3),
                    total_ms=round(d * 1.01, 3),
                    request_bytes=sizes[bits(12)] // 4 if ep.has_body else None,
                    response_bytes=0 if status == 204 else sizes[bits(12)],
                    user_id=users[user % 20_000] if user % 3 else None,
                    request_id=f"{bits(64):016x}",
                )
            )
        return out

    def _domain_events(self) -> Iterator[Event]:
        """The non-API events, unit by unit (a deployment is several), forever."""
        rng = self.rng
        unit = 0
        while True:
            ts = self.clock.at(unit / self.units_expected) + rng.uniform(0, 60)
            unit += 1
            project = self.projects[rng.getrandbits(10)]
            kind = self.unit_table[rng.getrandbits(12)]
            if kind == "function":
                yield self._function(project, ts)
            elif kind == "error":
                yield self._error(project, ts)
            elif kind == "domain":
                yield self._domain(project, ts)
            else:
                yield from self._deployment(project, ts)

    def _function(self, project: str, ts: float) -> FunctionInvocation:
        rng = self.rng
        fn = self.function_table[rng.getrandbits(12)]
        d = self.function_pools[fn][rng.getrandbits(POOL_BITS)]
        cold = rng.random() < 0.04
        failed = rng.random() < 0.015
        error = FUNCTION_ERRORS[rng.getrandbits(2)] if failed else (None, None)
        return FunctionInvocation(
            id=self._id(),
            project_id=project,
            timestamp=ts,
            function_id=fn,
            deployment_id=self.last_deployment[project],
            status="error" if failed else "success",
            duration_ms=round(d + (250.0 if cold else 0.0), 3),
            cold_start=cold,
            memory_mb=(128.0, 256.0, 512.0, 1024.0)[rng.getrandbits(2)],
            error_type=error[0],
            error_message=error[1],
        )

    def _error(self, project: str, ts: float) -> ErrorEvent:
        rng = self.rng
        f = self.fingerprint_table[rng.getrandbits(12)]
        user = rng.getrandbits(15)
        return ErrorEvent(
            id=self._id(),
            project_id=project,
            timestamp=ts,
            error_type=f["error_type"],
            message=f["message"],
            stack=f["stack"],
            fingerprint=f["fingerprint"],
            severity=f["severity"],
            handled=f["handled"],
            endpoint=f["endpoint"],
            method=f["method"],
            request_id=f"{rng.getrandbits(64):016x}",
            user_id=self.users[user % 20_000] if user % 2 else None,
            deployment_id=self.last_deployment[project],
            context=f["context"],
        )

    def _domain(self, project: str, ts: float) -> DomainEvent:
        rng = self.rng
        kind = self.domain_types[rng.getrandbits(7)]
        return DomainEvent(
            id=self._id(),
            project_id=project,
            timestamp=ts,
            domain=rng.choice(self.domains[project]),
            type=kind,
            expires_at=ts + 90 * 86_400 if kind.startswith("ssl") else None,
        )

    def _deployment(self, project: str, ts: float) -> Iterator[Event]:
        rng = self.rng
        deployment_id = f"dep-{project}-{self._seq:09x}"
        framework = self.frameworks[project][rng.getrandbits(6)]
        yield DeploymentEvent(
            id=self._id(),
            project_id=project,
            timestamp=ts,
            deployment_id=deployment_id,
            type="started",
            framework=framework,
        )
        at = ts + rng.uniform(0.5, 3.0)
        failed = False
        for phase, median, sigma, failure_rate in PHASES:
            seconds = median * rng.lognormvariate(0, sigma)
            failed = rng.random() < failure_rate
            last = phase == "upload"
            yield BuildEvent(
                id=self._id(),
                project_id=project,
                timestamp=at,
                deployment_id=deployment_id,
                phase=phase,
                start_time=at,
                end_time=at + seconds,
                status="failure" if failed else "success",
                framework=framework,
                asset_count=rng.randrange(50, 3000) if last and not failed else None,
                total_size_bytes=rng.randrange(500_000, 80_000_000)
                if last and not failed
                else None,
            )
            at += seconds + rng.uniform(0.05, 0.5)
            if failed:
                break
        failed = failed or rng.random() < 0.01
        at += 0 if failed else rng.uniform(3, 20)
        yield DeploymentEvent(
            id=self._id(),
            project_id=project,
            timestamp=at,
            deployment_id=deployment_id,
            type="completed",
            status="failure" if failed else "success",
            duration_ms=round((at - ts) * 1000, 1),
            framework=framework,
        )
        if not failed:
            self.last_deployment[project] = deployment_id


def write_shape(seed: int) -> str:
    """A fingerprint of what this asgimon writes for these events: the rollups it makes of a
    fixed sample (series, counts, errors, values). A store loaded by code that wrote other
    series, or counted otherwise, is loaded afresh rather than reused."""
    sample = next(Generator(3000, 1000, seed, 1_800_000_000.0).batches(4000))
    rows = sorted(
        (
            r.project_id,
            r.series,
            r.resolution,
            r.bucket_start,
            r.count,
            r.error_count,
            r.value_count,
            round(r.value_sum, 3),
        )
        for r in aggregate(sample)
    )
    return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


# -- the stores ----------------------------------------------------------------------------


@dataclass
class Call:
    """One storage read made while answering a request (``--trace``)."""

    name: str
    rows: int = 0
    fetch_s: float = 0.0  # awaiting ``_fetch``: SQL compiled and run, rows from the driver
    start: float = 0.0
    end: float = 0.0

    @property
    def total_ms(self) -> float:
        return (self.end - self.start) * 1000

    @property
    def decode_ms(self) -> float:
        """The rest of the call: rows turned into events, rollups and histograms."""
        return self.total_ms - self.fetch_s * 1000


@dataclass
class Trace:
    calls: list[Call] = field(default_factory=list)


CURRENT_CALL: contextvars.ContextVar[Call | None] = contextvars.ContextVar("call", default=None)


def prefix_name(prefix: str | tuple[str, ...] | None) -> str:
    if isinstance(prefix, tuple):
        return "+".join(prefix)
    return prefix or "*"


class TracedSQLStorage(SQLStorage):
    """SQLStorage timing each read and the fetches inside it (``--trace`` only).

    Reads of one request may run concurrently (``asyncio.gather``): each call keeps its own
    account in a context variable, which every task inherits.
    """

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        super().__init__(url, schema=schema)
        self.trace = Trace()

    async def _fetch(self, *args: Any, **kw: Any) -> list[Row[Any]]:
        t = time.perf_counter()
        rows = await super()._fetch(*args, **kw)
        call = CURRENT_CALL.get()
        if call is not None:
            call.fetch_s += time.perf_counter() - t
            call.rows += len(rows)
        return rows

    async def _timed(self, name: str, coro: Any) -> Any:
        call = Call(name, start=time.perf_counter())
        token = CURRENT_CALL.set(call)
        try:
            return await coro
        finally:
            CURRENT_CALL.reset(token)
            call.end = time.perf_counter()
            self.trace.calls.append(call)

    async def rollups(self, window: Window, series_prefix: str | tuple[str, ...] = "") -> Any:
        name = f"rollups({window.resolution}, {prefix_name(series_prefix)})"
        return await self._timed(name, super().rollups(window, series_prefix))

    async def series_totals(self, window: Window, series_prefix: str | tuple[str, ...] = "") -> Any:
        name = f"series_totals({window.resolution}, {prefix_name(series_prefix)})"
        return await self._timed(name, super().series_totals(window, series_prefix))

    async def bucket_totals(self, window: Window, series_prefix: str | tuple[str, ...] = "") -> Any:
        name = f"bucket_totals({window.resolution}, {prefix_name(series_prefix)})"
        return await self._timed(name, super().bucket_totals(window, series_prefix))

    async def series_rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> Any:
        name = f"series_rollups({window.resolution}, {prefix_name(series_prefix)})"
        return await self._timed(name, super().series_rollups(window, series_prefix))

    async def events(self, kind: str, *args: Any, **kw: Any) -> Any:
        name = f"events({kind}, limit {kw.get('limit', 1000)})"
        return await self._timed(name, super().events(kind, *args, **kw))

    async def totals(self, *args: Any, **kw: Any) -> Any:
        series = prefix_name(kw.get("series"))
        name = f"totals({kw['resolution']}, {series}, {len(kw['windows'])} windows)"
        return await self._timed(name, super().totals(*args, **kw))

    async def projects(self) -> list[str]:
        result: list[str] = await self._timed("projects()", super().projects())
        return result


@dataclass(frozen=True)
class Target:
    backend: str
    url: str
    schema: str | None

    def open(self, *, traced: bool = False) -> SQLStorage:
        if traced:
            return TracedSQLStorage(self.url, schema=self.schema)
        return SQLStorage(self.url, schema=self.schema)


def target_of(backend: str, args: argparse.Namespace) -> Target:
    if backend == "sqlite":
        return Target("sqlite", f"sqlite:///{args.sqlite_path}", None)
    return Target("postgresql", args.pg_url, args.pg_schema)


def sqlite_files(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]


def sqlite_bytes(path: Path) -> int:
    """The database file and its WAL on disk (0: no database)."""
    return sum(p.stat().st_size for p in sqlite_files(path)[:2] if p.exists())


def remove_sqlite(path: Path) -> None:
    for p in [*sqlite_files(path), marker_file(path)]:
        p.unlink(missing_ok=True)


async def pg_execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def drop(t: Target, args: argparse.Namespace) -> None:
    if t.backend == "sqlite":
        remove_sqlite(args.sqlite_path)
    else:
        await pg_execute(t.url, f'DROP SCHEMA IF EXISTS "{t.schema}" CASCADE')


async def create(t: Target) -> None:
    if t.backend == "postgresql":
        await pg_execute(t.url, f'CREATE SCHEMA IF NOT EXISTS "{t.schema}"')


def marker_file(path: Path) -> Path:
    return path.with_name(path.name + ".json")


async def read_marker(t: Target, args: argparse.Namespace) -> dict[str, Any] | None:
    """What the store says it was loaded with (written once a load completed), if anything."""
    if t.backend == "sqlite":
        return read_json(marker_file(args.sqlite_path)) if sqlite_bytes(args.sqlite_path) else None
    conn = await asyncpg.connect(t.url)
    try:
        raw = await conn.fetchval(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
            t.schema,
        )
    finally:
        await conn.close()
    try:
        return dict(json.loads(raw)) if raw else None
    except ValueError:
        return None


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


async def write_marker(t: Target, args: argparse.Namespace, marker: dict[str, Any]) -> None:
    text_ = json.dumps(marker)
    if t.backend == "sqlite":
        marker_file(args.sqlite_path).write_text(text_)
    else:
        literal = text_.replace("'", "''")
        await pg_execute(t.url, f"COMMENT ON SCHEMA \"{t.schema}\" IS '{literal}'")


async def opens(t: Target) -> bool:
    """Whether this asgimon reads the store as it is (not: a schema from another version)."""
    storage = t.open()
    try:
        await storage.start()
    except SchemaVersionError as exc:
        print(f"{t.backend}: {exc}; loading afresh", file=sys.stderr)
        return False
    finally:
        await storage.close()
    return True


async def store_size(t: Target, args: argparse.Namespace) -> tuple[int, int]:
    """(bytes on disk, rollup rows)."""
    storage = t.open()
    await storage.start()
    try:
        rows = await storage._fetch(text("SELECT count(*) FROM asgimon_rollups"))
    finally:
        await storage.close()
    n_rollups = int(rows[0][0])
    if t.backend == "sqlite":
        size = sqlite_bytes(args.sqlite_path)
    else:
        conn = await asyncpg.connect(t.url)
        try:
            size = int(
                await conn.fetchval(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = $1 AND c.relkind = 'r'",
                    t.schema,
                )
            )
        finally:
            await conn.close()
    return size, n_rollups


# -- loading -------------------------------------------------------------------------------


async def load(t: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Write every event through ``storage.write``, a batch at a time."""
    total = args.api_calls + args.domain_events
    gen = Generator(args.api_calls, args.domain_events, args.seed, time.time())
    storage = t.open()
    await storage.start()
    inserted = duplicates = batches = 0
    gen_s = 0.0
    cpu0, t0 = time.process_time(), time.perf_counter()
    next_report = t0 + 10
    try:
        it = gen.batches(args.batch)
        g = time.perf_counter()
        batch = next(it, None)
        gen_s += time.perf_counter() - g
        while batch is not None:
            # Build the next batch while the store writes this one.
            writing = asyncio.ensure_future(storage.write(batch))
            await asyncio.sleep(0)
            g = time.perf_counter()
            batch = next(it, None)
            gen_s += time.perf_counter() - g
            result = await writing
            inserted += result.inserted
            duplicates += result.duplicates
            batches += 1
            now = time.perf_counter()
            if now >= next_report:
                next_report = now + 10
                print(
                    f"  {t.backend}: {inserted + duplicates:>11,} / {total:,} events "
                    f"({(inserted + duplicates) / (now - t0):,.0f} ev/s)",
                    file=sys.stderr,
                )
        load_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    finally:
        await storage.close()
    return {
        "events": total,
        "api_calls": args.api_calls,
        "domain_events": args.domain_events,
        "batches": batches,
        "inserted": inserted,
        "duplicates": duplicates,
        "load_s": load_s,
        "events_per_s": total / load_s if load_s else 0.0,
        "client_cpu_s": cpu_s,
        "generate_s": gen_s,
    }


async def periodic_jobs(t: Target) -> dict[str, Any]:
    """The monitor's purge and compaction jobs, once each, as its scheduler runs them.

    After a load that is the first purge (minute rollups beyond a week, errors beyond 30
    days) and the first compaction (every closed hour and day bucket packed); on a reused
    store, what the jobs would have done since.
    """
    storage = t.open()
    monitor = Monitor(storage=storage)
    await storage.start()
    try:
        t0 = time.perf_counter()
        purged = await monitor.purge()
        t1 = time.perf_counter()
        packed = await monitor.compact()
        t2 = time.perf_counter()
    finally:
        await storage.close()
    jobs = {"purge_s": t1 - t0, "purged": purged, "compact_s": t2 - t1, "packed": packed}
    # What autovacuum does soon after a purge of millions of rows and a compaction that
    # rewrote every closed bucket (the machine's server runs with autovacuum off); timed
    # right after them, the reads would be walking dead row versions, not the steady state,
    # and the planner would have no statistics.
    jobs["vacuum_s"] = await vacuum(t) if t.backend == "postgresql" else None
    return jobs


async def vacuum(t: Target) -> float:
    """``VACUUM (ANALYZE)`` every table of the schema; seconds taken."""
    conn = await asyncpg.connect(t.url)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", t.schema
        )
        t0 = time.perf_counter()
        for row in tables:
            await conn.execute(f'VACUUM (ANALYZE) "{t.schema}"."{row[0]}"')
        return time.perf_counter() - t0
    finally:
        await conn.close()


# -- querying ------------------------------------------------------------------------------


def endpoints(project: str, range_: str) -> list[tuple[str, str]]:
    q = f"range={range_}"
    base = "/analytics/api"
    return [
        ("dashboard", f"{base}/dashboard/{project}?{q}"),
        ("deployments", f"{base}/deployments/{project}?{q}"),
        ("functions", f"{base}/functions/{project}?{q}"),
        ("builds", f"{base}/builds/{project}?{q}"),
        ("errors", f"{base}/errors/{project}?{q}"),
        ("performance", f"{base}/performance/{project}?{q}"),
        ("overview", f"{base}/overview?{q}"),
        ("events (api_call)", f"{base}/events/{project}?{q}&kind=api_call"),
        ("performance CSV", f"{base}/performance/{project}?{q}&format=csv"),
    ]


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def get(client: httpx.AsyncClient, path: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = await client.get(path)
    ms = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
    return ms, len(r.content)


class FullCollections:
    """Full (generation 2) garbage collections while it is installed: how many, how long."""

    def __init__(self) -> None:
        self.count = 0
        self.ms = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.count += 1
            self.ms += (time.perf_counter() - self._began) * 1000


async def measure_queries(
    t: Target, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Cold and warm latency of every endpoint; with ``--trace`` the storage calls too."""
    storage = t.open(traced=args.trace)
    monitor = Monitor(storage=storage, api_rate_limit=None)
    app = monitor.wrap(Starlette())
    cache = monitor.dashboard.api.cache
    paths = endpoints(PROJECT, args.range)
    cold: dict[str, list[float]] = {name: [] for name, _ in paths}
    warm: dict[str, list[float]] = {name: [] for name, _ in paths}
    sizes: dict[str, int] = {}
    traces: dict[str, list[tuple[float, list[Call]]]] = {name: [] for name, _ in paths}
    # The cold requests a full collection ran in, and its milliseconds: where the p95 of a
    # request that allocates much comes from.
    collected: dict[str, list[float]] = {name: [] for name, _ in paths}
    collections = FullCollections()
    gc.callbacks.append(collections)
    await storage.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 1)),
            base_url="http://localhost",
            timeout=60,
        ) as client:
            for rnd in range(args.requests + 1):  # round 0 is untimed
                for name, path in paths:
                    cache.clear()
                    if isinstance(storage, TracedSQLStorage):
                        storage.trace = Trace()
                    before = collections.count, collections.ms
                    ms, size = await get(client, path)
                    full = (collections.count - before[0], collections.ms - before[1])
                    calls = (
                        list(storage.trace.calls) if isinstance(storage, TracedSQLStorage) else []
                    )
                    ms_warm, _ = await get(client, path)
                    if rnd:
                        cold[name].append(ms)
                        if full[0]:
                            collected[name].append(full[1])
                        warm[name].append(ms_warm)
                        traces[name].append((ms, calls))
                    sizes[name] = size
    finally:
        gc.callbacks.remove(collections)
        await monitor.dashboard.aclose()
        await storage.close()
    rows = []
    for name, path in paths:
        c, w = cold[name], warm[name]
        rows.append(
            {
                "backend": t.backend,
                "endpoint": name,
                "path": path,
                "requests": len(c),
                "bytes": sizes[name],
                "cold_median_ms": statistics.median(c),
                "cold_p95_ms": percentile(c, 0.95),
                "warm_median_ms": statistics.median(w),
                "warm_p95_ms": percentile(w, 0.95),
                "cold_full_gcs": len(collected[name]),
                "cold_full_gc_ms": max(collected[name], default=0.0),
                "target_met": percentile(c, 0.95) < TARGET_MS,
            }
        )
    breakdown = []
    if args.trace:
        for name, _ in paths:
            breakdown.extend(summarise_trace(t.backend, name, traces[name]))
    return rows, breakdown


def busy_ms(calls: list[Call]) -> float:
    """How long at least one storage call was running (calls may overlap)."""
    total, reach = 0.0, -math.inf
    for c in sorted(calls, key=lambda c: c.start):
        if c.end > reach:
            total += c.end - max(c.start, reach)
            reach = c.end
    return total * 1000


def summarise_trace(
    backend: str, endpoint: str, samples: list[tuple[float, list[Call]]]
) -> list[dict[str, Any]]:
    """Medians over the cold requests: each storage call, the rest, the whole request."""
    if not samples:
        return []
    n = len(samples)
    by_call: dict[str, list[Call]] = {}
    for _, calls in samples:
        for c in calls:
            by_call.setdefault(c.name, []).append(c)
    base = {"backend": backend, "endpoint": endpoint}
    out = [
        {
            **base,
            "part": name,
            "per_request": len(calls) / n,
            "rows": statistics.median(c.rows for c in calls),
            "query_ms": statistics.median(c.fetch_s * 1000 for c in calls),
            "decode_ms": statistics.median(c.decode_ms for c in calls),
            "ms": statistics.median(c.total_ms for c in calls),
        }
        for name, calls in by_call.items()
    ]
    outside = statistics.median(ms - busy_ms(calls) for ms, calls in samples)
    out.append({**base, "part": "(outside storage calls)", "ms": outside})
    out.append(
        {**base, "part": "(whole request)", "ms": statistics.median(ms for ms, _ in samples)}
    )
    return out


# -- output --------------------------------------------------------------------------------


def render_md(env: dict[str, Any], loads: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, loop {env['loop']}; "
        f"asgimon {env['asgimon']}, SQLAlchemy {env['sqlalchemy']}, SQLite {env['sqlite']}, "
        f"PostgreSQL {env['postgresql']}; source {env['source']}; {env['date']}.",
        f"{env['api_calls']:,} API calls + {env['domain_events']:,} other events over "
        f"{DAYS} days, {len(PROJECTS)} projects ({PROJECT}: {PROJECTS[0][1]:.0%}), "
        f"{len(ENDPOINTS)} endpoints; range={env['range']}, {env['requests']} rounds.",
        "",
    ]
    if loads:
        lines += [
            "| backend | events | load s | events/s | client CPU s (generating) "
            "| purge job s (minute rollups deleted) | compaction job s (rows packed) "
            "| VACUUM (ANALYZE) s | rollup rows | on disk |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for ld in loads:
            if ld["reused"]:
                loaded = f"reused (loaded {ld['loaded_at']}) | — | — "
            else:
                loaded = (
                    f"{ld['load_s']:.1f} | {ld['events_per_s']:,.0f} | "
                    f"{ld['client_cpu_s']:.1f} ({ld['generate_s']:.1f}) "
                )
            vacuumed = "—" if ld["vacuum_s"] is None else f"{ld['vacuum_s']:.1f}"
            lines.append(
                f"| {ld['backend']} | {ld['events']:,} | {loaded}| {ld['purge_s']:.1f} "
                f"({ld['purged'].get('rollup:minute', 0):,}) | {ld['compact_s']:.1f} "
                f"({ld['packed']:,}) | {vacuumed} | {ld['rollup_rows']:,} | "
                f"{ld['bytes'] / 2**30:.2f} GiB |"
            )
        lines.append("")
    lines += [
        f"| endpoint | backend | cold median ms | cold p95 ms | warm median ms | warm p95 ms "
        f"| cold requests with a full GC (longest ms) | bytes | p95 cold < {TARGET_MS:g} ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (order_of(r["endpoint"]), r["backend"])):
        lines.append(
            f"| {r['endpoint']} | {r['backend']} | {r['cold_median_ms']:.1f} | "
            f"{r['cold_p95_ms']:.1f} | {r['warm_median_ms']:.1f} | {r['warm_p95_ms']:.1f} | "
            f"{r['cold_full_gcs']} ({r['cold_full_gc_ms']:.0f}) | {r['bytes']:,} | "
            f"{'yes' if r['target_met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def order_of(endpoint: str) -> int:
    return [name for name, _ in endpoints(PROJECT, RANGE)].index(endpoint)


def render_trace(breakdown: list[dict[str, Any]]) -> str:
    lines = [
        "",
        "Where a cold request's time goes (medians over the rounds, per call; query = awaiting "
        "the SQL and the driver's rows, decode = rows turned into events, rollups and "
        "histograms; calls of one request may overlap; outside = the request minus the time "
        "any storage call ran: analytics, JSON or CSV, routing):",
        "",
        "| endpoint | backend | part | per request | rows | query ms | decode ms | ms |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for b in breakdown:
        if "rows" in b:
            lines.append(
                f"| {b['endpoint']} | {b['backend']} | {b['part']} | {b['per_request']:g} | "
                f"{b['rows']:,.0f} | {b['query_ms']:.1f} | {b['decode_ms']:.1f} | {b['ms']:.1f} |"
            )
        else:
            lines.append(
                f"| {b['endpoint']} | {b['backend']} | {b['part']} | | | | | {b['ms']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), f"uvloop {version('uvloop')}"


def source_revision() -> str:
    """The commit measured, and whether src/ had changes on top of it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"


async def pg_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def amain(args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loop": loop_name,
        "asgimon": version("asgimon"),
        "sqlalchemy": version("sqlalchemy"),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": await pg_version(args.pg_url) if "postgresql" in args.backends else "—",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": source_revision(),
        "api_calls": args.api_calls,
        "domain_events": args.domain_events,
        "range": args.range,
        "requests": args.requests,
    }
    loads: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    for backend in args.backends:
        t = target_of(backend, args)
        wanted = {"api_calls": args.api_calls, "domain_events": args.domain_events}
        wanted |= {"seed": args.seed, "batch": args.batch, "shape": write_shape(args.seed)}
        marker = await read_marker(t, args) if args.reuse else None
        if marker is not None and marker.get("load") == wanted and await opens(t):
            print(f"{backend}: reusing the events loaded {marker['at']}", file=sys.stderr)
            ld: dict[str, Any] = {"backend": backend, "reused": True, "loaded_at": marker["at"]}
            ld["events"] = args.api_calls + args.domain_events
        else:
            await drop(t, args)
            await create(t)
            total = args.api_calls + args.domain_events
            print(f"{backend}: loading {total:,} events", file=sys.stderr)
            ld = {"backend": backend, "reused": False, **await load(t, args)}
            print(
                f"{backend}: loaded in {ld['load_s']:.1f} s, {ld['events_per_s']:,.0f} events/s",
                file=sys.stderr,
            )
        ld.update(await periodic_jobs(t))
        vacuumed = "" if ld["vacuum_s"] is None else f", VACUUM (ANALYZE) {ld['vacuum_s']:.1f} s"
        print(
            f"{backend}: purge {ld['purge_s']:.1f} s {ld['purged']}, "
            f"compaction {ld['compact_s']:.1f} s ({ld['packed']:,} rows packed){vacuumed}",
            file=sys.stderr,
        )
        if not ld["reused"]:
            at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            await write_marker(t, args, {"load": wanted, "at": at})
        ld["bytes"], ld["rollup_rows"] = await store_size(t, args)
        loads.append(ld)
        gc.collect()
        try:
            got, trace = await measure_queries(t, args)
        finally:
            if not args.reuse:
                await drop(t, args)
        rows.extend(got)
        breakdown.extend(trace)
        for r in got:
            print(
                f"  {backend:<10} {r['endpoint']:<18} cold {r['cold_median_ms']:7.1f} / "
                f"{r['cold_p95_ms']:7.1f} ms  warm {r['warm_median_ms']:7.1f} / "
                f"{r['warm_p95_ms']:7.1f} ms",
                file=sys.stderr,
            )
    return {"env": env, "loads": loads, "rows": rows, "trace": breakdown}


def csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--api-calls", type=int, default=10_000_000)
    ap.add_argument("--domain-events", type=int, default=1_000_000)
    ap.add_argument("--backends", type=csv, default=list(BACKENDS), help="comma-separated")
    ap.add_argument("--reuse", action="store_true", help="keep the data, and reuse it if there")
    ap.add_argument("--requests", type=int, default=40, help="timed rounds per endpoint")
    ap.add_argument("--range", default=RANGE, help="the range= of every request (30d)")
    ap.add_argument("--batch", type=int, default=BATCH, help="events per storage.write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sqlite-path", type=Path, default=Path("/tmp/asgimon-bench-query.db"))
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-schema", default="asgimon_bench")
    ap.add_argument("--trace", action="store_true", help="time each storage call per request")
    ap.add_argument("--md", type=Path, help="also write the markdown tables here")
    ap.add_argument("--json", type=Path, help="write raw results here")
    args = ap.parse_args(argv)
    for b in args.backends:
        if b not in BACKENDS:
            raise SystemExit(f"unknown backend {b!r}: choose from {', '.join(BACKENDS)}")
    if args.requests < 1:
        raise SystemExit("--requests must be at least 1")
    loop, loop_name = new_loop()
    print(f"event loop: {loop_name}", file=sys.stderr)
    try:
        result = loop.run_until_complete(amain(args, loop_name))
    finally:
        loop.close()
    md = render_md(result["env"], result["loads"], result["rows"])
    if result["trace"]:
        md += render_trace(result["trace"])
    print(md)
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
