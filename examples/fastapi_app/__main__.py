"""``python -m examples.fastapi_app``: serve the example with live synthetic traffic."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

import uvicorn

from asgimon import Monitor

from .app import create_app, synthetic_traffic
from .history import backfill


async def main(host: str, port: int, duration: float | None) -> None:
    os.environ.setdefault("ANALYTICS_STORAGE_URL", "sqlite:///asgimon-demo.db")
    # The synthetic traffic is one client: a limit it meets only at checkout, so the
    # rate-limit page has refusals to show and the other pages have traffic.
    os.environ.setdefault("RATE_LIMIT_MAX", "100000")
    os.environ.setdefault("RATE_LIMIT_ENDPOINTS", "POST /checkout=120/minute")
    monitor = Monitor.from_env()
    app = create_app(monitor)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    base = f"http://{host}:{port}"
    mount = monitor.settings.mount_path
    print(f"asgimon dashboard: {base}{mount}/", flush=True)
    print(f"  the example app: {base}/docs, storage {monitor.settings.storage_url}")
    print(f"  summary (JSON):  {base}{mount}/api/summary")
    print(f"  recorder health: {base}{mount}/api/health", flush=True)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # start-up failed: show why
            return
        await asyncio.sleep(0.05)
    if await backfill(monitor):
        print("  (a week of made-up history was written into the empty store)", flush=True)
    traffic = asyncio.create_task(synthetic_traffic(base, monitor))
    try:
        if duration is None:
            await serving
        else:
            await asyncio.sleep(duration)
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        server.should_exit = True
        await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port, args.duration))
