"""Four uvicorn workers on one store, one webhook receiver: each transition is told once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from . import uvicorn_proc
from .webhook_receiver import SECRET, webhook_receiver

pytestmark = pytest.mark.slow
API = "/analytics/api/alerts"


async def test_four_workers_notify_once_per_transition(tmp_path: Path) -> None:
    db = tmp_path / "alerts.db"
    async with webhook_receiver() as hook:
        env = {
            "ALERTS_ENABLED": "true",
            "ALERTS_WEBHOOK_ALLOW": "127.0.0.1/32",
            "ALERTS_EVALUATION_INTERVAL": "1",
        }
        async with uvicorn_proc.uvicorn_server(
            "tests.apps.worker_app:create_app",
            f"sqlite:///{db}",
            tmp_path / "uvicorn.log",
            workers=4,
            env=env,
        ) as server:
            channel = [{"type": "webhook", "url": hook.url, "secret": SECRET}]
            async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
                for body in (
                    {"name": "ledger", "type": "critical_error", "window": 3600},
                    {"name": "errors", "type": "error_count", "threshold": 0, "window": 300},
                ):
                    r = await client.post(
                        API, json={"projectId": "default", "channels": channel, **body}
                    )
                    assert r.status_code == 201, server.output()
                # Each worker reads the rules at most once a second: now all know them.
                await asyncio.sleep(1.5)

                # Fresh connections, so the requests spread over the four workers.
                async def report() -> str:
                    r = await client.get("/critical", headers={"connection": "close"})
                    assert r.status_code == 200
                    return r.headers["x-worker-pid"]

                pids = set(await asyncio.gather(*(report() for _ in range(200))))
                assert len(pids) == 4, server.output()
                await hook.wait_for(2, timeout=20)
                # Every worker has flushed and several periods were judged since: no more.
                await asyncio.sleep(4)
                states = (await client.get(f"{API}/default")).json()
            await uvicorn_proc.sigterm_and_wait(server)

    assert hook.forged == 0
    assert sorted(b["ruleName"] for b in hook.bodies) == ["errors", "ledger"]
    assert all(b["type"] == "alert.firing" for b in hook.bodies)
    assert hook.requests == 2  # no retry, no duplicate from another worker
    assert {s["name"]: s["state"]["status"] for s in states} == {
        "ledger": "firing",
        "errors": "firing",
    }
    # What the losers of each race saw was folded into the winner's state: all 200 counted.
    ledger = next(s for s in states if s["name"] == "ledger")
    assert ledger["state"]["matches"] == 200
