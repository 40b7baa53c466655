"""The example app: a small deployment-platform API in FastAPI, monitored by adding asgimon.

Projects, their deployments (built in the background, their logs streamed, their status on
a websocket), serverless functions and a checkout, behind API keys, on a SQLite database
through SQLAlchemy. asgimon is two lines at the end of :func:`create_app`; the rest of the
recording happens where the platform's own code does the work (``builds.py``,
``routers/functions.py``, ``routers/billing.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from asgimon import Monitor

from .db import DATABASE_URL, Database
from .deps import Services
from .routers import billing, deployments, functions, projects

DESCRIPTION = """\
A deployment platform's API. Every route but this page needs an `X-API-Key` header:
**Authorize** with one of the demo accounts' keys, `demo-key-alice`, `demo-key-bob`,
`demo-key-carol` or `demo-key-dana`. What the app records is on the dashboard at
[/analytics/](/analytics/).
"""


def create_app(monitor: Monitor, database_url: str = DATABASE_URL) -> FastAPI:
    """The API, recorded by ``monitor``, with the dashboard at its mount path."""
    database = Database(database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await database.create()
        yield
        await database.close()

    app = FastAPI(title="Deployment platform", description=DESCRIPTION, lifespan=lifespan)
    app.state.services = Services(monitor, database)
    for router in (projects.router, deployments.router, functions.router, billing.router):
        app.include_router(router)

    # asgimon: the middleware (which also starts and drains the monitor with the app's
    # lifespan) and the dashboard.
    app.add_middleware(monitor.middleware_class, monitor=monitor)
    app.mount(monitor.settings.mount_path, monitor.dashboard)
    return app
