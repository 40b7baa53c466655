"""The headers every page and asset carries: a strict CSP, no sniffing, no framing, and no
caching of anything that does not say otherwise (a project's figures read with the sign-in
cookie are as private as those read with a bearer token)."""

from __future__ import annotations

import base64
import hashlib
from importlib.resources import files

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STYLESHEET = files("asgimon.dashboard").joinpath("static", "asgimon.css").read_text("utf-8")
"""The stylesheet, inlined in every page: a fresh visitor's first paint waits for no second
request. The CSP allows it by its hash, and nothing else inline."""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLESHEET.encode()).digest()).decode()

# No inline script anywhere, and no inline style but the stylesheet itself (by its hash);
# the script comes from the mount's static files, the live figures from the same origin.
CSP = (
    f"default-src 'none'; script-src 'self'; style-src 'self' 'sha256-{_STYLE_HASH}'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class PageHeaders:
    """Adds :data:`HEADERS` to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *HEADERS]
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"private, no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
