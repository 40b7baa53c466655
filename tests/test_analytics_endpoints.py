"""The GET analytics endpoints: every field against figures computed from the raw events.

Each test writes a seeded history of every event kind over the last twelve days, asks the
API over loopback (an admin when no auth is configured) and recomputes each figure from the
events it wrote, in plain Python: counts exactly, averages to float rounding, percentiles
within 2 % (the histogram reads values back within 1 %).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request

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
from asgimon.analytics.ranges import TimeRange, parse_range
from asgimon.dashboard.auth import Principal

MINUTE = 60
HOUR = 3600
DAY = 86_400
APDEX_T = 500.0  # ANALYTICS_APDEX_THRESHOLD_MS by default
MINUTE_ROLLUPS_KEPT_S = 7 * DAY  # ANALYTICS_MINUTE_ROLLUP_RETENTION_DAYS by default
PHASES = ("clone", "install", "build", "optimize", "upload")
SEVERITIES = ("critical", "high", "medium", "low")
EDGES_MS = (10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0)  # the execution-time distribution
# Durations keep 3 % away from these: histogram bins are 2 % wide, so a value that close to
# a threshold could be counted on the other side of it.
THRESHOLDS_MS = (*EDGES_MS, 250.0, 2000.0)
FRAMEWORKS = ("nextjs", "vite", "astro", None)
ROUTES = {  # (method, endpoint) -> (mu, sigma) of a log-normal latency in ms
    ("GET", "/items"): (4.0, 0.8),
    ("GET", "/items/{id}"): (3.0, 0.6),
    ("POST", "/orders"): (5.5, 0.9),
    ("DELETE", "/items/{id}"): (6.6, 1.0),
}
# Cells a spreadsheet would run as formulas, which the CSV export must defuse.
RISKY_TEXT = ('=HYPERLINK("http://x")', "+1 retry left", "-1 is not a quantity", "@admin gone")
ERROR_KINDS = (  # (type, severities, messages); the first group has two severities
    ("TimeoutError", ("high", "critical"), ("timeout after 30 s", RISKY_TEXT[0])),
    ("KeyError", ("medium",), ("'sku'", RISKY_TEXT[1])),
    ("ValueError", ("low",), (RISKY_TEXT[2], "bad quantity")),
    ("PermissionError", ("high",), (RISKY_TEXT[3],)),
    ("grpc:Unavailable", ("critical",), ("upstream unavailable",)),
    ("ZeroDivisionError", ("medium",), ("division by zero",)),
    ("OSError", ("low",), ("disk full", "no space left")),
    ("RuntimeError", ("high",), ("event loop closed",)),
    ("ConnectionResetError", ("medium",), ("peer reset",)),
    ("TypeError", ("low",), ("NoneType is not iterable",)),
    ("AssertionError", ("critical",), ("invariant broken",)),
    ("LookupError", ("medium",), ("no such tenant",)),
)

E = TypeVar("E", bound=Event)


# -- the history ---------------------------------------------------------------------------


class Clock:
    """Distinct timestamps on a 1/64 s grid, exact in every backend (SQL keeps microseconds).

    ``careful`` ones stay 10 minutes clear of the instants where a deployment's impact
    changes with the exact time of the request: its after-window closing (an hour ago) and
    minute rollups giving way to hour rollups (seven days less an hour ago).
    """

    def __init__(self, rng: random.Random, now: float) -> None:
        self.rng = rng
        self.now = now
        self.used: set[float] = set()
        self.unsettled = (now - HOUR, now - MINUTE_ROLLUPS_KEPT_S + HOUR)

    def take(self, ts: float, *, careful: bool = False) -> float | None:
        ts = math.floor(ts * 64) / 64
        if ts in self.used or ts >= self.now - 1:
            return None
        if careful and any(abs(ts - t) < 600 for t in self.unsettled):
            return None
        self.used.add(ts)
        return ts

    def ago(self, lo: float, hi: float, *, careful: bool = False) -> float:
        while True:
            ts = self.take(self.now - self.rng.uniform(lo, hi), careful=careful)
            if ts is not None:
                return ts

    def near(self, center: float, spread: float) -> float:
        while True:
            ts = self.take(center + self.rng.uniform(-spread, spread))
            if ts is not None:
                return ts


@dataclass
class World:
    now: float
    api: list[ApiCall] = field(default_factory=list)
    deploys: list[DeploymentEvent] = field(default_factory=list)
    builds: list[BuildEvent] = field(default_factory=list)
    fns: list[FunctionInvocation] = field(default_factory=list)
    errors: list[ErrorEvent] = field(default_factory=list)
    domains: list[DomainEvent] = field(default_factory=list)

    def all(self) -> list[Event]:
        return [*self.api, *self.deploys, *self.builds, *self.fns, *self.errors, *self.domains]

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.all() if e.kind == kind]


def away_from_thresholds(rng: random.Random, mu: float, sigma: float) -> float:
    while True:
        value = round(rng.lognormvariate(mu, sigma), 3)
        if value > 0.01 and all(abs(value - t) > 0.03 * t for t in THRESHOLDS_MS):
            return value


def api_call(rng: random.Random, project: str, ts: float) -> ApiCall:
    route = rng.choices(list(ROUTES), weights=[5, 4, 2, 1])[0]
    duration = away_from_thresholds(rng, *ROUTES[route])
    return ApiCall(
        project_id=project,
        timestamp=ts,
        method=route[0],
        endpoint=route[1],
        status=rng.choices([200, 201, 404, 500, 503], weights=[70, 10, 8, 7, 5])[0],
        duration_ms=duration,
        ttfb_ms=round(duration * 0.4, 3) if rng.random() < 0.8 else None,
        total_ms=round(duration + rng.uniform(0, 20), 3),
        request_bytes=rng.choice([None, 0, 512]),
        response_bytes=rng.randint(0, 10_000),
        user_id=rng.choice([None, "u1", "@alice"]),
        request_id=rng.choice([None, f"req-{rng.randint(0, 10**6)}"]),
    )


def invocation(rng: random.Random, project: str, ts: float) -> FunctionInvocation:
    failed = rng.random() < 0.12
    return FunctionInvocation(
        project_id=project,
        timestamp=ts,
        function_id=rng.choice(["resize", "render", "mail"]),
        deployment_id=rng.choice([None, "d3"]),
        status="error" if failed else "success",
        duration_ms=away_from_thresholds(rng, 4.0, 1.5),
        cold_start=rng.random() < 0.2,
        memory_mb=rng.choice([None, 128.0, 512.0]),
        error_type="TimeoutError" if failed else None,
        error_message=RISKY_TEXT[2] if failed else None,
    )


def deployment(
    w: World, rng: random.Random, clock: Clock, project: str, name: str, done: float
) -> None:
    """A deployment that completed (most of the time) at ``done``, with traffic around it."""
    started = clock.near(done - 300, 270)
    w.deploys.append(
        DeploymentEvent(project_id=project, timestamp=started, deployment_id=name, type="started")
    )
    if rng.random() < 0.5:
        w.deploys.append(
            DeploymentEvent(
                project_id=project,
                timestamp=clock.near(started + 20, 10),
                deployment_id=name,
                type="in_progress",
            )
        )
    if rng.random() < 0.9:
        w.deploys.append(
            DeploymentEvent(
                project_id=project,
                timestamp=done,
                deployment_id=name,
                type="completed",
                status=rng.choice(["success", "success", "success", "failure"]),
                duration_ms=round(rng.uniform(5_000, 600_000), 3) if rng.random() < 0.9 else None,
                framework=rng.choice(FRAMEWORKS),
            )
        )
    for _ in range(rng.randint(2, 7)):
        w.api.append(api_call(rng, project, clock.near(done, 75 * MINUTE)))
    for _ in range(rng.randint(0, 3)):
        w.fns.append(invocation(rng, project, clock.near(done, 75 * MINUTE)))


def build(
    w: World, rng: random.Random, clock: Clock, project: str, name: str, start: float
) -> None:
    """Phases in order from ``clone``, stopping at the first failed one (or still running)."""
    framework = rng.choice(FRAMEWORKS)
    for phase in PHASES:
        end = None
        while end is None:
            end = clock.take(start + rng.uniform(0.5, 90))
        failed = rng.random() < 0.08
        w.builds.append(
            BuildEvent(
                project_id=project,
                timestamp=end,
                deployment_id=name,
                phase=phase,
                start_time=start,
                end_time=end,
                status="failure" if failed else "success",
                framework=framework,
                asset_count=(
                    rng.randint(1, 400)
                    if phase in ("build", "upload") and rng.random() < 0.8
                    else None
                ),
                total_size_bytes=rng.randint(10**3, 10**9) if phase == "upload" else None,
            )
        )
        start = math.floor((end + rng.uniform(0, 5)) * 64) / 64
        if failed or rng.random() < 0.06:
            return


def world(now: float, seed: int = 7) -> World:
    rng = random.Random(seed)
    clock = Clock(rng, now)
    w = World(now)

    def recent_or_not() -> tuple[float, float]:
        return (2 * MINUTE, 2 * DAY) if rng.random() < 0.45 else (2 * MINUTE, 12 * DAY)

    for i in range(46):
        deployment(w, rng, clock, "shop", f"d{i}", clock.ago(*recent_or_not(), careful=True))
    for i in range(46, 49):  # in the "past" window: impact from hour rollups
        deployment(w, rng, clock, "shop", f"d{i}", clock.ago(8.2 * DAY, 9.3 * DAY, careful=True))
    deployment(w, rng, clock, "shop", "d49", clock.ago(18 * MINUTE, 22 * MINUTE, careful=True))
    for _ in range(60):
        w.api.append(api_call(rng, "shop", clock.ago(*recent_or_not())))
    for _ in range(40):
        w.fns.append(invocation(rng, "shop", clock.ago(*recent_or_not())))
    for i in range(30):
        build(w, rng, clock, "shop", f"b{i}", clock.ago(15 * MINUTE, 12 * DAY))

    groups = [(f"{rng.getrandbits(128):032x}", kind) for kind in ERROR_KINDS]
    for _ in range(260):
        fingerprint, (error_type, severities, messages) = rng.choices(
            groups, weights=[12, 10, 9, 8, 7, 6, 5, 4, 3, 2, 2, 1]
        )[0]
        where = (2 * MINUTE, 6.5 * DAY) if rng.random() < 0.85 else (6.5 * DAY, 12 * DAY)
        if error_type == ERROR_KINDS[-1][0]:  # too old to be among the latest 200
            where = (9 * DAY, 12 * DAY)
        on_route = rng.random() < 0.6
        w.errors.append(
            ErrorEvent(
                project_id="shop",
                timestamp=clock.ago(*where),
                error_type=error_type,
                message=rng.choice(messages),
                stack='Traceback (most recent call last):\n  File "app.py", line 3\n',
                fingerprint=fingerprint,
                severity=rng.choice(severities),
                handled=rng.random() < 0.3,
                endpoint="/items/{id}" if on_route else None,
                method="GET" if on_route else None,
                request_id=rng.choice([None, "req-1"]),
                user_id=rng.choice([None, "u1"]),
                deployment_id=rng.choice([None, "d1"]),
                context=rng.choice([{}, {"user": {"plan": "pro"}, "attempt": 2}]),
            )
        )
    for _ in range(8):
        ts = clock.ago(2 * MINUTE, 12 * DAY)
        w.domains.append(
            DomainEvent(
                project_id="shop",
                timestamp=ts,
                domain="shop.example.com",
                type=rng.choice(["added", "verified", "ssl_issued", "ssl_failed"]),
                expires_at=rng.choice([None, ts + 90 * DAY]),
            )
        )

    # A second project, and a third whose data is older than a week.
    for i in range(2):
        deployment(w, rng, clock, "blog", f"blog-d{i}", clock.ago(HOUR * 3, 3 * DAY, careful=True))
    for _ in range(8):
        w.api.append(api_call(rng, "blog", clock.ago(2 * MINUTE, 3 * DAY)))
    build(w, rng, clock, "blog", "blog-b0", clock.ago(HOUR, 3 * DAY))
    for fingerprint, (error_type, severities, messages) in groups[:3]:
        w.errors.append(
            ErrorEvent(
                project_id="blog",
                timestamp=clock.ago(2 * MINUTE, 3 * DAY),
                error_type=error_type,
                message=messages[0],
                fingerprint=fingerprint,
                severity=severities[0],
            )
        )
    deployment(w, rng, clock, "ops", "ops-d0", clock.ago(15 * DAY, 20 * DAY, careful=True))
    return w


# -- asking the API --------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).date().isoformat()


def window(name: str, now: float) -> dict[str, str]:
    """The query parameters of a named range."""
    if name == "default":
        return {}
    if name == "past":  # 36 hours, eight to nine and a half days ago: hour resolution
        return {"start": iso(now - 9.5 * DAY), "end": iso(now - 8 * DAY)}
    if name == "empty":  # long before anything was recorded: day resolution
        return {"start": iso(now - 200 * DAY), "end": iso(now - 196 * DAY)}
    return {"range": name}


WINDOWS = ["default", "24h", "30d", "past"]


async def get(monitor: Monitor, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(monitor.wrap(Starlette()), client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        return await c.get(path)


def url(path: str, params: Mapping[str, str]) -> str:
    return f"/analytics/api/{path}" + (f"?{urlencode(params)}" if params else "")


@dataclass
class Answer:
    body: dict[str, Any]
    span: TimeRange
    now: float  # just before the request


async def ask(monitor: Monitor, path: str, params: Mapping[str, str]) -> Answer:
    """A 200 answer and the range it covers: the range as of just before or just after."""
    before = time.time()
    response = await get(monitor, url(path, params))
    after = time.time()
    assert response.status_code == 200, response.text
    body = response.json()
    asked = {k: v for k, v in params.items() if k in ("range", "start", "end")}
    spans = [parse_range(asked, now=t) for t in (before, after)]
    matching = [s for s in spans if (iso(s.start), iso(s.end)) == (body["start"], body["end"])]
    assert matching, (body["start"], body["end"], spans)
    assert body["resolution"] == matching[0].resolution
    return Answer(body, matching[0], before)


def check(body: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Every field there is, and nothing else."""
    assert sorted(body) == sorted(expected)
    for key, want in expected.items():
        assert body[key] == want, key


# -- figures from the raw events ---------------------------------------------------------


def inside(events: Iterable[E], span: TimeRange, project: str = "shop") -> list[E]:
    return [e for e in events if e.project_id == project and span.start <= e.timestamp < span.end]


def newest(events: Iterable[E], n: int) -> list[E]:
    return sorted(events, key=lambda e: e.timestamp, reverse=True)[:n]


def approx(value: float | None, rel: float = 1e-6) -> Any:
    return None if value is None else pytest.approx(value, rel=rel)


def mean(values: Sequence[float]) -> Any:
    return approx(sum(values) / len(values)) if values else None


def rate(part: int, whole: int) -> Any:
    return approx(part / whole) if whole else 0.0


def pct(values: Sequence[float], q: float) -> Any:
    """The value at sorted position floor(q * (n - 1)), within 2 %."""
    if not values:
        return None
    return pytest.approx(sorted(values)[math.floor(q * (len(values) - 1))], rel=0.02)


def trend(
    span: TimeRange, events: Sequence[E], point: Callable[[list[E]], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One point per bucket of the range, empty ones included."""
    width = HOUR if span.resolution == "hour" else DAY
    assert span.start % width == span.end % width == 0
    return [
        {"time": iso(b), **point([e for e in events if b <= e.timestamp < b + width])}
        for b in range(int(span.start), int(span.end), width)
    ]


def header(project: str, span: TimeRange) -> dict[str, Any]:
    return {
        "projectId": project,
        "start": iso(span.start),
        "end": iso(span.end),
        "resolution": span.resolution,
    }


def phase_ms(p: BuildEvent) -> float:
    return (p.end_time - p.start_time) * 1000


def server_error(c: ApiCall) -> bool:
    return c.status >= 500


def headline(w: World, span: TimeRange, project: str) -> dict[str, Any]:
    done = [d for d in inside(w.deploys, span, project) if d.type == "completed"]
    phases = inside(w.builds, span, project)
    clones = [p for p in phases if p.phase == "clone"]
    fns = inside(w.fns, span, project)
    calls = inside(w.api, span, project)
    latencies = [c.duration_ms for c in calls]
    return {
        "totalDeployments": len(done),
        "successRate": rate(sum(d.status == "success" for d in done), len(done)),
        "avgDeploymentTime": mean([d.duration_ms for d in done if d.duration_ms is not None]),
        "avgBuildTime": approx(sum(map(phase_ms, phases)) / len(clones)) if clones else None,
        "totalBuilds": len(clones),
        "totalFunctionInvocations": len(fns),
        "functionErrorRate": rate(sum(f.status == "error" for f in fns), len(fns)),
        "totalErrors": len(inside(w.errors, span, project)),
        "totalApiCalls": len(calls),
        "apiErrorRate": rate(sum(map(server_error, calls)), len(calls)),
        "avgApiLatency": mean(latencies),
        "p95ApiLatency": pct(latencies, 0.95),
    }


SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def error_groups(w: World, span: TimeRange, project: str = "shop") -> list[dict[str, Any]]:
    """One group per fingerprint (its highest severity); message and last time from the
    newest of the latest 200 events of the fingerprint, or the last bucket when it is not
    among them; no lifecycle held (the events were written to the store directly), so
    every group is unresolved; a spike is over twice the previous range, and 5 or more."""
    errs = inside(w.errors, span, project)
    length = span.end - span.start
    previous = Counter(
        e.fingerprint
        for e in w.errors
        if e.project_id == project and span.start - length <= e.timestamp < span.start
    )
    width = HOUR if span.resolution == "hour" else DAY
    latest: dict[str, ErrorEvent] = {}
    for e in newest(errs, 200):
        latest.setdefault(e.fingerprint, e)
    found: dict[str, list[ErrorEvent]] = {}
    for e in errs:
        found.setdefault(e.fingerprint, []).append(e)
    groups = []
    for fingerprint, members in found.items():
        buckets = [e.timestamp // width * width for e in members]
        last = latest.get(fingerprint)
        before = previous.get(fingerprint, 0)
        groups.append(
            {
                "fingerprint": fingerprint,
                "type": members[0].error_type,
                "severity": max((e.severity for e in members), key=SEVERITY_RANK.__getitem__),
                "count": len(members),
                "firstSeen": iso(min(buckets)),
                "lastSeen": iso(last.timestamp if last else max(buckets)),
                "message": last.message if last else None,
                "status": "unresolved",
                "regressed": False,
                "regressions": 0,
                "previousCount": before,
                "spike": len(members) >= 5 and len(members) > 2 * before,
                "totalCount": len(members),
                "firstRelease": None,
                "lastRelease": None,
                "resolvedAt": None,
                "ignoreUntil": None,
                "ignoreCount": None,
            }
        )
    return sorted(groups, key=lambda g: (-g["count"], g["fingerprint"]))


def expected_dashboard(w: World, span: TimeRange, project: str) -> dict[str, Any]:
    done = [d for d in inside(w.deploys, span, project) if d.type == "completed"]
    return {
        **header(project, span),
        **headline(w, span, project),
        "recentDeployments": [
            {
                "id": d.id,
                "deploymentId": d.deployment_id,
                "type": d.type,
                "status": d.status,
                "durationMs": approx(d.duration_ms),
                "framework": d.framework,
                "timestamp": iso(d.timestamp),
            }
            for d in newest(inside(w.deploys, span, project), 10)
        ],
        "topErrors": error_groups(w, span, project)[:10],
        "deploymentTrend": trend(
            span,
            done,
            lambda b: {"count": len(b), "failures": sum(d.status == "failure" for d in b)},
        ),
    }


def expected_builds(w: World, span: TimeRange) -> dict[str, Any]:
    phases = inside(w.builds, span)
    clones = [p for p in phases if p.phase == "clone"]
    failures = [p for p in phases if p.status == "failure"]
    frameworks = Counter(c.framework or "unknown" for c in clones)

    def point(bucket: list[BuildEvent]) -> dict[str, Any]:
        n = sum(p.phase == "clone" for p in bucket)
        return {
            "builds": n,
            "failures": sum(p.status == "failure" for p in bucket),
            "avgDuration": approx(sum(map(phase_ms, bucket)) / n) if n else None,
        }

    per_phase = []
    for phase in PHASES:
        runs = [p for p in phases if p.phase == phase]
        if runs:
            times = [phase_ms(p) for p in runs]
            per_phase.append(
                {
                    "phase": phase,
                    "count": len(runs),
                    "failures": sum(p.status == "failure" for p in runs),
                    "avgDuration": mean(times),
                    "p50Duration": pct(times, 0.5),
                    "p95Duration": pct(times, 0.95),
                }
            )
    return {
        **header("shop", span),
        "totalBuilds": len(clones),
        "successRate": rate(len(clones) - len(failures), len(clones)),
        "failureRate": rate(len(failures), len(clones)),
        "avgDuration": approx(sum(map(phase_ms, phases)) / len(clones)) if clones else None,
        "durationTrend": trend(span, phases, point),
        "phaseDurations": per_phase,
        "frameworkUsage": [
            {"framework": f, "count": n, "share": approx(n / len(clones))}
            for f, n in sorted(frameworks.items())
        ],
        "builds": build_rows(newest(phases, 500)),
    }


def build_rows(latest: list[BuildEvent]) -> list[dict[str, Any]]:
    """One row per deployment id, newest build first, phases in the order they ran."""
    per: dict[str, list[BuildEvent]] = {}
    for p in latest:
        per.setdefault(p.deployment_id, []).append(p)
    rows = []
    for name, runs in per.items():
        runs = sorted(runs, key=lambda p: p.start_time)
        assets = [p.asset_count for p in runs if p.asset_count is not None]
        sizes = [p.total_size_bytes for p in runs if p.total_size_bytes is not None]
        rows.append(
            {
                "deploymentId": name,
                "framework": next((p.framework for p in runs if p.framework), None),
                "status": "failure" if any(p.status == "failure" for p in runs) else "success",
                "startTime": iso(runs[0].start_time),
                "endTime": iso(max(p.end_time for p in runs)),
                "durationMs": approx(sum(map(phase_ms, runs))),
                "assetCount": assets[-1] if assets else None,
                "totalSizeBytes": sizes[-1] if sizes else None,
                "phases": [
                    {"phase": p.phase, "status": p.status, "durationMs": approx(phase_ms(p))}
                    for p in runs
                ],
            }
        )
    return rows


def recent_error(e: ErrorEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "fingerprint": e.fingerprint,
        "type": e.error_type,
        "message": e.message,
        "severity": e.severity,
        "handled": e.handled,
        "endpoint": e.endpoint,
        "method": e.method,
        "deploymentId": e.deployment_id,
        "userId": e.user_id,
        "timestamp": iso(e.timestamp),
    }


def expected_errors(w: World, span: TimeRange) -> dict[str, Any]:
    errs = inside(w.errors, span)
    by_type = Counter(e.error_type for e in errs)
    by_severity = Counter(e.severity for e in errs)
    return {
        **header("shop", span),
        "totalErrors": len(errs),
        "exact": True,
        "errorsByType": [
            {"type": t, "count": n}
            for t, n in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "errorsBySeverity": [{"severity": s, "count": by_severity[s]} for s in SEVERITIES],
        "errorTrend": trend(span, errs, lambda b: {"count": len(b)}),
        "recentErrors": [recent_error(e) for e in newest(errs, 200)],
        "groups": error_groups(w, span),
    }


def apdex(latencies: Sequence[float], threshold: float) -> Any:
    if not latencies:
        return None
    satisfied = sum(d <= threshold for d in latencies)
    tolerating = sum(threshold < d <= 4 * threshold for d in latencies)
    return approx((satisfied + tolerating / 2) / len(latencies))


def latency_figures(calls: Sequence[ApiCall]) -> dict[str, Any]:
    latencies = [c.duration_ms for c in calls]
    errors = sum(map(server_error, calls))
    return {
        "count": len(calls),
        "errors": errors,
        "errorRate": rate(errors, len(calls)),
        "avg": mean(latencies),
        "p50": pct(latencies, 0.5),
        "p95": pct(latencies, 0.95),
        "p99": pct(latencies, 0.99),
    }


def expected_performance(w: World, span: TimeRange, threshold: float) -> dict[str, Any]:
    calls = inside(w.api, span)
    latencies = [c.duration_ms for c in calls]
    per: dict[tuple[str, str], list[ApiCall]] = {}
    for c in calls:
        per.setdefault((c.method, c.endpoint), []).append(c)
    return {
        **header("shop", span),
        "apdexThresholdMs": threshold,
        "requests": len(calls),
        "errorRate": rate(sum(map(server_error, calls)), len(calls)),
        "avgLatency": mean(latencies),
        "p50Latency": pct(latencies, 0.5),
        "p95Latency": pct(latencies, 0.95),
        "p99Latency": pct(latencies, 0.99),
        "apdex": apdex(latencies, threshold),
        "latencyTrend": trend(
            span,
            calls,
            lambda b: {
                "count": len(b),
                "errors": sum(map(server_error, b)),
                "avg": mean([c.duration_ms for c in b]),
                "p95": pct([c.duration_ms for c in b], 0.95),
            },
        ),
        "endpoints": {
            route: {
                "method": route[0],
                "endpoint": route[1],
                **latency_figures(group),
                "apdex": apdex([c.duration_ms for c in group], threshold),
            }
            for route, group in per.items()
        },
        "system": [],  # this world samples no process
        "queries": [],  # and runs no database statement
    }


def impact(w: World, at: float, now: float) -> dict[str, Any]:
    """The API and functions in the hour before the deployment's minute and the hour from it
    (its hour, once minute rollups are no longer kept)."""
    minute = at - HOUR >= now - MINUTE_ROLLUPS_KEPT_S
    width = MINUTE if minute else HOUR
    pivot = math.floor(at / width) * width

    def side(lo: float, hi: float) -> dict[str, Any]:
        calls = [c for c in w.api if c.project_id == "shop" and lo <= c.timestamp < hi]
        fns = [f for f in w.fns if f.project_id == "shop" and lo <= f.timestamp < hi]
        return {
            "apiCalls": len(calls),
            "avgLatency": mean([c.duration_ms for c in calls]),
            "errorRate": rate(sum(map(server_error, calls)), len(calls)),
            "invocations": len(fns),
            "functionErrorRate": rate(sum(f.status == "error" for f in fns), len(fns)),
            "avgExecutionTime": mean([f.duration_ms for f in fns]),
        }

    return {
        "windowSeconds": HOUR,
        "resolution": "minute" if minute else "hour",
        "before": side(pivot - HOUR, pivot),
        "after": side(pivot, pivot + HOUR),
        "afterComplete": pivot + HOUR <= now,
        "pivot": iso(pivot),
    }


def expected_deployments(w: World, span: TimeRange, now: float) -> dict[str, Any]:
    events = inside(w.deploys, span)
    done = [d for d in events if d.type == "completed"]
    failed = sum(d.status == "failure" for d in done)
    timed = [d.duration_ms for d in done if d.duration_ms is not None]
    listed = newest(events, 100)
    compared = {d.id for d in [d for d in listed if d.type == "completed"][:20]}
    by_date = Counter(day(d.timestamp) for d in done)
    frameworks = Counter(d.framework or "unknown" for d in done)
    return {
        **header("shop", span),
        "totalDeployments": len(done),
        "successRate": rate(len(done) - failed, len(done)),
        "failureRate": rate(failed, len(done)),
        "avgDuration": mean(timed),
        "p50Duration": pct(timed, 0.5),
        "p95Duration": pct(timed, 0.95),
        "p99Duration": pct(timed, 0.99),
        "deploymentsByDate": [{"date": d, "count": n} for d, n in sorted(by_date.items())],
        "deploymentsByStatus": [
            {"status": "success", "count": len(done) - failed},
            {"status": "failure", "count": failed},
        ],
        "frameworkDistribution": [
            {"framework": f, "count": n, "share": approx(n / len(done))}
            for f, n in sorted(frameworks.items())
        ],
        "deploymentTrend": trend(
            span,
            done,
            lambda b: {
                "count": len(b),
                "failures": sum(d.status == "failure" for d in b),
                "avgDuration": mean([d.duration_ms for d in b if d.duration_ms is not None]),
            },
        ),
        "deployments": [
            {
                "id": d.id,
                "deploymentId": d.deployment_id,
                "type": d.type,
                "status": d.status,
                "durationMs": approx(d.duration_ms),
                "framework": d.framework,
                "timestamp": iso(d.timestamp),
                # No error group has a lifecycle here (events written to the store directly).
                "newErrorGroups": 0 if (d.type, d.status) == ("completed", "success") else None,
                "impact": impact(w, d.timestamp, now) if d.id in compared else None,
            }
            for d in listed
        ],
    }


def expected_functions(w: World, span: TimeRange) -> dict[str, Any]:
    calls = inside(w.fns, span)
    times = [c.duration_ms for c in calls]
    names = sorted({c.function_id for c in calls})

    def figures(group: list[FunctionInvocation]) -> dict[str, Any]:
        mine = [c.duration_ms for c in group]
        errors = sum(c.status == "error" for c in group)
        return {
            "invocations": len(group),
            "errors": errors,
            "errorRate": rate(errors, len(group)),
            "avgExecutionTime": mean(mine),
            "p50ExecutionTime": pct(mine, 0.5),
            "p95ExecutionTime": pct(mine, 0.95),
            "p99ExecutionTime": pct(mine, 0.99),
        }

    overall = figures(calls)
    bounds = [(0.0, EDGES_MS[0]), *itertools.pairwise(EDGES_MS)]
    return {
        **header("shop", span),
        "totalInvocations": len(calls),
        "invocationRate": approx(len(calls) / ((span.end - span.start) / MINUTE)),
        **{k: v for k, v in overall.items() if k not in ("invocations", "errors")},
        "invocationsByFunction": [
            {"functionId": f, "count": sum(c.function_id == f for c in calls)} for f in names
        ],
        "errorsByFunction": [
            {
                "functionId": f,
                "count": sum(c.function_id == f and c.status == "error" for c in calls),
            }
            for f in names
        ],
        "executionTimeDistribution": [
            {"fromMs": lo, "toMs": hi, "count": sum(lo < t <= hi for t in times)}
            for lo, hi in bounds
        ]
        + [{"fromMs": EDGES_MS[-1], "toMs": None, "count": sum(t > EDGES_MS[-1] for t in times)}],
        "invocationTrend": trend(
            span,
            calls,
            lambda b: {
                "invocations": len(b),
                "errors": sum(c.status == "error" for c in b),
                "avgExecutionTime": mean([c.duration_ms for c in b]),
            },
        ),
        "functions": [
            {"functionId": f, **figures([c for c in calls if c.function_id == f])} for f in names
        ],
    }


def expected_overview(w: World, span: TimeRange, projects: Sequence[str]) -> dict[str, Any]:
    return {
        "start": iso(span.start),
        "end": iso(span.end),
        "resolution": span.resolution,
        "totalProjects": len(projects),
        "projects": [{"projectId": p, **headline(w, span, p)} for p in projects],
    }


# Each kind's fields in the raw-events listing, after id, projectId and timestamp.
LISTED_FIELDS = {
    "api_call": (
        "method",
        "endpoint",
        "status",
        "duration_ms",
        "ttfb_ms",
        "total_ms",
        "request_bytes",
        "response_bytes",
        "user_id",
        "request_id",
    ),
    "deployment": ("deployment_id", "type", "status", "duration_ms", "framework"),
    "build": (
        "deployment_id",
        "phase",
        "start_time",
        "end_time",
        "status",
        "framework",
        "asset_count",
        "total_size_bytes",
    ),
    "function": (
        "function_id",
        "deployment_id",
        "status",
        "duration_ms",
        "cold_start",
        "memory_mb",
        "error_type",
        "error_message",
    ),
    "domain": ("domain", "type", "expires_at"),
    "error": (
        "error_type",
        "message",
        "stack",
        "exception",
        "fingerprint",
        "severity",
        "handled",
        "endpoint",
        "method",
        "request_id",
        "user_id",
        "deployment_id",
        "context",
    ),
}


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.capitalize() for p in rest)


def listed(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": e.kind,
        "id": e.id,
        "projectId": e.project_id,
        "timestamp": iso(e.timestamp),
    }
    for name in LISTED_FIELDS[e.kind]:
        value = getattr(e, name)
        if name in ("start_time", "end_time", "expires_at") and value is not None:
            value = iso(value)
        elif isinstance(value, float):
            value = approx(value)
        out[camel(name)] = value
    return out


# -- the endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("name", WINDOWS)
async def test_dashboard(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "dashboard/shop", window(name, w.now))
    expected = expected_dashboard(w, answer.span, "shop")
    check(answer.body, expected)
    if name == "default":  # the history is rich enough to mean something
        assert len(expected["recentDeployments"]) == 10
        assert len(error_groups(w, answer.span)) > 10
        assert expected["totalBuilds"]
        assert expected["totalApiCalls"]


@pytest.mark.parametrize("name", WINDOWS)
async def test_builds(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "builds/shop", window(name, w.now))
    expected = expected_builds(w, answer.span)
    check(answer.body, expected)
    if name == "30d":
        assert any(b["status"] == "failure" for b in expected["builds"])
        assert any(len(b["phases"]) < len(PHASES) for b in expected["builds"])
        assert len(expected["frameworkUsage"]) == len(FRAMEWORKS)


async def test_builds_list_the_builds_of_the_latest_500_phases(storage: Storage) -> None:
    now = time.time()
    rng = random.Random(3)
    clock = Clock(rng, now)
    w = World(now)
    for i in range(150):
        build(w, rng, clock, "shop", f"b{i}", clock.ago(15 * MINUTE, 20 * HOUR))
    assert len(w.builds) > 500
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "builds/shop", {"range": "24h"})
    check(answer.body, expected_builds(w, answer.span))
    assert sum(len(b["phases"]) for b in answer.body["builds"]) == 500


@pytest.mark.parametrize("name", WINDOWS)
async def test_errors(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "errors/shop", window(name, w.now))
    check(answer.body, expected_errors(w, answer.span))
    if name in ("default", "30d"):  # more than the 200 recent ones
        assert len(inside(w.errors, answer.span)) > 200
    if name == "30d":  # a group read from the rollups only, over several days
        assert any(g["message"] is None for g in error_groups(w, answer.span))


@pytest.mark.parametrize("name", WINDOWS)
async def test_performance(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "performance/shop", window(name, w.now))
    expected = expected_performance(w, answer.span, APDEX_T)
    endpoints = expected.pop("endpoints")
    body = dict(answer.body)
    rows = body.pop("endpoints")
    check(body, expected)
    assert {(r["method"], r["endpoint"]): r for r in rows} == endpoints
    assert len(rows) == len(endpoints)
    counts = [r["count"] for r in rows]  # busiest first by default
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("threshold", [APDEX_T, 250.0])
async def test_performance_sorts_and_apdex_threshold(storage: Storage, threshold: float) -> None:
    w = world(time.time())
    await storage.write(w.all())
    monitor = Monitor(storage=storage, apdex_threshold_ms=threshold)
    for sort, key, worst_first in [
        ("count", "count", True),
        ("avg", "avg", True),
        ("p95", "p95", True),
        ("errorRate", "errorRate", True),
        ("apdex", "apdex", False),
    ]:
        answer = await ask(monitor, "performance/shop", {"sort": sort, "range": "30d"})
        expected = expected_performance(w, answer.span, threshold)
        rows = answer.body["endpoints"]
        assert {(r["method"], r["endpoint"]): r for r in rows} == expected["endpoints"], sort
        assert len(rows) == len(ROUTES)
        keys = [r[key] for r in rows]
        assert keys == sorted(keys, reverse=worst_first), sort
        assert answer.body["apdexThresholdMs"] == threshold
        assert answer.body["apdex"] == expected["apdex"]


@pytest.mark.parametrize("name", WINDOWS)
async def test_overview(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "overview", window(name, w.now))
    # Loopback without auth is an admin: every project with data, in or out of the range.
    check(answer.body, expected_overview(w, answer.span, ["blog", "ops", "shop"]))


async def test_overview_has_a_row_per_project_the_caller_may_see(storage: Storage) -> None:
    w = world(time.time())
    await storage.write(w.all())

    def member(request: Request) -> Principal:
        return Principal("member", projects=frozenset({"shop", "nobody"}))

    monitor = Monitor(storage=storage, auth=member)
    answer = await ask(monitor, "overview", {"range": "30d"})
    check(answer.body, expected_overview(w, answer.span, ["nobody", "shop"]))
    forbidden = await get(monitor, "/analytics/api/dashboard/blog")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["details"][0]["field"] == "projectId"


@pytest.mark.parametrize("name", WINDOWS)
async def test_deployments(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "deployments/shop", window(name, w.now))
    expected = expected_deployments(w, answer.span, answer.now)
    check(answer.body, expected)
    impacts = [d["impact"] for d in expected["deployments"] if d["impact"] is not None]
    if name == "30d":  # more than 100 events, more than 20 completed among them
        assert len(expected["deployments"]) == 100
        assert len(impacts) == 20 < sum(d["type"] == "completed" for d in expected["deployments"])
        assert any(not i["afterComplete"] for i in impacts)
    if name == "past":
        assert impacts
        assert all(i["resolution"] == "hour" for i in impacts)
    if name == "24h":
        assert impacts
        assert all(i["resolution"] == "minute" for i in impacts)
        assert any(i["before"]["apiCalls"] and i["after"]["invocations"] for i in impacts)


@pytest.mark.parametrize("name", WINDOWS)
async def test_functions(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    answer = await ask(Monitor(storage=storage), "functions/shop", window(name, w.now))
    check(answer.body, expected_functions(w, answer.span))


async def test_events_listing(storage: Storage) -> None:
    w = world(time.time())
    await storage.write(w.all())
    monitor = Monitor(storage=storage)
    cases: list[tuple[dict[str, str], str, int]] = [
        ({}, "api_call", 100),
        ({"kind": "error", "limit": "50"}, "error", 50),
        ({"kind": "error", "limit": "1000", "range": "30d"}, "error", 1000),
        ({"kind": "build", "range": "24h"}, "build", 100),
        ({"kind": "deployment", "limit": "7"}, "deployment", 7),
        ({"kind": "function", "range": "30d", "limit": "1000"}, "function", 1000),
        ({"kind": "domain", "range": "30d"}, "domain", 100),
        ({"kind": "api_call", "limit": "1", "range": "1h"}, "api_call", 1),
        ({"kind": "deployment", **window("past", w.now)}, "deployment", 100),
    ]
    for params, kind, limit in cases:
        answer = await ask(monitor, "events/shop", params)
        want = [listed(e) for e in newest(inside(w.of_kind(kind), answer.span), limit)]
        check(answer.body, {**header("shop", answer.span), "kind": kind, "events": want})
        assert want, params
    everything = await ask(
        monitor, "events/shop", {"kind": "error", "limit": "1000", "range": "30d"}
    )
    assert len(everything.body["events"]) == sum(e.project_id == "shop" for e in w.errors)


# -- CSV export ----------------------------------------------------------------------------


def flatten(row: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects become dotted columns; lists and an error's free-form context stay
    whole, as JSON text."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping) and key == "context":
            out[prefix + key] = json.dumps(value, separators=(",", ":"))
        elif isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            out[prefix + key] = json.dumps(value, separators=(",", ":"))
        else:
            out[prefix + key] = value
    return out


def check_csv(response: httpx.Response, rows: list[dict[str, Any]], filename: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
    flat = [flatten(r) for r in rows]
    columns = list(dict.fromkeys(c for r in flat for c in r))
    table = list(csv.reader(io.StringIO(response.text, newline="")))
    assert table[0] == columns
    assert len(table) == len(rows) + 1
    for got, want in zip(table[1:], flat, strict=True):
        assert len(got) == len(columns)
        for column, cell in zip(columns, got, strict=True):
            value = want.get(column)
            if value is None:
                assert cell == "", column
            elif isinstance(value, bool):
                assert cell == ("true" if value else "false"), column
            elif isinstance(value, int):
                assert cell == str(value), column
            elif isinstance(value, float):
                assert float(cell) == pytest.approx(value), column
            elif value.startswith(("=", "+", "-", "@")):
                assert cell == "'" + value, column
            else:
                assert cell == value, column


CSV_TABLES = {
    "dashboard/shop": ("recentDeployments", "topErrors", "deploymentTrend"),
    "deployments/shop": (
        "deployments",
        "deploymentsByDate",
        "deploymentsByStatus",
        "frameworkDistribution",
        "deploymentTrend",
    ),
    "functions/shop": (
        "functions",
        "invocationsByFunction",
        "errorsByFunction",
        "executionTimeDistribution",
        "invocationTrend",
    ),
    "builds/shop": ("builds", "phaseDurations", "frameworkUsage", "durationTrend"),
    "errors/shop": ("groups", "errorsByType", "errorsBySeverity", "recentErrors", "errorTrend"),
    "performance/shop": ("endpoints", "latencyTrend", "queries", "system"),
    "events/shop": ("events",),
    "overview": ("projects",),
}


@pytest.mark.parametrize("path", list(CSV_TABLES))
async def test_csv_export_is_the_json_list(storage: Storage, path: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    monitor = Monitor(storage=storage)
    params = {"range": "30d", **({"kind": "error", "limit": "300"} if "events" in path else {})}
    body = (await ask(monitor, path, params)).body
    tables = CSV_TABLES[path]
    texts = []
    for table in [None, *tables]:
        chosen = table or tables[0]
        extra = {"format": "csv"} if table is None else {"format": "csv", "table": table}
        response = await get(monitor, url(path, {**params, **extra}))
        filename = "overview.csv" if path == "overview" else f"shop-{chosen}.csv"
        check_csv(response, body[chosen], filename)
        texts.append(response.text)
    if path in ("errors/shop", "events/shop"):  # messages that would be formulas
        assert all(f"'{risky}" in "".join(texts) for risky in RISKY_TEXT[1:])


async def test_an_empty_list_exports_a_bare_header() -> None:
    monitor = Monitor(storage=MemoryStorage())
    response = await get(monitor, "/analytics/api/builds/nobody?format=csv&table=builds")
    check_csv(response, [], "nobody-builds.csv")
    assert response.text == "\r\n"


# -- bad queries, unknown projects, empty ranges ----------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("dashboard/shop?format=xml", "format"),
        ("deployments/shop?format=csv&table=nope", "table"),
        ("deployments/shop?format=csv&table=groups", "table"),
        ("builds/shop?table=builds", "table"),
        ("builds/shop?format=json&table=builds", "table"),
        ("errors/shop?foo=1", "foo"),
        ("errors/shop?range=24h&range=7d", "range"),
        ("functions/shop?sort=count", "sort"),
        ("functions/shop?format=csv&format=json", "format"),
        ("performance/shop?sort=slowest", "sort"),
        ("performance/shop?sort=", "sort"),
        ("events/shop?kind=nope", "kind"),
        ("events/shop?limit=0", "limit"),
        ("events/shop?limit=1001", "limit"),
        ("events/shop?limit=ten", "limit"),
        ("events/shop?limit=-5", "limit"),
        ("events/shop?format=csv&table=groups", "table"),
        ("events/shop?sort=count", "sort"),
        ("overview?table=projects", "table"),
        ("overview?format=csv&table=groups", "table"),
        ("overview?format=pdf", "format"),
        ("overview?kind=error", "kind"),
        ("overview?range=2w", "range"),
    ],
)
async def test_a_bad_parameter_is_a_422_naming_it(query: str, field: str) -> None:
    response = await get(Monitor(storage=MemoryStorage()), f"/analytics/api/{query}")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_query"
    assert [d["field"] for d in error["details"]] == [field]


def assert_nothing(body: Any, path: str = "") -> None:
    """Every count and rate zero, every average and percentile None, at any depth."""
    if isinstance(body, Mapping):
        for key, value in body.items():
            if key not in ("apdexThresholdMs", "fromMs", "toMs", "exact"):
                assert_nothing(value, f"{path}.{key}")
    elif isinstance(body, list):
        for i, value in enumerate(body):
            assert_nothing(value, f"{path}[{i}]")
    elif isinstance(body, bool):
        raise AssertionError(f"{path} is {body}")
    elif isinstance(body, int | float):
        assert body == 0, path


def expected_for(path: str, w: World, answer: Answer) -> dict[str, Any]:
    span = answer.span
    if path == "dashboard":
        return expected_dashboard(w, span, "shop")
    if path == "builds":
        return expected_builds(w, span)
    if path == "errors":
        return expected_errors(w, span)
    if path == "performance":
        return {**expected_performance(w, span, APDEX_T), "endpoints": []}
    if path == "deployments":
        return expected_deployments(w, span, answer.now)
    assert path == "functions"
    return expected_functions(w, span)


PROJECT_ENDPOINTS = ["dashboard", "builds", "errors", "performance", "deployments", "functions"]


@pytest.mark.parametrize("name", ["1h", "24h", "default", "empty"])
async def test_an_unknown_project_or_empty_range_gives_zeros(storage: Storage, name: str) -> None:
    w = world(time.time())
    await storage.write(w.all())
    monitor = Monitor(storage=storage)
    nothing = World(w.now)
    params = window(name, w.now)
    # "nobody" has no events at all; "shop" has none in the "empty" range.
    for project in ["nobody", "shop"] if name == "empty" else ["nobody"]:
        for path in PROJECT_ENDPOINTS:
            answer = await ask(monitor, f"{path}/{project}", params)
            span = answer.span
            check(answer.body, {**expected_for(path, nothing, answer), "projectId": project})
            assert_nothing({k: v for k, v in answer.body.items() if k != "projectId"}, path)
            trends = [v for k, v in answer.body.items() if k.endswith("Trend")]
            width = HOUR if span.resolution == "hour" else DAY
            assert trends
            for points in trends:
                assert [p["time"] for p in points] == [
                    iso(b) for b in range(int(span.start), int(span.end), width)
                ]
        listing = await ask(monitor, f"events/{project}", {**params, "kind": "error"})
        assert listing.body["events"] == []
    overview = await ask(monitor, "overview", params)
    if name == "empty":
        check(overview.body, expected_overview(nothing, overview.span, ["blog", "ops", "shop"]))
        assert_nothing(overview.body["projects"])


async def test_an_empty_store_answers_zeros() -> None:
    monitor = Monitor(storage=MemoryStorage())
    body = (await ask(monitor, "overview", {})).body
    # No project has data: at most the configured one, with nothing in it.
    assert body["totalProjects"] == len(body["projects"]) <= 1
    assert {p["projectId"] for p in body["projects"]} <= {monitor.settings.project_id}
    assert_nothing(body["projects"])
    for path in PROJECT_ENDPOINTS:
        answer = await ask(monitor, f"{path}/nobody", {"range": "7d"})
        assert_nothing({k: v for k, v in answer.body.items() if k != "projectId"}, path)


async def test_overview_lists_a_project_whose_events_feed_no_rollup(storage: Storage) -> None:
    """A deployment that has started but not completed is data of the project.

    ``Storage.projects()`` promises every project that has recorded anything, and the
    overview shows an admin every project with data; a started deployment feeds no rollup.
    """
    now = time.time()
    await storage.write(
        [
            DeploymentEvent(project_id="fresh", timestamp=now - 60, deployment_id="f1"),
            ApiCall(project_id="shop", timestamp=now - 30, duration_ms=12.0, total_ms=12.0),
        ]
    )
    monitor = Monitor(storage=storage)
    listing = await ask(monitor, "events/fresh", {"kind": "deployment", "range": "1h"})
    assert [e["deploymentId"] for e in listing.body["events"]] == ["f1"]
    body = (await ask(monitor, "overview", {"range": "1h"})).body
    assert [p["projectId"] for p in body["projects"]] == ["fresh", "shop"]


@pytest.mark.parametrize("name", ["default", "30d"])
async def test_every_figure_is_unchanged_by_compaction(storage: Storage, name: str) -> None:
    """Closed hour and day buckets read packed (SQL stores) give the same answers."""
    w = world(time.time())
    await storage.write(w.all())
    await storage.compact(before=w.now)
    monitor = Monitor(storage=storage)
    params = window(name, w.now)
    answer = await ask(monitor, "dashboard/shop", params)
    check(answer.body, expected_dashboard(w, answer.span, "shop"))
    answer = await ask(monitor, "builds/shop", params)
    check(answer.body, expected_builds(w, answer.span))
    answer = await ask(monitor, "errors/shop", params)
    check(answer.body, expected_errors(w, answer.span))
    answer = await ask(monitor, "performance/shop", params)
    expected = expected_performance(w, answer.span, APDEX_T)
    endpoints = expected.pop("endpoints")
    body = dict(answer.body)
    rows = body.pop("endpoints")
    check(body, expected)
    assert {(r["method"], r["endpoint"]): r for r in rows} == endpoints
    answer = await ask(monitor, "deployments/shop", params)
    check(answer.body, expected_deployments(w, answer.span, w.now))
    answer = await ask(monitor, "functions/shop", params)
    check(answer.body, expected_functions(w, answer.span))
