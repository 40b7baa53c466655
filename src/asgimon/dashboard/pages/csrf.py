"""CSRF for the pages' forms: a per-browser token in a cookie and in the form, and the
request's ``Origin`` (or ``Referer``) naming this host.

The token is random, kept in an ``HttpOnly``, ``SameSite=Strict`` cookie and echoed in a
hidden field; a cross-site page can neither read the cookie nor send it, and a form posted
from elsewhere carries another origin. Both checks must pass.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from asgimon.dashboard.auth import cookie_value
from asgimon.dashboard.guard import cookie_path

CSRF_COOKIE = "asgimon_csrf"
FIELD = "csrf_token"


def token_of(request: Request) -> str | None:
    return cookie_value(request.headers.get("cookie", ""), CSRF_COOKIE)


def issue(request: Request) -> str:
    """The browser's token, or a new one (set with :func:`remember`)."""
    return token_of(request) or secrets.token_urlsafe(32)


def remember(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=cookie_path(request.scope),
    )


def problem(request: Request, sent: str | None) -> str | None:
    """Why a form post is refused, or None if it carries this browser's token from here."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if not origin or urlsplit(origin).netloc != host:
        return "the form was not sent from this dashboard"
    kept = token_of(request)
    if not kept or not sent or not hmac.compare_digest(kept.encode(), sent.encode()):
        return "the form has expired; reload the page and send it again"
    return None
