"""The route a request was served by, when the router did not say (``scope["route"]``).

Starlette's router names the route it matched in ``scope["route"]``; FastAPI's names only its
own API routes there. Its other routes (``/openapi.json``, ``/docs``, a mounted
``StaticFiles`` or sub-application) leave just ``scope["endpoint"]``, the function or app
they call, which the router's matching put in the scope. That endpoint is looked up, once
each, among the routes of the app the middleware wraps.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope

_MAX_DEPTH = 32  # middlewares between this one and the router


def routes_of(app: Any) -> list[Any] | None:
    """The route list of the first router down ``app``'s chain of wrapped apps, if any."""
    for _ in range(_MAX_DEPTH):
        if app is None:
            return None
        try:
            routes = getattr(app, "routes", None)
            if isinstance(routes, list):
                return routes  # the router's own list: routes added later are seen
            app = getattr(app, "router", None) or getattr(app, "app", None)
        except Exception:  # a property of the host's that raises is not ours to mind
            return None
    return None


class EndpointRoutes:
    """The route of an endpoint, for requests whose router left no ``scope["route"]``.

    An endpoint that no route, or more than one route, calls gets none: a guess could file
    a request under a route it did not take.
    """

    __slots__ = ("_found", "_max", "_routes")

    def __init__(self, routes: list[Any] | None, max_endpoints: int) -> None:
        self._routes = routes
        self._max = max_endpoints
        # id(endpoint) -> (endpoint, route): the endpoint is held, so its id is not reused.
        self._found: dict[int, tuple[Any, Any]] = {}

    def route_of(self, scope: Scope) -> Any:
        endpoint = scope.get("endpoint")
        if endpoint is None or self._routes is None:
            return None
        found = self._found.get(id(endpoint))
        if found is not None:
            return found[1]
        if len(self._found) >= self._max:
            return None  # past the cap no request scans the routes: it goes unnamed
        route = self._lookup(endpoint)
        self._found[id(endpoint)] = (endpoint, route)
        return route

    def _lookup(self, endpoint: Any) -> Any:
        try:
            calls = [
                r
                for r in list(self._routes or ())
                if getattr(r, "endpoint", None) is endpoint or getattr(r, "app", None) is endpoint
            ]
        except Exception:  # a route of the host's that raises: the request goes unnamed
            return None
        return calls[0] if len(calls) == 1 else None
