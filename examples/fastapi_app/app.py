"""The example app: a small deployment-platform API, monitored by adding asgimon."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, HTTPException

from asgimon import Monitor

FRAMEWORKS = ("nextjs", "vite", "django", "fastapi")
PHASES = ("clone", "install", "build", "optimize", "upload")


def create_app(monitor: Monitor) -> FastAPI:
    app = FastAPI(title="asgimon demo")

    @app.get("/projects/{project_id}/items/{item_id}")
    async def get_item(project_id: str, item_id: int) -> dict[str, object]:
        await asyncio.sleep(random.lognormvariate(-4.5, 0.6))
        if item_id % 17 == 0:
            raise HTTPException(404, "no such item")
        return {"project": project_id, "item": item_id}

    @app.post("/checkout")
    async def checkout() -> dict[str, str]:
        await asyncio.sleep(random.lognormvariate(-3.5, 0.5))
        try:
            if random.random() < 0.05:
                raise TimeoutError("payment provider timed out")
        except TimeoutError as exc:
            monitor.capture_exception(exc, severity="high", context={"provider": "acme-pay"})
            raise HTTPException(503, "payment provider unavailable") from exc
        return {"status": "paid"}

    @app.post("/functions/{function_id}/invoke")
    async def invoke(function_id: str) -> dict[str, str]:
        async with monitor.track_function(function_id, cold_start=random.random() < 0.1):
            await asyncio.sleep(random.lognormvariate(-4, 0.7))
            if random.random() < 0.03:
                raise HTTPException(502, "function crashed")
        return {"function": function_id}

    app.add_middleware(monitor.middleware_class, monitor=monitor)
    app.mount(monitor.settings.mount_path, monitor.dashboard)
    return app


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


@asynccontextmanager
async def traffic_while_serving(monitor: Monitor, base_url: str) -> AsyncIterator[None]:
    task = asyncio.create_task(synthetic_traffic(base_url, monitor))
    try:
        yield
    finally:
        task.cancel()
