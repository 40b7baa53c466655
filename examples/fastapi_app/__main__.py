"""``python -m examples.fastapi_app``: serve the FastAPI example with live synthetic traffic,
as ``asgimon demo`` serves the packaged one."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os

from asgimon.demo import serve

from .app import create_app
from .db import DATABASE_URL

# Each API key is a client of its own for the rate limit, rather than each address.
SETTINGS = {"RATE_LIMIT_KEY_HEADER": "X-API-Key"}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    parser.add_argument(
        "--database",
        default=os.environ.get("PLATFORM_DATABASE_URL", DATABASE_URL),
        help=f"the platform's own database, a SQLAlchemy URL (default: {DATABASE_URL})",
    )
    args = parser.parse_args()
    app_factory = functools.partial(create_app, database_url=args.database)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                args.host,
                args.port,
                args.duration,
                app_factory=app_factory,
                home="/docs",
                environ={**SETTINGS, **os.environ},
            )
        )
