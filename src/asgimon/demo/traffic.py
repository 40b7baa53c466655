"""Live synthetic traffic for the demo: HTTP requests against the app, plus the platform
events (deployments, builds, domains) that no request would record."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import httpx

from asgimon.monitor import Monitor

from .history import FRAMEWORKS, PHASES


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


async def synthetic_traffic(base_url: str, monitor: Monitor, *, rounds: int | None = None) -> None:
    """Requests against the app over HTTP, plus domain events, until cancelled."""
    n = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        while rounds is None or n < rounds:
            n += 1
            requests = [
                client.get(f"/projects/p{random.randint(1, 3)}/items/{random.randint(1, 200)}")
                for _ in range(8)
            ]
            requests.append(client.post("/checkout"))
            requests.append(client.post(f"/functions/{random.choice(['resize', 'render'])}/invoke"))
            await asyncio.gather(*requests, return_exceptions=True)
            if n % 20 == 1:
                await simulate_deployment(monitor)
            if n % 50 == 1:
                await monitor.record_domain_event(
                    "shop.example.com", "ssl_renewed", expires_at=time.time() + 90 * 86400
                )
            await asyncio.sleep(0.05)
