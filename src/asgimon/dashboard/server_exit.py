"""Telling the live streams that the server is shutting down, before it waits for them.

uvicorn (and gunicorn's uvicorn workers) wait for every open response to end before the
lifespan shutdown, so a stream that ended only with the monitor would hold the worker until
its own lifetime ran out. Where uvicorn serves, its exit handler is wrapped, once per
process, to tell every stream first; under any other server a stream ends within its
lifetime (:data:`asgimon.dashboard.stream.STREAM_LIFETIME_S`).
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from typing import Any, Protocol

WRAPPED = "_asgimon_wrapped"


class Listener(Protocol):
    def server_exiting(self) -> None: ...


_listeners: weakref.WeakSet[Any] = weakref.WeakSet()


def listen(listener: Listener) -> None:
    _listeners.add(listener)
    server_module = sys.modules.get("uvicorn.server")
    server = getattr(server_module, "Server", None)
    original = getattr(server, "handle_exit", None)
    if server is None or original is None or getattr(original, WRAPPED, False):
        return

    def handle_exit(self: Any, sig: int, frame: Any) -> None:
        for each in list(_listeners):
            # A listener's failure must not stop the server's exit.
            with contextlib.suppress(Exception):
                each.server_exiting()
        original(self, sig, frame)

    setattr(handle_exit, WRAPPED, True)
    server.handle_exit = handle_exit
