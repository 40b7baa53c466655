"""What a form did, told on the page it redirects to: a message kept for one page view.

A form's POST answers 303 to its page (so that a reload does not send it again); the
message that page shows travels in a cookie: ``HttpOnly``, ``SameSite=Strict``, scoped to
the mount, living a minute, deleted by the page that shows it. It is shown as text, never
as markup, so a message someone else managed to plant can only say something.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from asgimon.dashboard.auth import cookie_value
from asgimon.dashboard.guard import cookie_path

FLASH_COOKIE = "asgimon_flash"
MAX_AGE_S = 60
MAX_BYTES = 3000  # encoded: well inside a browser's 4 KB for one cookie
MAX_ITEMS = 10
MAX_TEXT = 300


@dataclass(frozen=True)
class Flash:
    text: str
    ok: bool = True
    items: tuple[str, ...] = ()
    """Lines under the message: each channel's outcome of a test send."""
    secret: str | None = None
    """A webhook's signing secret, made for a new rule: shown this once."""

    def encode(self) -> str:
        body = {"text": self.text, "ok": self.ok, "items": list(self.items), "secret": self.secret}
        raw = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
        return raw.decode().rstrip("=")  # "=" would make the cookie a quoted string

    @classmethod
    def decode(cls, raw: str) -> Flash | None:
        try:
            body = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(body, dict):
            return None
        text, items, secret = body.get("text"), body.get("items", []), body.get("secret")
        if not isinstance(text, str) or not isinstance(items, list):
            return None
        return cls(
            text[:MAX_TEXT],
            body.get("ok") is not False,
            tuple(str(i)[:MAX_TEXT] for i in items[:MAX_ITEMS]),
            secret if isinstance(secret, str) else None,
        )


def keep(response: Response, request: Request, flash: Flash) -> None:
    """Give ``flash`` to the next page this browser shows."""
    value = flash.encode()
    if len(value) > MAX_BYTES:
        value = Flash(flash.text[:MAX_TEXT], flash.ok, secret=flash.secret).encode()
    response.set_cookie(
        FLASH_COOKIE,
        value,
        max_age=MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=cookie_path(request.scope),
    )


def read(request: Request) -> Flash | None:
    raw = cookie_value(request.headers.get("cookie", ""), FLASH_COOKIE)
    return Flash.decode(raw) if raw else None


def clear(request: Request, response: Response) -> None:
    """Once shown, forgotten: a reload does not show it again."""
    if cookie_value(request.headers.get("cookie", ""), FLASH_COOKIE) is not None:
        response.delete_cookie(
            FLASH_COOKIE,
            path=cookie_path(request.scope),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
