"""``GET {mount}/api/stream?project=…``: the live figures as Server-Sent Events.

One read of storage per project per second in each process, whatever the number of open
streams: every stream of a project waits on the same :class:`Snapshot`. A stream ends by
itself after :data:`STREAM_LIFETIME_S` (the browser reconnects at once, sending
``Last-Event-ID``), when the client goes away, when the server starts shutting down
(``server_exit.py``) and when the monitor stops, so that no stream keeps a worker from
shutting down; at most :data:`MAX_STREAMS` are open per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from asgimon._validate import project_id_problem
from asgimon.analytics.live import live_figures
from asgimon.analytics.query import Reader
from asgimon.errors import StorageError

from . import server_exit
from .guard import principal_of
from .responses import error_response, forbidden
from .wire import to_wire

log = logging.getLogger("asgimon.dashboard")

INTERVAL_S = 1.0
STREAM_LIFETIME_S = 15.0
MAX_STREAMS = 100
RETRY_MS = 500


@dataclass
class Snapshot:
    """A project's latest figures and their id (milliseconds since the epoch)."""

    id: int = 0
    data: str = ""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LiveStream:
    def __init__(self, storage: Reader, lifetime_s: float = STREAM_LIFETIME_S) -> None:
        self.storage = storage
        self.lifetime_s = lifetime_s
        self.snapshots: dict[str, Snapshot] = {}
        self.open = 0
        self.reads = 0
        self.max_streams = MAX_STREAMS
        self.closed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        server_exit.listen(self)

    def server_exiting(self) -> None:
        """From the server's signal handler, perhaps in another thread than the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.closed.set)

    async def latest(self, project_id: str) -> Snapshot:
        """The project's figures, read from storage if the last read is a second old."""
        snap = self.snapshots.setdefault(project_id, Snapshot())
        async with snap.lock:  # the first caller reads; the others wait and share it
            now = time.time()
            if now * 1000 - snap.id >= INTERVAL_S * 1000:
                self.reads += 1
                figures = await live_figures(self.storage, project_id, now)
                snap.data = json.dumps(to_wire(figures), separators=(",", ":"))
                snap.id = int(now * 1000)
        return snap

    async def endpoint(self, request: Request) -> Response:
        project_id = request.query_params.get("project", "")
        problem = project_id_problem(project_id)
        if problem is not None:
            detail = [{"field": "project", "message": problem}]
            return error_response(422, "invalid_query", f"project: {problem}", detail)
        if not principal_of(request).can_see(project_id):
            return forbidden(project_id)
        self._loop = asyncio.get_running_loop()
        if self.open >= self.max_streams or self.closed.is_set():
            return error_response(
                503,
                "too_many_streams",
                "too many live streams are open; retry later",
                headers={"Retry-After": "5"},
            )
        last = request.headers.get("last-event-id", "")
        last_id = int(last) if last.isascii() and last.isdigit() and len(last) < 16 else 0
        try:
            first = await self.latest(project_id)
        except StorageError as exc:
            log.warning("asgimon: the live stream could not read storage: %s", exc)
            return error_response(503, "storage_unavailable", "storage is unavailable; retry later")
        return StreamingResponse(
            self._events(project_id, first, last_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(self, project_id: str, first: Snapshot, last_id: int) -> AsyncIterator[str]:
        self.open += 1
        try:
            yield f"retry: {RETRY_MS}\n\n"
            ends = time.monotonic() + self.lifetime_s
            snap: Snapshot | None = first
            while not self.closed.is_set() and time.monotonic() < ends:
                if snap is not None and snap.id > last_id:
                    last_id = snap.id
                    yield f"id: {snap.id}\nevent: figures\ndata: {snap.data}\n\n"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INTERVAL_S):
                        await self.closed.wait()
                try:
                    snap = await self.latest(project_id)
                except StorageError:
                    snap = None  # the page keeps its last figures; the next second retries
        finally:
            self.open -= 1

    def stats(self) -> dict[str, Any]:
        return {"open": self.open, "reads": self.reads}

    def close(self) -> None:
        self.closed.set()
