"""Who is asking: authentication, the refusal of strangers, and the API's rate limit."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from asgimon.ratelimit import RateLimiter, Verdict
from asgimon.ratelimit.headers import with_limit_headers

from .access import cross_site, host_count, local_request
from .auth import Authenticator, AuthError, Principal, presented_token
from .responses import error_response
from .sentry_keys import SENTRY_PATH, sentry_key, sentry_principal

log = logging.getLogger("asgimon.dashboard")

INGEST_PATH = "/api/events"
METRICS_PATH = "/metrics"
"""Prometheus' scrape target: not a page, so a refusal there is a 401, not a sign-in form."""
PUBLIC_PATHS = frozenset({"/signin", "/signout"})
"""Open to anyone once auth is configured: they do their own checks (CSRF, the token)."""
STATIC_PREFIX = "/static/"
PRINCIPAL = "asgimon.principal"
LOCAL = Principal("local", admin=True)
"""Who a loopback client is when no auth is configured."""


def principal_of(request: Request) -> Principal:
    principal = request.scope.get(PRINCIPAL)
    assert isinstance(principal, Principal), "the guard sets the principal"
    return principal


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def mount_root(scope: Scope) -> str:
    """Where the dashboard is mounted, without a trailing slash ("" at the root)."""
    return str(scope.get("root_path", "")).rstrip("/")


def cookie_path(scope: Scope) -> str:
    """The path the dashboard's cookies are scoped to: the mount."""
    return mount_root(scope) or "/"


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _wants_page(scope: Scope, path: str) -> bool:
    """A browser asking for a page (not the JSON API, not an asset)."""
    return (
        scope["type"] == "http"
        and scope.get("method") in ("GET", "HEAD")
        and not path.startswith(("/api/", STATIC_PREFIX))
        and path != METRICS_PATH
    )


def _is_form_post(scope: Scope, path: str) -> bool:
    """A page's own form (not the API's): it checks the CSRF token itself."""
    return (
        scope["type"] == "http"
        and scope.get("method") == "POST"
        and not path.startswith(("/api/", STATIC_PREFIX))
        and path not in PUBLIC_PATHS
    )


def _to_signin(scope: Scope) -> Response:
    root = mount_root(scope)
    target = _route_path(scope)
    query = scope.get("query_string", b"").decode("latin-1")
    nxt = quote(target + ("?" + query if query else ""), safe="")
    return Response(status_code=303, headers={"Location": f"{root}/signin?next={nxt}"})


class Guard:
    """Decides who is asking, refuses strangers, and applies the API's rate limit.

    With no auth configured (no JWT key, no hook), only loopback clients without proxy
    headers are answered, as an admin, and everyone else gets a 404 that does not tell them
    anything is mounted here; ingest keys still work for ``POST /api/events``. With auth
    configured, every request needs credentials, loopback included: behind a reverse proxy
    every visitor is loopback.
    """

    def __init__(self, app: ASGIApp, authn: Authenticator, throttle: RateLimiter | None) -> None:
        self.app = app
        self.authn = authn
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if host_count(scope) > 1:
            # Which one a proxy, the guard and the host app each read is anyone's guess.
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            detail = {"field": "Host", "message": "must be sent once"}
            await error_response(400, "bad_request", "more than one Host header", [detail])(
                scope, receive, send
            )
            return
        failures_key = "refused:" + _client_address(scope)
        if self.throttle is not None and await self.throttle.exhausted(failures_key):
            # An address that keeps failing to authenticate waits before the next try
            # reaches a JWT check or the host's hook.
            await error_response(
                429, "rate_limited", "too many refused requests from this address"
            )(scope, receive, send)
            return
        path = _route_path(scope)
        if self.authn.configured and (path in PUBLIC_PATHS or path.startswith(STATIC_PREFIX)):
            # The sign-in page and its stylesheet: nothing behind them is a project's. A
            # refused token there counts against the address like any other.
            await self.app(scope, receive, self._counting_refusals(send, failures_key))
            return
        refusal, principal = await self._principal(scope)
        if principal is None:
            if self.throttle is not None and refusal is not None and refusal.status_code == 401:
                await self.throttle.check(failures_key)
            if refusal is not None and refusal.status_code == 401 and _wants_page(scope, path):
                refusal = _to_signin(scope)
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                assert refusal is not None
                await refusal(scope, receive, send)
            return
        route = _route_path(scope)
        posted = scope["type"] == "http" and scope.get("method") == "POST"
        opens = (
            SENTRY_PATH.match(route) if principal.subject == "sentry-key" else route == INGEST_PATH
        )
        if principal.ingest_only and not (opens and posted):
            # As to a stranger: the key opens ingestion and nothing else.
            await error_response(404, "not_found", "Not Found")(scope, receive, send)
            return
        verdict: Verdict | None = None
        if self.throttle is not None and scope["type"] == "http":
            verdict = await self.throttle.check(self._limit_key(scope, principal))
            if verdict is not None and not verdict.allowed:
                await error_response(
                    429,
                    "rate_limited",
                    "too many requests to the analytics API",
                    headers={k.decode(): v.decode() for k, v in self.throttle.headers(verdict)},
                )(scope, receive, send)
                return
        scope = {**scope, PRINCIPAL: principal}
        if verdict is None:
            await self.app(scope, receive, send)
            return
        assert self.throttle is not None  # it gave the verdict
        extra = self.throttle.headers(verdict)

        async def send_with_limits(message: Any) -> None:
            await send(with_limit_headers(message, extra))

        await self.app(scope, receive, send_with_limits)

    def _counting_refusals(self, send: Send, failures_key: str) -> Send:
        throttle = self.throttle
        if throttle is None:
            return send

        async def counting(message: Any) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                await throttle.check(failures_key)
            await send(message)

        return counting

    async def _principal(self, scope: Scope) -> tuple[Response | None, Principal | None]:
        if SENTRY_PATH.match(_route_path(scope)):
            # Sentry's SDKs: the DSN's public key, and nothing else, opens these two paths.
            key = sentry_key(scope)
            keyed = sentry_principal(self.authn.settings, key) if key else None
            if keyed is None:
                return self._unauthorized("invalid_key", "unknown Sentry DSN key"), None
            return None, keyed
        token = presented_token(scope, form_post=_is_form_post(scope, _route_path(scope)))
        if token is not None:
            keyed = self.authn.ingest_principal(token)
            if keyed is not None:
                return None, keyed
        if self.authn.configured:
            try:
                principal = await self.authn.principal(Request(scope), token)
            except AuthError as exc:
                return self._unauthorized("invalid_token", str(exc)), None
            except Exception:  # the host's hook (or a key) failed: refuse, without a 500
                log.exception("asgimon: authentication failed unexpectedly")
                message = "authentication failed; see the server log"
                return error_response(503, "auth_unavailable", message), None
            if principal is None:
                return self._unauthorized("unauthorized", "credentials are required"), None
            return None, principal
        if token is not None and _route_path(scope) == INGEST_PATH:
            return self._unauthorized("invalid_key", "unknown ingest key"), None
        if local_request(scope) and not cross_site(scope):
            return None, LOCAL
        return error_response(404, "not_found", "Not Found"), None

    @staticmethod
    def _unauthorized(code: str, message: str) -> Response:
        return error_response(401, code, message, headers={"WWW-Authenticate": "Bearer"})

    @staticmethod
    def _limit_key(scope: Scope, principal: Principal) -> str:
        if principal is LOCAL:
            return "addr:" + _client_address(scope)
        if principal.ingest_only:
            return "key:" + ",".join(sorted(principal.projects))
        return "sub:" + principal.subject
