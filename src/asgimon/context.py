"""The request being handled, as code running inside it sees it: a place for figures.

The middleware opens a context around each HTTP request; anything running inside the
request (a database instrumentation, the rate limiter, the host's own code) adds figures to
it without knowing about the middleware, and they reach the request's
:class:`~asgimon.events.ApiCall` as ``figures``, which subscribers receive:

>>> from asgimon.context import add_figure
>>> add_figure("db_ms", 3.2)          # summed with any db_ms already added to this request

A database instrumentation keeps the statements a request runs in ``queries`` (see
:mod:`asgimon.plugins.queries`), which reach the subscribers among the figures.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from starlette.types import Scope

Figure = float | int | str | bool

_current: ContextVar[RequestContext | None] = ContextVar("asgimon_request", default=None)


class RequestContext:
    __slots__ = ("figures", "queries", "reported", "root0", "scope")

    def __init__(self, scope: Scope | None = None, root0: str = "") -> None:
        # Left None until a figure comes: the request record stays made of atoms, which
        # keeps it out of the garbage collector's old generation (see the middleware).
        # Figures are scalars, save the statements' aggregate (``queries``).
        self.figures: dict[str, Any] | None = None
        # Per (database, normalised statement): [executions, total ms, max ms]; also in
        # ``figures`` from the first statement on, which is how it leaves the request.
        self.queries: dict[tuple[str, str], list[float]] | None = None
        # What an error reported from inside the request says of it (capture_exception).
        self.scope = scope
        self.root0 = root0
        # An error was reported from inside it: its failing status says nothing more.
        self.reported = False


def current() -> RequestContext | None:
    """The request's context, or None outside a recorded request."""
    return _current.get()


def add_figure(name: str, value: Figure) -> None:
    """Attach ``name`` to the current request: numbers add up, anything else replaces.

    Outside a recorded request it does nothing, so instrumentation may call it anywhere.
    """
    ctx = _current.get()
    if ctx is None:
        return
    figures = ctx.figures
    if figures is None:
        figures = ctx.figures = {}
    held = figures.get(name)
    number = (int, float)
    if (
        isinstance(held, number)
        and isinstance(value, number)
        and not isinstance(held, bool)
        and not isinstance(value, bool)
    ):
        figures[name] = held + value
    else:
        figures[name] = value


def open_request(scope: Scope | None = None, root0: str = "") -> tuple[RequestContext, object]:
    """A fresh context made current; the token undoes it (:func:`close_request`)."""
    ctx = RequestContext(scope, root0)
    return ctx, _current.set(ctx)


def close_request(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
