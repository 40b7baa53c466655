"""A host app with asgimon and its alert engine, driven by real requests and events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgimon import MemoryStorage, Monitor, Storage
from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.records import INAPP, TRANSITION, HistoryEntry
from asgimon.alerts.state import AlertState

API = "/analytics/api"


async def boom(request: Request) -> Response:
    raise RuntimeError("the cart is on fire")


async def ok(request: Request) -> Response:
    return PlainTextResponse("ok")


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.03)
    return PlainTextResponse("slow")


def host_app() -> Starlette:
    return Starlette(routes=[Route("/boom", boom), Route("/ok", ok), Route("/slow", slow)])


@dataclass
class Shop:
    monitor: Monitor
    client: httpx.AsyncClient

    @property
    def engine(self) -> AlertEngine:
        assert self.monitor.alerts is not None
        return self.monitor.alerts

    async def rule(self, **fields: Any) -> str:
        body = {"projectId": "default", "name": fields.get("type", "rule"), **fields}
        body.setdefault("channels", [{"type": "inapp"}])
        r = await self.client.post(f"{API}/alerts", json=body)
        assert r.status_code == 201, r.text
        rule_id: str = r.json()["id"]
        return rule_id

    async def settle(self) -> None:
        """Everything recorded so far stored, seen by the event rules and delivered."""
        self.monitor.rate_limits.denials.flush()
        await self.monitor.recorder.flush()
        assert await self.monitor.recorder.sinks.settled()
        assert await self.engine.outbox.settled()

    async def evaluate(self, at: float | None = None) -> None:
        await self.settle()
        await self.engine.evaluate(now=time.time() if at is None else at)
        assert await self.engine.outbox.settled()

    async def state(self, rule_id: str) -> AlertState:
        return (await self.engine.states([rule_id])).get(rule_id, AlertState())

    async def inbox(self, rule_id: str | None = None) -> list[HistoryEntry]:
        """The in-app notifications, oldest first."""
        found = await self.monitor.storage.alert_history(
            "default", rule_id=rule_id, kinds=[INAPP], limit=500
        )
        return found[::-1]

    async def transitions(self, rule_id: str) -> list[str]:
        found = await self.monitor.storage.alert_history(
            "default", rule_id=rule_id, kinds=[TRANSITION], limit=500
        )
        return [e.body["to"] for e in reversed(found)]


async def open_shop(storage: Storage | None = None, **settings: Any) -> AsyncIterator[Shop]:
    base: dict[str, Any] = {
        "flush_interval": 0.01,
        "api_rate_limit": None,
        "rate_limit_enabled": False,
        "alerts_interval": 3600,
    }
    monitor = Monitor(storage=storage or MemoryStorage(), **{**base, **settings})
    transport = httpx.ASGITransport(app=monitor.wrap(host_app()), raise_app_exceptions=False)
    async with monitor, httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        # The scheduler's first period runs at start, with no rule yet: the tests judge
        # every later one themselves, at the moments they name.
        for _ in range(500 if monitor.alerts is not None else 0):
            if monitor.scheduler.runs("alerts"):
                break
            await asyncio.sleep(0.01)
        yield Shop(monitor, c)
