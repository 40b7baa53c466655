"""JWTs for tests: the settings that accept them and tokens with every required claim."""

from __future__ import annotations

import time
from typing import Any

import jwt

SECRET = "a-secret-of-at-least-thirty-two-bytes"
AUDIENCE = "asgimon-tests"
ISSUER = "https://id.example"
JWT_SETTINGS: dict[str, Any] = {
    "jwt_secret": SECRET,
    "jwt_audience": AUDIENCE,
    "jwt_issuer": ISSUER,
}


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iat": now, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER, **extra}


def mint(extra: dict[str, Any], key: Any = SECRET, algorithm: str = "HS256") -> str:
    """A token with the standard claims, then ``extra`` (a None value drops that claim)."""
    body = {k: v for k, v in claims(**extra).items() if v is not None}
    return jwt.encode(body, key, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
