"""Who may see the dashboard. With no auth configured: loopback clients, and no one behind a proxy.

A reverse proxy on the same host makes every visitor look like 127.0.0.1, so a request
carrying a proxy header is refused too. Refusals are 404s, which do not tell a stranger that
anything is mounted here.
"""

from __future__ import annotations

import ipaddress

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

PROXY_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip", b"x-forwarded-host"})


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def local_request(scope: Scope) -> bool:
    client = scope.get("client")
    if not client or not is_loopback(client[0]):
        return False
    return not any(name in PROXY_HEADERS for name, _ in scope.get("headers", ()))


NOT_FOUND = {"error": {"code": "not_found", "message": "Not Found", "details": []}}


class LocalOnly:
    """Answers 404 to every request that is not from loopback without proxy headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not local_request(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await JSONResponse(NOT_FOUND, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)
