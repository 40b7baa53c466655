"""``python -m examples.fastapi_app``: serve the FastAPI example with live synthetic traffic,
as ``asgimon demo`` serves the packaged one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from asgimon.demo import serve

from .app import create_app

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(args.host, args.port, args.duration, app_factory=create_app, home="/docs")
        )
