"""Turning the middleware's raw per-request tuples into :class:`ApiCall` events.

This runs in the recorder's background task, not on the request path: the middleware
only captures references and clock readings, and everything that costs (route template,
header parsing, user id, the endpoint cap, the event object) happens here.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from starlette.routing import Mount

from asgimon import series
from asgimon._validate import clean_text
from asgimon.events import ApiCall

UNMATCHED = "<unmatched>"
_CONVERTER = re.compile(r"\{(\w+):\w+\}")  # /items/{id:int} is reported as /items/{id}
OTHER = "<other>"

MAX_SIZE = 2**53  # larger sizes come from a lying Content-Length, not from a body
_UNREAD = (0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, None, None, None, None)  # what series_of never reads


class RawRequest(NamedTuple):
    """What the middleware captures per request: references and clock readings only."""

    project_id: str | None  # from a project_resolver, None for the default project
    method: str
    endpoint: str | None  # from a route_resolver, else worked out from ``route``
    route: Any  # scope["route"] as the router left it, or its id in the builder's routes
    root0: str  # root_path when the request arrived
    root_end: str  # root_path when the app returned (mounts add their prefix)
    status: int
    t0: float  # perf_counter readings: start, headers sent, body complete, app returned
    first: float
    complete: float
    end: float
    wall: float  # time.time() at the start
    response_bytes: int
    content_length: bytes | None  # the request's header values, parsed in the background
    request_id: bytes | None
    user: Any  # scope["user"] or a user_resolver's answer
    figures: dict[str, Any] | None  # what code inside the request added (asgimon.context)


def sequential_ids() -> Callable[[], str]:
    """Ids unique across processes (a random 64-bit prefix) and far cheaper than uuid4."""
    prefix = os.urandom(8).hex()
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):x}"


def route_template(route: Any, root0: str, root_end: str) -> str:
    """The template of the innermost route the router matched, mount prefixes included."""
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    prefix = root_end[len(root0) :] if root_end.startswith(root0) else ""
    if isinstance(route, Mount):
        # The mount's matched path is already in root_path; what is below it is one bucket.
        return _CONVERTER.sub(r"{\1}", prefix or path) + "/{path}"
    return _CONVERTER.sub(r"{\1}", prefix + path)


def user_id_of(user: Any) -> str | None:
    """Starlette's ``scope["user"]``: its identity when authenticated, else nobody."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    for attr in ("identity", "username", "display_name", "id"):
        try:
            value = getattr(user, attr, None)
        except NotImplementedError:
            continue
        if value is not None and value != "":
            return str(value)
    return None


def _length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if 0 <= length <= MAX_SIZE else None


class ApiCallBuilder:
    """Builds :class:`ApiCall` s, capping distinct endpoints per project (``<other>`` beyond)."""

    def __init__(
        self, max_endpoints: int, default_project: str, make_id: Callable[[], str] | None = None
    ) -> None:
        self.max_endpoints = max_endpoints
        self.default_project = default_project
        self._seen: dict[str, set[str]] = {}
        # The middleware queues a route by its id (see AsgimonMiddleware._record) and keeps
        # the route itself here; route objects live as long as the app.
        self.routes: dict[int, Any] = {}
        self.max_routes = 10 * max_endpoints
        # Route objects live as long as the app, so (route, mount prefix) is a stable key.
        self._templates: dict[tuple[int, str, str], str] = {}
        self._make_id = make_id or sequential_ids()
        # The series of a counted call, by what the record says of it: the same few
        # routes again and again, so their cleaning and capping are done once each.
        self._series: dict[tuple[Any, ...], tuple[str, str]] = {}

    def _capped(self, project_id: str, endpoint: str) -> str:
        seen = self._seen.setdefault(project_id, set())
        if endpoint in seen:
            return endpoint
        if len(seen) >= self.max_endpoints:
            return OTHER
        seen.add(endpoint)
        return endpoint

    def _endpoint(self, raw: RawRequest) -> str:
        if raw.endpoint is not None:
            return raw.endpoint
        route = raw.route
        if route is None:
            return UNMATCHED
        if type(route) is int:
            route = self.routes.get(route)
        key = (id(route), raw.root0, raw.root_end)
        endpoint = self._templates.get(key)
        if endpoint is None:
            endpoint = route_template(route, raw.root0, raw.root_end)
            if len(self._templates) < 10 * self.max_endpoints:
                self._templates[key] = endpoint
        return endpoint

    def _where(self, raw: RawRequest) -> tuple[str, str]:
        """The call's project and endpoint, bounded rather than trusted: they came off the
        wire or from host code."""
        project_id = self.default_project
        if isinstance(raw.project_id, str) and raw.project_id:
            project_id = clean_text(raw.project_id, 128)
        return project_id, self._capped(project_id, clean_text(self._endpoint(raw), 400))

    def series_of(self, where: tuple[Any, ...]) -> tuple[str, str]:
        """The project and rollup series of a middleware record, as its event would have,
        from the record's first six fields (project to root_end)."""
        key = where
        try:
            found = self._series.get(key)
        except TypeError:  # an unhashable value from a resolver, or a route past the table
            key, found = (), None
        if found is None:
            raw = RawRequest._make((*where, *_UNREAD))
            project_id, endpoint = self._where(raw)
            found = (project_id, series.api(clean_text(raw.method, 16) or "?", endpoint))
            if key and len(self._series) < 10 * self.max_endpoints:
                self._series[key] = found
        return found

    def __call__(self, item: tuple[Any, ...]) -> ApiCall:
        raw = RawRequest._make(item)
        project_id, endpoint = self._where(raw)
        request_id = raw.request_id
        user = raw.user
        if isinstance(user, int):
            user = str(user)
        elif user is not None and not isinstance(user, str):
            user = user_id_of(user)
        t0, end = raw.t0, raw.end
        return ApiCall(
            id=self._make_id(),
            project_id=project_id,
            timestamp=raw.wall,
            method=clean_text(raw.method, 16) or "?",
            endpoint=endpoint,
            status=raw.status if 0 <= raw.status <= 999 else 0,
            duration_ms=((raw.complete or end) - t0) * 1000.0,
            ttfb_ms=(raw.first - t0) * 1000.0 if raw.first else None,
            total_ms=(end - t0) * 1000.0,
            request_bytes=_length(raw.content_length),
            response_bytes=min(raw.response_bytes, MAX_SIZE),
            user_id=clean_text(user, 200) if user else None,
            request_id=clean_text(request_id.decode("latin-1"), 200) if request_id else None,
            figures=raw.figures,
        )
