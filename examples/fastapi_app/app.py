"""The example app: a small deployment-platform API, monitored by adding asgimon.

The same API as the packaged demo's (``asgimon.demo.app``), written with FastAPI; the
synthetic traffic and the history come from the package.
"""

from __future__ import annotations

import asyncio
import random

from fastapi import FastAPI, HTTPException

from asgimon import Monitor


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
