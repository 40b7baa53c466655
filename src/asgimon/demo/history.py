"""A week of made-up history, written once into an empty store, so that the demo opens onto
trends rather than onto a page that fills up over the next hour."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from asgimon.alerts.rules import parse_rule
from asgimon.errortracking.actions import change_group
from asgimon.events import (
    ApiCall,
    BuildEvent,
    DeploymentEvent,
    ErrorEvent,
    Event,
    FunctionInvocation,
)
from asgimon.monitor import Monitor

DAYS = 7
ROUTES = (
    ("GET", "/projects/{project_id}/items/{item_id}", 2.5, 0.6),
    ("POST", "/checkout", 4.2, 0.5),
    ("POST", "/functions/{function_id}/invoke", 3.4, 0.7),
)
ERRORS = (
    ("TimeoutError", "high", "payment provider timed out"),
    ("KeyError", "medium", "'sku'"),
    ("ConnectionResetError", "critical", "database connection reset by peer"),
)
FRAMEWORKS = ("nextjs", "vite", "django", "fastapi")
PHASES = ("clone", "install", "build", "optimize", "upload")  # in the order a build runs them


def _hour(rng: random.Random, project: str, start: float, scale: float) -> Iterator[Event]:
    # Busier by day than by night (UTC), as an API's traffic is.
    load = scale * (0.4 + 0.6 * abs(((start // 3600) % 24) - 12) / 12)
    for _ in range(int(60 * load)):
        method, endpoint, mu, sigma = rng.choice(ROUTES)
        status = rng.choices((200, 404, 500, 503), (90, 5, 3, 2))[0]
        duration = rng.lognormvariate(mu, sigma)
        yield ApiCall(
            project_id=project,
            timestamp=start + rng.uniform(0, 3600),
            method=method,
            endpoint=endpoint,
            status=status,
            duration_ms=duration,
            ttfb_ms=duration * 0.8,
            total_ms=duration,
            response_bytes=rng.randint(50, 5000),
        )
    for _ in range(int(12 * load)):
        failed = rng.random() < 0.04
        yield FunctionInvocation(
            project_id=project,
            timestamp=start + rng.uniform(0, 3600),
            function_id=rng.choice(("resize", "render", "thumbnail")),
            status="error" if failed else "success",
            duration_ms=rng.lognormvariate(3.5, 0.8),
            cold_start=rng.random() < 0.1,
            error_type="MemoryError" if failed else None,
        )
    for _ in range(rng.choices((0, 1, 2), (70, 20, 10))[0]):
        error_type, severity, message = rng.choice(ERRORS)
        yield ErrorEvent(
            project_id=project,
            timestamp=start + rng.uniform(0, 3600),
            error_type=error_type,
            message=message,
            stack=(
                "Traceback (most recent call last):\n"
                f'  File "app.py", line 42, in checkout\n{error_type}: {message}'
            ),
            fingerprint=f"demo-{error_type}",
            severity=severity,
            endpoint="/checkout",
            method="POST",
        )
    if rng.random() < 0.25 * scale:
        yield from _deployment(rng, project, start + rng.uniform(0, 3000))


def _deployment(rng: random.Random, project: str, at: float) -> Iterator[Event]:
    name = f"dep-{rng.getrandbits(32):08x}"
    framework = rng.choice(FRAMEWORKS)
    yield DeploymentEvent(project_id=project, timestamp=at, deployment_id=name, type="started")
    t, failed = at, False
    for phase in PHASES:
        took = rng.uniform(2, 60)
        failed = rng.random() < 0.05
        yield BuildEvent(
            project_id=project,
            timestamp=t + took,
            deployment_id=name,
            phase=phase,
            start_time=t,
            end_time=t + took,
            status="failure" if failed else "success",
            framework=framework,
        )
        t += took
        if failed:
            break
    yield DeploymentEvent(
        project_id=project,
        timestamp=t + 1,
        deployment_id=name,
        type="completed",
        status="failure" if failed else "success",
        duration_ms=(t + 1 - at) * 1000,
        framework=framework,
    )


async def backfill(monitor: Monitor, *, days: int = DAYS, seed: int = 1) -> int:
    """Write ``days`` of history for the demo's projects if the store holds none; the count."""
    storage = monitor.storage
    if await storage.projects():
        return 0
    rng = random.Random(seed)
    now = time.time()
    first = (now - days * 86_400) // 3600 * 3600
    written = 0
    projects = ((monitor.settings.project_id, 1.0), ("storefront", 0.5), ("docs-site", 0.2))
    for project, scale in projects:
        hour = first
        batch: list[Event] = []
        while hour < now - 3600:
            batch.extend(e for e in _hour(rng, project, hour, scale) if e.timestamp < now)
            hour += 3600
            if len(batch) > 2000:
                written += (await storage.write(batch)).inserted
                batch = []
        written += (await storage.write(batch)).inserted
    # Written to the store directly, the history has no lifecycle yet: give it one, as a
    # team would have (one bug fixed, one noisy one ignored for a while).
    project = monitor.settings.project_id
    await change_group(storage, project, "demo-KeyError", "resolve", by="demo", now=now)
    await change_group(
        storage, project, "demo-ConnectionResetError", "ignore", by="demo", now=now, count=1000
    )
    await seed_alerts(monitor)
    return written


DEMO_RULES = (
    {"name": "Checkout errors", "type": "error_count", "threshold": 3, "window": 300},
    {"name": "Slow API (p95)", "type": "api_latency", "threshold": 150, "statistic": "p95"},
    {"name": "Deployment failed", "type": "deployment_failure"},
    {"name": "New kind of error", "type": "new_error_group"},
)


async def seed_alerts(monitor: Monitor) -> None:
    """A few alert rules, told in the dashboard's header, so the alerts page has some."""
    if monitor.alerts is None:
        return
    project = monitor.settings.project_id
    for fields in DEMO_RULES:
        body = {"projectId": project, "channels": [{"type": "inapp"}], **fields}
        rule, errors = parse_rule(body, monitor.alerts.channels)
        if rule is None:
            raise ValueError(f"a demo alert rule is invalid: {errors}")
        await monitor.alerts.save(rule, by="demo")
