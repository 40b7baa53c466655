"""Serving the dashboard at the mount path of any ASGI app (``Monitor.wrap``)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class Mounted:
    """Routes ``mount_path`` to the dashboard and everything else to the host app."""

    def __init__(self, app: ASGIApp, mount_path: str, dashboard: ASGIApp) -> None:
        self.app = app
        self.mount_path = mount_path
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            root = scope.get("root_path", "")
            path: str = scope["path"]
            route_path = path[len(root) :] if root and path.startswith(root) else path
            mount = self.mount_path
            if route_path == mount or route_path.startswith(mount + "/"):
                await self.dashboard({**scope, "root_path": root + mount}, receive, send)
                return
        await self.app(scope, receive, send)
