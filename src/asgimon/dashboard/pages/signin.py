"""Sign-in for JWT deployments: a page that takes a token and keeps it in a cookie.

The cookie is ``HttpOnly`` and ``SameSite=Strict`` (``Secure`` behind HTTPS), scoped to the
mount and to the token's lifetime, and it is read for GET requests only: the JSON API's
writes still need a bearer token or an ingest key. Both forms (sign in, sign out) carry the
CSRF token and must come from this origin.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from asgimon.dashboard.auth import SESSION_COOKIE, Authenticator, AuthError, token_expiry
from asgimon.dashboard.guard import cookie_path, mount_root

from . import csrf

MAX_FORM_BYTES = 16_384
MAX_COOKIE_TOKEN = 3800  # browsers drop a cookie past about 4 KB, name and flags included
Render = Callable[..., Response]


async def read_form(request: Request, *, max_fields: int = 8) -> dict[str, str] | None:
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=max_fields)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items()}


def _next(request: Request, raw: str | None) -> str:
    """Where to go after signing in: a page of this mount, never another site."""
    root = mount_root(request.scope)
    if raw and raw.startswith("/") and not raw.startswith(("//", "/\\")) and "\\" not in raw:
        return root + raw
    return root + "/"


class SignIn:
    def __init__(self, authn: Authenticator, render: Render) -> None:
        self.authn = authn
        self.render = render

    @property
    def mode(self) -> str:
        if self.authn.settings.jwt_configured:
            return "jwt"
        return "hook" if self.authn.hook is not None else "local"

    def _page(self, request: Request, status: int = 200, **extra: Any) -> Response:
        token = csrf.issue(request)
        response = self.render(
            request,
            "signin.html",
            status,
            mode=self.mode,
            csrf_token=token,
            next=request.query_params.get("next", ""),
            **extra,
        )
        csrf.remember(response, request, token)
        return response

    async def get(self, request: Request) -> Response:
        return self._page(request)

    async def post(self, request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return self._page(request, 400, error="send the sign-in form")
        refused = csrf.problem(request, form.get(csrf.FIELD))
        if refused is not None:
            return self._page(request, 403, error=refused)
        if self.mode != "jwt":
            return self._page(request, 400, error="this dashboard takes no token")
        token = form.get("token", "").strip()
        try:
            principal = self.authn.decode(token) if token else None
        except AuthError as exc:
            return self._page(request, 401, error=f"the token was refused: {exc}")
        if principal is None:
            return self._page(request, 401, error="paste a token to sign in")
        if len(token) > MAX_COOKIE_TOKEN:
            message = f"the token is over {MAX_COOKIE_TOKEN} bytes, too long for a browser to keep"
            return self._page(request, 400, error=message + "; send it as a bearer token instead")
        expires = token_expiry(token)
        response = RedirectResponse(_next(request, form.get("next")), status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=max(1, int(expires - time.time())) if expires else None,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=cookie_path(request.scope),
        )
        return response

    async def signout(self, request: Request) -> Response:
        form = await read_form(request)
        refused = csrf.problem(request, None if form is None else form.get(csrf.FIELD))
        if refused is not None:
            return self._page(request, 403, error=refused)
        root = mount_root(request.scope)
        response = RedirectResponse(f"{root}/signin", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE,
            path=cookie_path(request.scope),
            httponly=True,
            samesite="strict",
        )
        return response
