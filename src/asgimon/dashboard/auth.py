"""Who is asking: a principal from an ingest key, the host app's hook or a JWT.

A principal sees only its projects; an admin sees all. An ingest key's principal may only
write events (``POST /api/events``) for the projects the key is bound to.
"""

from __future__ import annotations

import hmac
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.requests import Request
from starlette.types import Scope

from asgimon.errors import ConfigError, require_extra
from asgimon.settings import Settings

MAX_TOKEN_BYTES = 8192
MAX_CLAIMED_PROJECTS = 10_000
NUMERIC_DATES = ("exp", "nbf", "iat")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a subject, the projects it may see, and whether it is an admin."""

    subject: str
    projects: frozenset[str] = frozenset()
    admin: bool = False
    ingest_only: bool = False

    def can_see(self, project_id: str) -> bool:
        return self.admin or project_id in self.projects


AuthHook = Callable[[Request], "Principal | Awaitable[Principal | None] | None"]
"""The host app's way in: given the request, the principal, or None for a stranger."""


class AuthError(Exception):
    """Credentials were presented and are wrong: a 401 with this message."""


SESSION_COOKIE = "asgimon_session"
"""Where the sign-in page keeps a browser's token (``HttpOnly``, ``SameSite=Strict``)."""
READ_METHODS = frozenset({"GET", "HEAD"})


def presented_token(scope: Scope, *, form_post: bool = False) -> str | None:
    """The credential a request presents: ``Authorization: Bearer …``, the ingest header, or,
    for a read only, the sign-in cookie (a cookie never authorises a change of the API: no
    CSRF). A page's ``form_post`` reads the cookie too: its handler checks the CSRF token
    and the origin before changing anything."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    cookie: str | None = None
    for name, value in headers:
        if name == b"x-asgimon-ingest-key":
            return value.decode("latin-1").strip()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        if name == b"cookie" and cookie is None:
            cookie = cookie_value(value.decode("latin-1"), SESSION_COOKIE)
    if form_post or scope["type"] == "websocket" or scope.get("method") in READ_METHODS:
        return cookie
    return None


def cookie_value(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            return value
    return None


class Authenticator:
    def __init__(self, settings: Settings, hook: AuthHook | None = None) -> None:
        self.settings = settings
        self.hook = hook
        self._key: Any = settings.jwt_secret or settings.jwt_public_key
        if settings.jwt_public_key is not None:
            require_extra("cryptography", "rsa", "ANALYTICS_JWT_PUBLIC_KEY", "(key)")
            from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                self._key = load_pem_public_key(settings.jwt_public_key.encode())
            except (ValueError, TypeError):
                self._key = None
            if not isinstance(self._key, RSAPublicKey):
                raise ConfigError("ANALYTICS_JWT_PUBLIC_KEY", "(key)", "an RSA public key in PEM")

    @property
    def configured(self) -> bool:
        """Whether anything beyond loopback-only access is set up."""
        return self.hook is not None or self.settings.jwt_configured

    def ingest_principal(self, token: str) -> Principal | None:
        projects = {
            project
            for project, known in self.settings.ingest_keys
            if hmac.compare_digest(known.encode(), token.encode())
        }
        if not projects:
            return None
        return Principal(
            subject="ingest-key",
            projects=frozenset(projects),
            admin="*" in projects,
            ingest_only=True,
        )

    async def principal(self, request: Request, token: str | None) -> Principal | None:
        if self.hook is not None:
            found = self.hook(request)
            if inspect.isawaitable(found):
                found = await found
            if found is not None:
                if not isinstance(found, Principal):
                    raise TypeError(f"the auth hook returned {type(found).__name__}, not Principal")
                return found
        if token is not None and self.settings.jwt_configured:
            return self.decode(token)
        return None

    def decode(self, token: str) -> Principal:
        s = self.settings
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError("the token is too long")
        required = ["exp", "iat", "sub", "aud", "iss"]
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[s.jwt_pinned_algorithm],
                audience=s.jwt_audience,
                issuer=s.jwt_issuer,
                leeway=s.jwt_leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        for name in NUMERIC_DATES:
            # PyJWT takes "9999999999" for a date; RFC 7519 §2 says NumericDate is a number.
            value = claims.get(name)
            if name in claims and not _numeric_date(value):
                raise AuthError(f"invalid token: {name} must be a number")
        return principal_from_claims(claims)


def token_expiry(token: str) -> float | None:
    """The ``exp`` of a token :meth:`Authenticator.decode` accepted (not checked again)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    exp: Any = claims.get("exp")
    return float(exp) if _numeric_date(exp) else None


def _numeric_date(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """``sub``; ``projects`` (a list of project ids); ``admin: true`` or ``role: "admin"``
    (the audience is checked first, so these are claims minted for this API)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid token: sub must be a non-empty string")
    projects = claims.get("projects", [])
    if (
        not isinstance(projects, list)
        or len(projects) > MAX_CLAIMED_PROJECTS
        or not all(isinstance(p, str) and p for p in projects)
    ):
        raise AuthError("invalid token: projects must be a list of project ids")
    admin = claims.get("admin") is True or claims.get("role") == "admin"
    return Principal(subject=subject, projects=frozenset(projects), admin=admin)


def bearer_subject(settings: Settings) -> Callable[[Scope], str | None]:
    """For the host's rate limit (``RATE_LIMIT_JWT_SUBJECT``): the ``sub`` of a bearer JWT
    that the ``ANALYTICS_JWT_*`` keys verify: an unverified
    subject is the client's to choose, a fresh bucket per request. Verified tokens are
    remembered until they expire, so a client's repeated token costs one verification."""
    authn = Authenticator(settings)
    seen: dict[str, tuple[str, float]] = {}

    def subject(scope: Scope) -> str | None:
        token = None
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                scheme, _, given = bytes(value).decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and given.strip():
                    token = given.strip()
                break
        if token is None:
            return None
        now = time.time()
        hit = seen.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            principal = authn.decode(token)
        except AuthError:
            return None
        if len(seen) >= 10_000:
            seen.clear()
        seen[token] = (principal.subject, token_expiry(token) or now + 60)
        return principal.subject

    return subject
