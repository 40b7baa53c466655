"""Live synthetic traffic for the demo: HTTP requests against the app, plus the platform
events (deployments, builds, domains) that no request would record.

Two apps are served with it: the packaged demo app, whose deployments are simulated here,
and the FastAPI example (``python -m examples.fastapi_app``), a deployment platform that
records its own: against it the traffic is its users' requests, told apart by the API
they document (:func:`platform_traffic`).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable

import httpx

from asgimon.monitor import Monitor

from .history import FRAMEWORKS, PHASES

PLATFORM_ROUTE = "/projects/{project_id}/deployments"
"""A route of the platform's API: an app that documents it gets the platform's traffic."""
PLATFORM_KEYS = ("demo-key-alice", "demo-key-bob", "demo-key-carol")
"""The platform's demo accounts the traffic signs in as (each request as one of them)."""

Round = Callable[[int], Awaitable[None]]


async def simulate_deployment(monitor: Monitor) -> None:
    """One deployment with its build phases, as a platform would record it."""
    deployment_id = f"dep-{uuid.uuid4().hex[:8]}"
    framework = random.choice(FRAMEWORKS)
    started = time.time()
    await monitor.record_deployment_event(deployment_id, "started", framework=framework)
    failed = False
    for phase in PHASES:
        begin = time.time()
        await asyncio.sleep(random.uniform(0.01, 0.05))
        failed = random.random() < 0.04
        await monitor.record_build_event(
            deployment_id,
            phase,
            start_time=begin,
            end_time=time.time(),
            status="failure" if failed else "success",
            framework=framework,
            asset_count=random.randint(5, 400) if phase == "build" else None,
            total_size_bytes=random.randint(10_000, 50_000_000) if phase == "upload" else None,
        )
        if failed:
            break
    await monitor.record_deployment_event(
        deployment_id,
        "completed",
        status="failure" if failed else "success",
        duration_ms=(time.time() - started) * 1000,
        framework=framework,
    )


def demo_traffic(client: httpx.AsyncClient, monitor: Monitor) -> Round:
    """The packaged demo app's requests, with its deployments simulated."""

    async def one_round(n: int) -> None:
        requests = [
            client.get(f"/projects/p{random.randint(1, 3)}/items/{random.randint(1, 200)}")
            for _ in range(8)
        ]
        requests.append(client.post("/checkout"))
        requests.append(client.post(f"/functions/{random.choice(['resize', 'render'])}/invoke"))
        await asyncio.gather(*requests, return_exceptions=True)
        if n % 20 == 1:
            await simulate_deployment(monitor)

    return one_round


async def _documents_platform(client: httpx.AsyncClient) -> bool:
    try:
        answer = await client.get("/openapi.json")
        return answer.status_code == 200 and PLATFORM_ROUTE in answer.json().get("paths", {})
    except (httpx.HTTPError, ValueError, AttributeError):
        return False  # no API document (or none that is JSON): not the platform


async def platform_traffic(client: httpx.AsyncClient) -> Round | None:
    """The platform's users at work, or None if the app does not document the platform's API.

    Each round: project listings (an N+1 query on the app's side), project and deployment
    reads, function invocations, a checkout; now and then a wrong key, and every twentieth
    round a deployment whose build log is followed to its end.
    """
    if not await _documents_platform(client):
        return None
    projects: dict[str, list[str]] = {}  # each account's, from its latest listing

    async def list_projects(key: str) -> None:
        answer = await client.get("/projects", headers={"X-API-Key": key})
        if answer.status_code == 200 and answer.json():
            projects[key] = [p["id"] for p in answer.json()]

    def as_someone() -> tuple[dict[str, str], str]:
        key = random.choice(list(projects))
        return {"X-API-Key": key}, random.choice(projects[key])

    async def deploy_and_follow() -> None:
        headers, project = as_someone()
        queued = await client.post(f"/projects/{project}/deployments", headers=headers)
        if queued.status_code != 202:
            return
        logs = f"/deployments/{queued.json()['id']}/logs"
        async with client.stream("GET", logs, headers=headers) as stream:
            async for _ in stream.aiter_lines():
                pass

    async def one_round(n: int) -> None:
        if not projects:  # the first round (or the app did not answer it)
            listings = (list_projects(key) for key in PLATFORM_KEYS)
            await asyncio.gather(*listings, return_exceptions=True)
            if not projects:
                return
        requests: list[Awaitable[object]] = []
        for key in random.sample(list(projects), min(2, len(projects))):
            requests.append(list_projects(key))
        for _ in range(4):
            headers, project = as_someone()
            requests.append(client.get(f"/projects/{project}", headers=headers))
        headers, project = as_someone()
        requests.append(client.get(f"/projects/{project}/deployments", headers=headers))
        for function in random.sample(["resize", "render", "thumbnail"], 2):
            headers, _ = as_someone()
            # Now and then an image past the function's memory limit: a failed invocation.
            width = random.choices([800, 1920, 4096, 40_000], [50, 30, 18, 2])[0]
            event = {"width": width, "height": 1080}
            url = f"/functions/{function}/invoke"
            requests.append(client.post(url, headers=headers, json=event))
        headers, _ = as_someone()
        requests.append(client.post("/checkout", headers=headers))
        if random.random() < 0.02:
            requests.append(client.get("/projects", headers={"X-API-Key": "revoked-key"}))
        if n % 20 == 1:
            requests.append(deploy_and_follow())
        await asyncio.gather(*requests, return_exceptions=True)

    return one_round


async def synthetic_traffic(base_url: str, monitor: Monitor, *, rounds: int | None = None) -> None:
    """Requests against the app over HTTP, plus domain events, until cancelled."""
    n = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        one_round = await platform_traffic(client) or demo_traffic(client, monitor)
        while rounds is None or n < rounds:
            n += 1
            await one_round(n)
            if n % 50 == 1:
                await monitor.record_domain_event(
                    "shop.example.com", "ssl_renewed", expires_at=time.time() + 90 * 86400
                )
            await asyncio.sleep(0.05)
