"""Serving the dashboard at the mount path of any ASGI app (``Monitor.wrap``)."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Receive, Scope, Send


class Mounted:
    """Routes ``mount_path`` to the dashboard and everything else to the host app."""

    def __init__(self, app: ASGIApp, mount_path: str, dashboard: ASGIApp) -> None:
        self.app = app
        self.mount_path = mount_path
        self.dashboard = dashboard

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Hands back the chosen app's coroutine rather than awaiting it: every request of
        # the host passes here, and a frame of our own would be created and resumed for each.
        if scope["type"] in ("http", "websocket"):
            root = scope.get("root_path", "")
            path: str = scope["path"]
            route_path = path[len(root) :] if root and path.startswith(root) else path
            mount = self.mount_path
            if route_path == mount or route_path.startswith(mount + "/"):
                return self.dashboard({**scope, "root_path": root + mount}, receive, send)
        return self.app(scope, receive, send)
