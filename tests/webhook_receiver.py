"""A real HTTP receiver of asgimon's webhooks on loopback: it verifies every signature the
Standard Webhooks way and keeps each delivery once by its ``webhook-id``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .served import serving

SECRET = "whsec_c2VjcmV0LW9mLXRoZS1yZWNlaXZlci0wMTIzNDU2Nzg5"


@dataclass
class Received:
    url: str = ""
    requests: int = 0
    forged: int = 0
    processed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each delivery processed once, by its webhook-id."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return list(self.processed.values())

    async def wait_for(self, n: int, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.processed) < n:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def webhook_receiver(secret: str = SECRET) -> AsyncIterator[Received]:
    received = Received()
    verifier = Webhook(secret)

    async def hook(request: Request) -> Response:
        received.requests += 1
        body = await request.body()
        try:
            verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            received.forged += 1
            return PlainTextResponse("forged", status_code=400)
        received.processed.setdefault(request.headers["webhook-id"], json.loads(body))
        received.arrived.set()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serving(app) as port:
        received.url = f"http://127.0.0.1:{port}/hook"
        yield received
