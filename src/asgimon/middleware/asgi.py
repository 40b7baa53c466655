"""The pure-ASGI middleware: timing, status, sizes, disconnects, unhandled errors, lifespan."""

from __future__ import annotations

from time import perf_counter, time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgimon.context import Figure, close_request, open_request
from asgimon.ratelimit.headers import Headers, with_limit_headers

from .host import Host
from .lifespan import run_lifespan
from .routes import EndpointRoutes, routes_of

CLIENT_CLOSED = 499


class AsgimonMiddleware:
    """Records every HTTP request and websocket session of the app it wraps.

    >>> app.add_middleware(AsgimonMiddleware, monitor=monitor)     # doctest: +SKIP

    Per request it notes the route template, method, status, response size and three
    timings (response headers sent, response complete, app returned — the last includes
    background tasks), and queues them for the recorder: no I/O happens here. A client that
    leaves before the response is complete is recorded as 499. The app's exceptions are
    captured and re-raised unchanged. Lifespan events start and stop the monitor.
    """

    def __init__(self, app: ASGIApp, *, monitor: Host) -> None:
        # The rate limit inside the timing: a refusal is recorded as the 429 it is. Counted in
        # memory it is asked here, in this frame, and its headers added by this send wrapper:
        # a layer of its own cost each request a call, a closure and a wrapped send more.
        self.app = monitor.limited(app)
        self._gate = monitor.gate(self.app)
        self.monitor = monitor
        self._enabled = monitor.enabled
        self._excluded_exact, self._excluded_prefixes = monitor.excluded_paths()
        self._queue = monitor.queue
        self._put = monitor.queue.put_record
        self._in_flight = monitor.requests
        self._routes = monitor.route_table.routes
        self._max_routes = monitor.route_table.max_routes
        self._endpoint_routes = EndpointRoutes(routes_of(app), self._max_routes)
        self._user_resolver = monitor.user_resolver
        self._route_resolver = monitor.route_resolver
        self._project_resolver = monitor.project_resolver
        self._failing = monitor.failing_statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, as servers tell an ASGI 3 app by it. HTTP requests are
        # served in this frame, not in one more of their own: every request of the host
        # passes here.
        kind = scope["type"]
        if kind != "http" or not self._enabled or self._excluded(scope):
            if kind == "lifespan":
                await run_lifespan(self.monitor, self.app, scope, receive, send)
            elif kind == "websocket" and self._enabled:
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        monitor = self.monitor
        if not monitor.started:
            monitor.start_soon()
        status = 0
        first = complete = 0.0
        response_bytes = 0
        disconnected = False
        root0 = scope.get("root_path", "")
        ctx, token = open_request(scope, root0)
        captured = False
        wall = time()
        t0 = perf_counter()

        app = self.app
        extra: Headers = ()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first, complete, response_bytes, disconnected
            if extra:
                message = with_limit_headers(message, extra)
            try:
                await send(message)
            except OSError:
                disconnected = True
                raise
            # Stamped once the server took the message: a send that failed did not happen.
            kind = message["type"]
            if kind == "http.response.body":
                response_bytes += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = perf_counter()
            elif kind == "http.response.start":
                status = message["status"]
                first = perf_counter()
            elif kind == "http.response.pathsend":
                complete = perf_counter()  # the server sends the file; its size is not ours

        async def receive_wrapper() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        in_flight = self._in_flight
        in_flight.count += 1
        try:
            if self._gate is not None:
                app, extra = self._gate.admit_now(scope)
            await app(scope, receive_wrapper, send_wrapper)
        except BaseException as exc:
            if not status:
                status = 500
            captured = True  # a failing status raised is reported as its exception
            if not disconnected and isinstance(exc, Exception):
                monitor.capture_unhandled(exc, scope, root0)
            raise
        finally:
            end = perf_counter()
            close_request(token)
            in_flight.count -= 1
            if disconnected and not complete:
                status = CLIENT_CLOSED
            elif status in self._failing and not captured and not ctx.reported:
                monitor.capture_response(status, scope, root0)
            self._record(
                scope,
                scope["method"],
                status,
                root0,
                t0,
                first,
                complete,
                end,
                wall,
                response_bytes,
                ctx.figures,
            )

    def _excluded(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            # Servers put root_path in path too; exclusions are written without it.
            path = path[len(root) :] or "/"
        return path in self._excluded_exact or path.startswith(self._excluded_prefixes)

    def _record(
        self,
        scope: Scope,
        method: str,
        status: int,
        root0: str,
        t0: float,
        first: float,
        complete: float,
        end: float,
        wall: float,
        response_bytes: int,
        figures: dict[str, Figure] | None = None,
    ) -> None:
        try:
            # The record waits in the queue for up to a second, long enough to outlive two
            # young garbage collections. Made of atoms only (the route by its id, the two
            # header values rather than the header list), it is untracked at the first and
            # never swells the old generation, whose full collections walk the whole host
            # heap: tens of milliseconds every second under load. (A user object from an
            # authentication middleware, or a route past the table's cap, keeps it tracked.)
            route = scope.get("route")
            if route is None:
                route = self._endpoint_routes.route_of(scope)
            if route is not None:
                routes = self._routes
                rid = id(route)
                if rid in routes:
                    route = rid
                elif len(routes) < self._max_routes:
                    routes[rid] = route  # held, so the id is never reused while it stands
                    route = rid
            length = request_id = None
            for name, value in scope.get("headers") or ():
                if name == b"content-length":
                    length = value
                elif name == b"x-request-id":
                    request_id = value
            # A plain tuple in RawRequest's field order: building the NamedTuple itself costs
            # a Python-level call per request, so the builder does that in the background.
            self._put(
                (
                    self._project_resolver(scope) if self._project_resolver else None,
                    method,
                    self._route_resolver(scope) if self._route_resolver else None,
                    route,
                    root0,
                    scope.get("root_path", ""),
                    status,
                    t0,
                    first,
                    complete,
                    end,
                    wall,
                    response_bytes,
                    length,
                    request_id,
                    self._user_resolver(scope) if self._user_resolver else scope.get("user"),
                    figures,
                )
            )
        except Exception as exc:
            self._queue.reject("internal_error", exc)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket session is recorded as method ``WS``: 101 once accepted, else 403."""
        monitor = self.monitor
        if not monitor.started:
            monitor.start_soon()
        status = 0
        first = 0.0
        root0 = scope.get("root_path", "")
        _, token = open_request(scope, root0)
        wall = time()
        t0 = perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first
            await send(message)
            if message["type"] == "websocket.accept":
                status = 101
                first = perf_counter()
            elif message["type"] == "websocket.close" and not status:
                status = 403
                first = perf_counter()

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            if not status:
                status = 500
            if isinstance(exc, Exception):
                monitor.capture_unhandled(exc, scope, root0)
            raise
        finally:
            end = perf_counter()
            close_request(token)
            status = status or CLIENT_CLOSED
            self._record(scope, "WS", status, root0, t0, first, first or end, end, wall, 0)
