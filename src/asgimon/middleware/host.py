"""What the middleware needs from whoever owns it (the Monitor): a narrow protocol.

The middleware imports neither the Monitor nor the settings; anything that has these
members can drive it, which keeps the import graph one-way: the Monitor builds on the
middleware, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from starlette.types import ASGIApp, Scope

ScopeResolver = Callable[[Scope], str | None]


class InFlight:
    """Requests inside the app right now, counted by the middleware, read by health."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Queue(Protocol):
    """The recorder's side the middleware sees: queue a record, or count one that failed."""

    def put(self, item: Any, size: int = ...) -> bool: ...

    def put_record(self, record: tuple[Any, ...]) -> bool: ...

    def reject(self, reason: str, exc: BaseException) -> None: ...


class RouteTable(Protocol):
    """Where queued records find their route object again by its id."""

    routes: dict[int, Any]
    max_routes: int


class Gate(Protocol):
    """The host's rate limit, asked by the middleware in its own frame."""

    def admit_now(self, scope: Scope) -> tuple[ASGIApp, Sequence[tuple[bytes, bytes]]]:
        """What runs for the request (the app, or a refusal in its place) and the headers
        its response gains."""
        ...


class Host(Protocol):
    """The owner the middleware records for and starts with the app."""

    @property
    def enabled(self) -> bool: ...

    @property
    def started(self) -> bool: ...

    @property
    def queue(self) -> Queue: ...

    @property
    def route_table(self) -> RouteTable: ...

    @property
    def requests(self) -> InFlight: ...

    @property
    def user_resolver(self) -> ScopeResolver | None: ...

    @property
    def route_resolver(self) -> ScopeResolver | None: ...

    @property
    def project_resolver(self) -> ScopeResolver | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def start_soon(self) -> None: ...

    def excluded_paths(self) -> tuple[frozenset[str], tuple[str, ...]]: ...

    def limited(self, app: ASGIApp) -> ASGIApp:
        """The app behind the host's rate limit."""
        ...

    def gate(self, limited: ASGIApp) -> Gate | None:
        """The rate limit of ``limited`` (as :meth:`limited` made it) where it decides
        without an await, so the middleware asks it in its own frame; else None."""
        ...

    @property
    def failing_statuses(self) -> frozenset[int]:
        """Statuses reported as errors when the app answered them without raising."""
        ...

    def capture_unhandled(self, exc: BaseException, scope: Scope, root0: str = "") -> None: ...

    def capture_response(self, status: int, scope: Scope, root0: str = "") -> None: ...
