"""A deployment's build, run as a background task of the request that queued it.

Each phase is timed by ``monitor.track_build_phase`` (a failed phase is recorded as a
failure), and the deployment's start and end are recorded as deployment events, so the
dashboard's deployment and build pages show what this code did.
"""

from __future__ import annotations

import asyncio
import random
import time

from .db import Deployment
from .deps import Services
from .progress import Update

PHASES = ("clone", "install", "build", "optimize", "upload")  # in the order they run


class BuildFailed(Exception):
    """A phase's own failure (a missing dependency, a type error): the deployment fails."""


async def _run(phase: str, framework: str) -> str:
    # Stands in for the real work: a few tenths of a second, and now and then a failure.
    await asyncio.sleep(random.uniform(0.05, 0.25))
    if phase == "install" and random.random() < 0.03:
        raise BuildFailed("npm ERR! could not resolve dependency: peer react@^18")
    if phase == "build" and random.random() < 0.05:
        raise BuildFailed(f"{framework} build: type error in src/pages/index.tsx:12")
    return {
        "clone": "cloned main",
        "install": f"installed {random.randint(40, 900)} packages",
        "build": f"built {random.randint(5, 400)} assets",
        "optimize": "compressed and fingerprinted",
        "upload": f"uploaded {random.randint(1, 50)} MB",
    }[phase]


async def build(services: Services, deployment_id: str, framework: str) -> None:
    """Build and release one deployment; its row, then its followers, learn how it ended."""
    monitor, progress = services.monitor, services.progress
    started = time.time()
    try:
        await _save(services, deployment_id, "building")
        await monitor.record_deployment_event(deployment_id, "in_progress", framework=framework)
        status, log = "ready", []
        for phase in PHASES:
            progress.tell(deployment_id, Update("building", phase, f"{phase}: started"))
            try:
                async with monitor.track_build_phase(deployment_id, phase, framework=framework):
                    line = f"{phase}: {await _run(phase, framework)}"
            except BuildFailed as exc:
                # Handled (the deployment fails, the app goes on), so reported by hand.
                monitor.capture_exception(exc, context={"deployment": deployment_id})
                status, line = "failed", f"{phase}: failed: {exc}"
            log.append(line)
            progress.tell(deployment_id, Update("building", phase, line))
            if status == "failed":
                break
        log.append(status)
        await _save(services, deployment_id, status, log="\n".join(log) + "\n")
        await monitor.record_deployment_event(
            deployment_id,
            "completed",
            status="success" if status == "ready" else "failure",
            duration_ms=(time.time() - started) * 1000,
            framework=framework,
        )
        progress.tell(deployment_id, Update(status, None, status))
    finally:
        # Whatever happened, the followers stop waiting.
        progress.end(deployment_id)


async def _save(services: Services, deployment_id: str, status: str, log: str = "") -> None:
    async with services.database.sessions.begin() as session:
        row = await session.get_one(Deployment, deployment_id)
        row.status = status
        if status != "building":
            row.finished_at, row.log = time.time(), log
