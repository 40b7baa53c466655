"""``GET {mount}/api/stream?project=…&topics=…``: the live figures and the in-app alert
notifications as Server-Sent Events.

``topics`` is ``figures`` (the default), ``notifications`` or both, comma-separated. A
``figures`` event carries the project's live figures; a ``notifications`` event, sent on
connecting and whenever the list changes, the newest in-app notifications of every project
the caller may see (:mod:`~asgimon.dashboard.inbox`).

One read of storage per project per second in each process, whatever the number of open
streams: every stream of a project waits on the same :class:`Snapshot` (and the same
copy of its notifications). A stream ends by
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
from .guard import mount_root, principal_of
from .inbox import Inbox, Note, firing
from .responses import error_response, forbidden
from .wire import to_wire

log = logging.getLogger("asgimon.dashboard")

INTERVAL_S = 1.0
STREAM_LIFETIME_S = 15.0
MAX_STREAMS = 100
MAX_STREAMS_PER_CALLER = 10  # one tenant's tabs cannot take every slot of the process
MAX_SNAPSHOTS = 1000  # projects whose figures are kept between reads
RETRY_MS = 500
FIGURES, NOTIFICATIONS = "figures", "notifications"
TOPICS = (FIGURES, NOTIFICATIONS)


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
    def __init__(
        self, storage: Reader, lifetime_s: float = STREAM_LIFETIME_S, inbox: Inbox | None = None
    ) -> None:
        self.storage = storage
        self.inbox = inbox
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
        topics = _topics(request.query_params.get("topics", FIGURES))
        if topics is None:
            message = "must be figures, notifications or both, comma-separated"
            detail = [{"field": "topics", "message": message}]
            return error_response(422, "invalid_query", f"topics: {message}", detail)
        if NOTIFICATIONS in topics and self.inbox is None:
            return error_response(404, "alerts_disabled", "alerting is off (ALERTS_ENABLED=false)")
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
            first = await self.latest(project_id) if FIGURES in topics else None
            feed = _Feed(project_id, FIGURES in topics, mount_root(request.scope))
            if NOTIFICATIONS in topics:
                feed.viewer = await self._viewer(request, project_id)
                feed.notes = await self._inbox.latest(feed.viewer)
        except StorageError as exc:
            await slot.release()
            log.warning("asgimon: the live stream could not read storage: %s", exc)
            return error_response(503, "storage_unavailable", "storage is unavailable; retry later")
        except BaseException:
            await slot.release()
            raise
        return StreamingResponse(
            self._events(feed, first, last_id, slot),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            background=BackgroundTask(slot.release),
        )

    @property
    def _inbox(self) -> Inbox:
        assert self.inbox is not None, "the endpoint refuses notifications without one"
        return self.inbox

    async def _viewer(self, request: Request, project_id: str) -> list[str]:
        """The projects whose notifications the caller sees: this one first, then the
        others it may see, as the pages' project switcher lists them."""
        principal = principal_of(request)
        known = await self._inbox.projects()
        others = sorted({p for p in known if principal.can_see(p)} | set(principal.projects))
        return [project_id, *(p for p in others if p != project_id)]

    async def _events(
        self, feed: _Feed, first: Snapshot | None, last_id: int, slot: Slot
    ) -> AsyncIterator[str]:
        try:
            yield f"retry: {RETRY_MS}\n\n"
            ends = time.monotonic() + self.lifetime_s
            snap = first
            sent = ""
            while not self.closed.is_set() and time.monotonic() < ends:
                if snap is not None and snap.id > last_id:
                    last_id = snap.id
                    yield f"id: {snap.id}\nevent: figures\ndata: {snap.data}\n\n"
                if feed.notes is not None:
                    data = _notes_data(feed.notes, feed.root)
                    if data != sent:
                        # No id: a reconnect resumes the figures, and is sent the list anew.
                        sent = data
                        yield f"event: notifications\ndata: {data}\n\n"
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(INTERVAL_S):
                        await self.closed.wait()
                snap = None
                if feed.figures:
                    with contextlib.suppress(StorageError):  # the next second retries
                        snap = await self.latest(feed.project_id)
                if feed.viewer is not None:
                    try:
                        feed.notes = await self._inbox.latest(feed.viewer)
                    except StorageError:
                        feed.notes = None  # the page keeps the list it has
        finally:
            await slot.release()

    def stats(self) -> dict[str, Any]:
        return {"open": self.open, "reads": self.reads}

    def close(self) -> None:
        self.closed.set()


@dataclass
class _Feed:
    """What one stream sends: the project's figures, and the viewer's notifications."""

    project_id: str
    figures: bool
    root: str
    viewer: list[str] | None = None  # None: no notifications
    notes: list[Note] | None = None


def _topics(raw: str) -> frozenset[str] | None:
    names = frozenset(t.strip() for t in raw.split(",")) if len(raw) <= 64 else frozenset()
    return names if names and names <= set(TOPICS) else None


def _notes_data(notes: list[Note], root: str) -> str:
    body = {"firing": firing(notes), "items": [n.to_json(root) for n in notes]}
    return json.dumps(body, separators=(",", ":"))


def _caller(request: Request) -> str:
    principal = principal_of(request)
    if principal.admin and principal.subject == "local":
        client = request.scope.get("client")
        return "addr:" + (str(client[0]) if client else "-")
    return "sub:" + principal.subject
