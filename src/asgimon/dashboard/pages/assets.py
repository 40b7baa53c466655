"""The dashboard's stylesheet and script, read once and answered from memory.

Starlette's ``StaticFiles`` stats and reads the file in a worker thread on every request,
which cost a first visit tens of milliseconds before the first paint; these are two small
files that never change while the process runs.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class Assets:
    def __init__(self, package: str = "asgimon.dashboard", folder: str = "static") -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for entry in files(package).joinpath(folder).iterdir():
            suffix = "." + entry.name.rpartition(".")[2]
            if entry.is_file() and suffix in TYPES:
                body = entry.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                self.files[entry.name] = (body, TYPES[suffix], etag)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        name = scope["path"].rpartition("/")[2]
        found = self.files.get(name)
        if found is None or scope.get("method") not in ("GET", "HEAD"):
            await Response("Not Found", status_code=404, media_type="text/plain")(
                scope, receive, send
            )
            return
        body, media_type, etag = found
        headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            await Response(status_code=304, headers=headers)(scope, receive, send)
            return
        await Response(body, media_type=media_type, headers=headers)(scope, receive, send)
