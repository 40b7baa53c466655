"""Turning an exception into an :class:`ErrorEvent`: bounded, without locals, fingerprinted.

The fingerprint groups occurrences of the same error: the exception type plus the
in-app frames (file name and function), never line numbers, so an edit above the failing
line does not split a group.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig
import traceback
from typing import Any

from ._validate import bounded_json, clean_text
from .events import MAX_MESSAGE, MAX_STACK, ErrorEvent

MAX_FRAMES = 50
_LIBRARY_ROOTS = tuple(
    os.path.normcase(os.path.realpath(p))
    for p in {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
)


@functools.lru_cache(maxsize=4096)
def is_in_app(filename: str) -> bool:
    """A frame belongs to the host app unless it is in the standard library or a package."""
    if filename.startswith("<"):
        return False
    path = os.path.normcase(os.path.realpath(filename))
    return not path.startswith(_LIBRARY_ROOTS) and "site-packages" not in path


def type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )


def fingerprint(error_type: str, frames: list[traceback.FrameSummary]) -> str:
    in_app = [f for f in frames if is_in_app(f.filename)] or frames
    parts = [error_type] + [f"{os.path.basename(f.filename)}:{f.name}" for f in in_app]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def error_event(
    exc: BaseException,
    *,
    project_id: str,
    timestamp: float,
    severity: str = "high",
    handled: bool = True,
    context: dict[str, Any] | None = None,
    endpoint: str | None = None,
    method: str | None = None,
) -> ErrorEvent:
    frames = traceback.extract_tb(exc.__traceback__, limit=-MAX_FRAMES)
    kind = type_name(exc)
    stack = "".join(traceback.format_list(frames))
    if len(stack) > MAX_STACK:
        stack = "…" + stack[-(MAX_STACK - 1) :]
    return ErrorEvent(
        project_id=project_id,
        timestamp=timestamp,
        error_type=clean_text(kind, 200),
        message=clean_text(str(exc), MAX_MESSAGE),
        stack=clean_text(stack, MAX_STACK),
        fingerprint=fingerprint(kind, frames),
        severity=severity,
        handled=handled,
        endpoint=endpoint,
        method=method,
        context=bounded_json(dict(context or {})),
    )
