"""Django under ASGI: route templates, view errors, query timing and staff sign-in.

In the project's ``asgi.py``::

    import os
    from django.core.asgi import get_asgi_application
    from asgimon.plugins.django import monitored

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    application = monitored(get_asgi_application())   # the dashboard at /analytics

Wrapping Django's application as any ASGI app is (``monitor.wrap``) would file every
request under ``<unmatched>`` and miss every error of a view: Django's router leaves no
``scope["route"]`` behind, and Django turns a view's exception into a 500 response before
the middleware sees it. So :func:`monitored` also

- names each request by its Django route (``/items/<int:pk>/``): :class:`RouteResolver`;
- reports the exception of a failing view, with its stack, from Django's
  ``got_request_exception`` signal, inside the request (its endpoint, method, request id),
  and once: the 500 answered for it is not reported again;
- times every database statement for :mod:`asgimon.plugins.queries`: :class:`QueryTimer` on
  each connection Django opens;
- lets active staff users (superusers too) read the dashboard with their Django session:
  :func:`staff_auth`.

Django itself is imported when these are built, never by importing this module: the
``django`` extra (``pip install 'asgimon[django]'``) is only needed where they are used.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, Protocol

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from asgimon.context import current
from asgimon.dashboard.auth import Principal
from asgimon.monitor import Monitor
from asgimon.plugins.queries import record_query

__all__ = [
    "MonitoredDjango",
    "QueryTimer",
    "RouteResolver",
    "django_monitor",
    "monitored",
    "staff_auth",
]

log = logging.getLogger("asgimon.django")

MAX_CACHED_PATH = 512
"""Longer paths are resolved each time: a cache of long made-up paths is memory for nothing."""
READ_METHODS = frozenset({"GET", "HEAD"})


def _django(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"asgimon's Django integration needs Django ({exc}): pip install 'asgimon[django]'"
        ) from exc


class RouteResolver:
    """The Django route of a request, for ``Monitor(route_resolver=RouteResolver())``.

    >>> RouteResolver()({"type": "http", "path": "/items/3/", "root_path": ""})  # doctest: +SKIP
    '/items/<int:pk>/'

    It asks Django's resolver for the path below ``root_path`` (Django's ``path_info``) and
    gives ``ResolverMatch.route`` with a leading slash, or None for a path no URL pattern
    matches (asgimon files those under ``<unmatched>``). Answers are remembered per path
    (the last ``maxsize`` of them) until the URLconf changes: a remembered path costs about
    1 µs, a resolution 15 to 35 µs (CPython 3.11, the example's URLconf and the admin's).
    They come from the project's ``ROOT_URLCONF``: an URLconf a middleware sets per request
    (``request.urlconf``) is not seen, and a path converter whose answer changes with data
    is remembered as first seen.
    """

    def __init__(self, maxsize: int = 4096) -> None:
        urls = _django("django.urls")
        self._get_resolver: Callable[[], Any] = urls.get_resolver
        self._not_found: type[Exception] = urls.Resolver404
        self._resolver: Any = None
        # lru_cache is thread-safe: error reports resolve from the threads sync views run in.
        self._cached = functools.lru_cache(maxsize=maxsize)(self._resolve)

    def __call__(self, scope: Scope) -> str | None:
        path: str = scope.get("path", "")
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        try:
            resolver = self._get_resolver()
            if resolver is not self._resolver:
                # A new URLconf (Django rebuilds its resolver when the settings change).
                self._cached.cache_clear()
                self._resolver = resolver
            if len(path) > MAX_CACHED_PATH:
                return self._resolve(path)
            return self._cached(path)
        except Exception:  # a broken URLconf fails the request itself; the record stays
            log.debug("asgimon: Django could not resolve %r", path, exc_info=True)
            return None

    def _resolve(self, path: str) -> str | None:
        try:
            match = self._resolver.resolve(path or "/")
        except self._not_found:
            return None
        route = match.route
        if not isinstance(route, str):
            return None
        return "/" + route.removeprefix("^").removesuffix("$")


class RecordQuery(Protocol):
    def __call__(self, statement: str, duration_ms: float, *, database: str = "") -> None: ...


class QueryTimer:
    """A Django execute wrapper that times each statement for :mod:`asgimon.plugins.queries`.

    :func:`monitored` puts one on every connection Django opens; without it, by hand::

        with connection.execute_wrapper(QueryTimer()):
            ...

    A statement that fails is timed too; its exception goes on unchanged.
    """

    __slots__ = ("record",)

    def __init__(self, record: RecordQuery = record_query) -> None:
        self.record = record

    def __call__(
        self,
        execute: Callable[[Any, Any, bool, Mapping[str, Any]], Any],
        sql: Any,
        params: Any,
        many: bool,
        context: Mapping[str, Any],
    ) -> Any:
        t0 = perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            elapsed_ms = (perf_counter() - t0) * 1000.0
            self.record(
                sql if isinstance(sql, str) else str(sql),
                elapsed_ms,
                database=context["connection"].alias,
            )


def _add_timer(connection: Any, timer: QueryTimer) -> None:
    wrappers: list[Any] = connection.execute_wrappers
    if not any(isinstance(w, QueryTimer) for w in wrappers):
        # First, not last: ``connection.execute_wrapper()`` pops the last one on exit, and
        # a connection opened inside one must still give back the caller's wrapper there.
        wrappers.insert(0, timer)


class MonitoredDjango:
    """Django's ASGI application under a :class:`~asgimon.Monitor`: see :func:`monitored`.

    ``monitor`` is the monitor it records for (for ``record_deployment_event`` and the rest).
    It listens to Django's signals while it lives; :meth:`close` stops that.
    """

    def __init__(self, application: ASGIApp, monitor: Monitor, *, time_queries: bool) -> None:
        self.monitor = monitor
        self.app = monitor.wrap(application)
        signals = _django("django.core.signals")
        self._signals: list[tuple[Any, Callable[..., None]]] = [
            (signals.got_request_exception, self._on_exception)
        ]
        self._timer: QueryTimer | None = None
        if time_queries:
            db = _django("django.db")
            self._timer = QueryTimer()
            backend_signals = _django("django.db.backends.signals")
            self._signals.append((backend_signals.connection_created, self._on_connection))
            # Connections opened before (a migration run in this thread) get it now.
            for connection in db.connections.all(initialized_only=True):
                _add_timer(connection, self._timer)
        for signal, receiver in self._signals:
            # Weakly (Django's default): a dropped application stops listening by itself.
            signal.connect(receiver)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def close(self) -> None:
        """Stop listening to Django's signals (connections keep their timer)."""
        for signal, receiver in self._signals:
            signal.disconnect(receiver)

    def _on_exception(self, sender: Any, request: Any = None, **kwargs: Any) -> None:
        # Django sends this from inside its ``except`` block (in a worker thread for an async
        # stack, where asgiref re-raises it so that sys.exc_info() holds it): the exception
        # is there and nowhere else. The request context came along with the thread's copy
        # of the context variables.
        exc = sys.exc_info()[1]
        ctx = current()
        if not isinstance(exc, Exception) or ctx is None or ctx.scope is None:
            return  # not inside a request this monitor records
        # As the middleware reports what escapes the app; the context is marked reported,
        # so the 500 Django answers for it is not reported a second time.
        self.monitor.capture_unhandled(exc, ctx.scope, ctx.root0)

    def _on_connection(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        if self._timer is not None:
            _add_timer(connection, self._timer)


def django_monitor(environ: Mapping[str, str] | None = None, **overrides: Any) -> Monitor:
    """``Monitor.from_env()`` with Django's route templates and staff sign-in as defaults.

    >>> monitor = django_monitor(project_id="shop")                    # doctest: +SKIP
    >>> application = monitored(get_asgi_application(), monitor)       # doctest: +SKIP
    """
    overrides.setdefault("route_resolver", RouteResolver())
    overrides.setdefault("auth", staff_auth)
    return Monitor.from_env(environ, **overrides)


def monitored(
    application: ASGIApp, monitor: Monitor | None = None, *, time_queries: bool = True
) -> MonitoredDjango:
    """Django's ASGI application with asgimon around it and the dashboard at the mount path.

    >>> application = monitored(get_asgi_application())                # doctest: +SKIP

    ``monitor`` defaults to :func:`django_monitor` (settings from the environment). A monitor
    of your own should be given ``route_resolver=RouteResolver()``, or every request is
    filed under ``<unmatched>``. ``time_queries=False`` leaves database statements untimed.
    """
    if monitor is None:
        monitor = django_monitor()
    elif monitor.route_resolver is None:
        log.warning(
            "asgimon: this monitor has no route_resolver, so Django's requests are all "
            "filed under <unmatched>: build it with django_monitor() or "
            "route_resolver=RouteResolver()"
        )
    return MonitoredDjango(application, monitor, time_queries=time_queries)


async def staff_auth(request: Request) -> Principal | None:
    """An auth hook (``Monitor(auth=staff_auth)``): Django's staff users are admins.

    The Django session cookie of an active staff user (or superuser) opens the dashboard
    and the API to read; anyone else is refused. The cookie authorises reads and the
    dashboard's own forms (which check a CSRF token of their own), never a change through
    the JSON API: a page on another site can make a browser send a cookie, not a token.
    Sign in at Django's admin (``/admin/login/?next=/analytics/``).
    """
    settings = _django("django.conf").settings
    key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not key or not _cookie_authorises(request.scope):
        return None
    from asgiref.sync import sync_to_async

    # The session and the user are read as a sync view would be: in Django's sync thread.
    return await sync_to_async(_staff_principal, thread_sensitive=True)(key)


def _cookie_authorises(scope: Scope) -> bool:
    if scope.get("method") in READ_METHODS:
        return True
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    below = path[len(root) :] if root and path.startswith(root) else path
    return scope.get("method") == "POST" and not below.startswith("/api/")


def _staff_principal(session_key: str) -> Principal | None:
    db = _django("django.db")
    # What Django does around each request: drop a connection past CONN_MAX_AGE or broken.
    db.close_old_connections()
    try:
        user = _session_user(session_key)
    finally:
        db.close_old_connections()
    # A custom user model need not have the staff flags: without them, nobody is staff.
    staff = getattr(user, "is_staff", False) or getattr(user, "is_superuser", False)
    if user is None or not getattr(user, "is_active", False) or not staff:
        return None
    return Principal(subject=f"django:{user.get_username()}", admin=True)


def _session_user(session_key: str) -> Any:
    """The session's user, checked as ``django.contrib.auth.get_user`` checks it, but without
    writing to the session (get_user cycles or flushes it, and no cookie goes back here)."""
    from django.conf import settings
    from django.contrib import auth
    from django.core.exceptions import ValidationError
    from django.utils.crypto import constant_time_compare

    session = importlib.import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = auth.get_user_model()._meta.pk.to_python(session[auth.SESSION_KEY])
        backend_path = session[auth.BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = auth.load_backend(backend_path).get_user(user_id)
    if user is None:
        return None
    if hasattr(user, "get_session_auth_hash"):
        # A password change signs out every session, as in Django.
        given = session.get(auth.HASH_SESSION_KEY)
        if not isinstance(given, str) or not given:
            return None
        valid = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        if not any(constant_time_compare(given, h) for h in valid):
            return None
    return user
