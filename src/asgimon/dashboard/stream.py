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

from starlette.background import BackgroundTask
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
MAX_STREAMS_PER_CALLER = 10  # one tenant's tabs cannot take every slot of the process
MAX_SNAPSHOTS = 1000  # projects whose figures are kept between reads
RETRY_MS = 500


class Slot:
    """One open stream's place in the bounds, given back exactly once, whichever of the
    stream's end or the response's end comes first."""

    def __init__(self, owner: LiveStream, caller: str) -> None:
        self.owner, self.caller, self.held = owner, caller, True
        owner.open += 1
        owner.by_caller[caller] = owner.by_caller.get(caller, 0) + 1

    async def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.owner.open -= 1
        left = self.owner.by_caller[self.caller] - 1
        if left:
            self.owner.by_caller[self.caller] = left
        else:
            del self.owner.by_caller[self.caller]


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
        self.by_caller: dict[str, int] = {}
        self.reads = 0
        self.max_streams = MAX_STREAMS
        self.max_per_caller = MAX_STREAMS_PER_CALLER
        self.closed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        server_exit.listen(self)

    def server_exiting(self) -> None:
        """From the server's signal handler, perhaps in another thread than the loop."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.closed.set)

    async def latest(self, project_id: str) -> Snapshot:
        """The project's figures, read from storage if the last read is a second old."""
        snap = self.snapshots.get(project_id)
        if snap is None:
            if len(self.snapshots) >= MAX_SNAPSHOTS:
                self.snapshots.pop(next(iter(self.snapshots)))
            snap = self.snapshots[project_id] = Snapshot()
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
        if self.closed.is_set():
            return error_response(
                503, "shutting_down", "the server is shutting down", headers={"Retry-After": "5"}
            )
        caller = _caller(request)
        if self.open >= self.max_streams or self.by_caller.get(caller, 0) >= self.max_per_caller:
            return error_response(
                503,
                "too_many_streams",
                "too many live streams are open; retry later",
                headers={"Retry-After": "5"},
            )
        last = request.headers.get("last-event-id", "")
        last_id = int(last) if last.isascii() and last.isdigit() and len(last) < 16 else 0
        # The place is taken before the first await: requests arriving together are counted.
        slot = Slot(self, caller)
        try:
            first = await self.latest(project_id)
        except StorageError as exc:
            await slot.release()
            log.warning("asgimon: the live stream could not read storage: %s", exc)
            return error_response(503, "storage_unavailable", "storage is unavailable; retry later")
        except BaseException:
            await slot.release()
            raise
        return StreamingResponse(
            self._events(project_id, first, last_id, slot),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            background=BackgroundTask(slot.release),
        )

    async def _events(
        self, project_id: str, first: Snapshot, last_id: int, slot: Slot
    ) -> AsyncIterator[str]:
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
            await slot.release()

    def stats(self) -> dict[str, Any]:
        return {"open": self.open, "reads": self.reads}

    def close(self) -> None:
        self.closed.set()


def _caller(request: Request) -> str:
    principal = principal_of(request)
    if principal.admin and principal.subject == "local":
        client = request.scope.get("client")
        return "addr:" + (str(client[0]) if client else "-")
    return "sub:" + principal.subject
