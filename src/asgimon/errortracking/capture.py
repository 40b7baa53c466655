"""Turning an exception or a message into an :class:`ErrorEvent`: bounded, scrubbed, grouped.

Everything the event holds passes the report's :class:`Scrubber` first: the request's
sensitive headers, cookies and query values are filtered and remembered, so that the same
values are then blanked wherever else they appear (the message, the stack, local variables,
the context). Frames keep a relative file name (to the working directory for the app's own
code, to the package root for a library's), module, function and line; local variables only
when enabled, and scrubbed like the rest.
"""

from __future__ import annotations

import contextlib
import functools
import json
import linecache
import os
import sys
import sysconfig
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any

from asgimon._validate import bounded_json, clean_text
from asgimon.events import MAX_EXCEPTION, MAX_MESSAGE, MAX_NAME, MAX_STACK, ErrorEvent

from .grouping import Frame, fingerprint
from .request import request_context, scrubbed_context
from .scrub import FILTERED, Scrubber

MAX_FRAMES = 50
MAX_CHAIN = 5
MAX_LOCALS = 20
MAX_LINE = 200

_LIBRARY_ROOTS = tuple(
    sorted(
        {
            os.path.normcase(os.path.realpath(p))
            for p in {
                sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")
            }
        },
        key=len,
        reverse=True,
    )
)


@functools.lru_cache(maxsize=4096)
def where(filename: str) -> tuple[str, bool]:
    """A frame's file as stored (relative, never absolute) and whether it is the app's own."""
    if filename.startswith("<"):
        return filename, False
    path = os.path.normcase(os.path.realpath(filename))
    for root in _LIBRARY_ROOTS:
        if path.startswith(root + os.sep):
            return os.path.relpath(path, root), False
    marker = os.sep + "site-packages" + os.sep
    if marker in path:
        return path.split(marker, 1)[1], False
    try:
        rel = os.path.relpath(path, os.getcwd())
    except ValueError:  # another drive
        rel = os.path.basename(path)
    if rel.startswith(".."):
        rel = os.path.basename(path)
    return rel, True


def type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )


@dataclass(slots=True)
class Rules:
    """How reports are made, from the settings: the scrubber and what to keep."""

    scrubber: Scrubber = field(default_factory=Scrubber)
    include_locals: bool = False
    release: str | None = None


_REPORTED = "__asgimon_reported__"


def reported(exc: BaseException) -> bool:
    """Whether this exception was reported already (by host code, then again by the
    middleware as it escapes): one report per exception object."""
    try:
        return getattr(exc, _REPORTED, False) is True
    except Exception:  # an exception class whose __getattr__ fails: report it again
        return False


def _mark(exc: BaseException) -> None:
    # An exception type that takes no attributes is reported each time it is met.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(exc, _REPORTED, True)


def chain_of(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first, bounded and safe from cycles."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(chain) < MAX_CHAIN:
        seen.add(id(current))
        chain.append(current)
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    return chain


def _locals(frame: FrameType, scrubber: Scrubber) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in list(frame.f_locals.items())[:MAX_LOCALS]:
        if scrubber.sensitive(name):
            scrubber.remember(_safe_repr(value))
            if isinstance(value, str):
                scrubber.remember(value)
            out[name] = FILTERED
        else:
            out[name] = _safe_repr(value)
    return out


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return clean_text(text, MAX_LINE)


def frames_of(tb: TracebackType | None, rules: Rules) -> tuple[list[Frame], list[dict[str, str]]]:
    walked = list(traceback.walk_tb(tb))[-MAX_FRAMES:]
    frames: list[Frame] = []
    local_vars: list[dict[str, str]] = []
    for frame, lineno in walked:
        code = frame.f_code
        filename, in_app = where(code.co_filename)
        module = frame.f_globals.get("__name__")
        line = linecache.getline(code.co_filename, lineno, frame.f_globals).strip()
        frames.append(
            Frame(
                module=module if isinstance(module, str) else filename,
                function=getattr(code, "co_qualname", code.co_name),
                filename=filename,
                lineno=lineno or 0,
                in_app=in_app,
                line=clean_text(line, MAX_LINE),
            )
        )
        local_vars.append(_locals(frame, rules.scrubber) if rules.include_locals and in_app else {})
    return frames, local_vars


def render(chain: Sequence[dict[str, Any]]) -> str:
    """The stack as Python prints it: the root cause first, the exception raised last."""
    blocks = []
    for i, exc in enumerate(reversed(chain)):
        lines = []
        if i:
            lines.append("\nDuring handling of the above exception, another exception occurred:\n")
        if exc["frames"]:
            lines.append("Traceback (most recent call last):")
        for f in exc["frames"]:
            lines.append(f'  File "{f["filename"]}", line {f["lineno"]}, in {f["function"]}')
            if f["line"]:
                lines.append(f"    {f['line']}")
        lines.append(f"{exc['type']}: {exc['value']}" if exc["value"] else exc["type"])
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def bounded_stack(text: str) -> str:
    return text if len(text) <= MAX_STACK else "…" + text[-(MAX_STACK - 1) :]


def exception_json(chain: list[dict[str, Any]]) -> str:
    text = json.dumps(chain, separators=(",", ":"), ensure_ascii=False)
    # Locals go first, then the oldest causes, then the outer frames: the failing line stays.
    while len(text) > MAX_EXCEPTION:
        if any(f.get("vars") for exc in chain for f in exc["frames"]):
            for exc in chain:
                for f in exc["frames"]:
                    f.pop("vars", None)
        elif len(chain) > 1:
            chain.pop()
        elif len(chain[0]["frames"]) > 1:
            del chain[0]["frames"][: max(1, len(chain[0]["frames"]) // 2)]
        else:
            return ""
        text = json.dumps(chain, separators=(",", ":"), ensure_ascii=False)
    return text


@dataclass(slots=True)
class Where:
    """Where an error happened: its project, request and deployment, as far as known."""

    project_id: str
    timestamp: float
    endpoint: str | None = None
    method: str | None = None
    user_id: str | None = None
    request_id: str | None = None
    deployment_id: str | None = None
    scope: Mapping[str, Any] | None = None
    function_id: str | None = None  # the tracked function it happened in


def _begin(
    at: Where, rules: Rules, context: Mapping[str, Any] | None
) -> tuple[Scrubber, dict[str, Any] | None]:
    """A report's own scrubber, having learnt the request's and the context's secrets (so
    that they are blanked in everything cleaned after), and the request's description."""
    scrubber = rules.scrubber.fork()
    request = request_context(at.scope, scrubber) if at.scope is not None else None
    if context:
        scrubber.collect(bounded_json(dict(context)))
    return scrubber, request


def exception_event(
    exc: BaseException,
    at: Where,
    rules: Rules,
    *,
    severity: str = "high",
    handled: bool = True,
    context: Mapping[str, Any] | None = None,
    fingerprint_parts: Sequence[str] | str | None = None,
) -> ErrorEvent:
    _mark(exc)
    scrubber, request = _begin(at, rules, context)
    # Every link's frames (and locals) first: a secret a local variable held is then
    # blanked in every message of the chain, not only in the ones after it.
    links = [(link, *frames_of(link.__traceback__, rules)) for link in chain_of(exc)]
    chain: list[dict[str, Any]] = []
    grouping: list[tuple[str, str, list[Frame]]] = []
    for link, frames, local_vars in links:
        kind = clean_text(type_name(link), MAX_NAME)
        try:
            raw_message = str(link)
        except Exception:
            raw_message = f"<unprintable {type(link).__name__}>"
        grouping.append((kind, raw_message, frames))
        entries = []
        for f, v in zip(frames, local_vars, strict=True):
            entry = f.to_json()
            entry["line"] = scrubber.text(f.line)
            if v:
                entry["vars"] = {k: scrubber.text(val) for k, val in v.items()}
            entries.append(entry)
        chain.append(
            {
                "type": kind,
                "value": clean_text(scrubber.text(raw_message), MAX_MESSAGE),
                "frames": entries,
            }
        )
    custom = fingerprint_parts
    if custom is None and context and isinstance(context.get("fingerprint"), str | list):
        custom = context["fingerprint"]
    return _event(
        at,
        rules,
        scrubber,
        error_type=chain[0]["type"],
        message=chain[0]["value"],
        stack=render(chain),
        exception=exception_json(chain),
        group=fingerprint(grouping, custom),
        severity=severity,
        handled=handled,
        context=scrubbed_context(scrubber, context, request),
    )


def message_event(
    message: str,
    at: Where,
    rules: Rules,
    *,
    severity: str = "medium",
    error_type: str = "Message",
    context: Mapping[str, Any] | None = None,
    fingerprint_parts: Sequence[str] | str | None = None,
    stack: Iterable[Frame] = (),
    template: str | None = None,
) -> ErrorEvent:
    """A report with no exception: a message, a failing response, a log record.

    It is grouped by its ``template`` (a log record's unformatted message, say) or else by
    the message with its numbers and ids stripped; ``stack`` is shown, not grouped by: one
    call site reports many different messages."""
    scrubber, request = _begin(at, rules, context)
    frames = list(stack)
    text = clean_text(scrubber.text(message), MAX_MESSAGE)
    chain = [{"type": error_type, "value": text, "frames": [f.to_json() for f in frames]}]
    return _event(
        at,
        rules,
        scrubber,
        error_type=clean_text(error_type, MAX_NAME),
        message=text,
        stack=render(chain) if frames else "",
        exception=exception_json(chain) if frames else "",
        group=fingerprint([(error_type, template or message, [])], fingerprint_parts),
        severity=severity,
        handled=True,
        context=scrubbed_context(scrubber, context, request),
    )


def _event(
    at: Where,
    rules: Rules,
    scrubber: Scrubber,
    *,
    error_type: str,
    message: str,
    stack: str,
    exception: str,
    group: str,
    severity: str,
    handled: bool,
    context: dict[str, Any],
) -> ErrorEvent:
    if at.function_id is not None:
        context = {**context, "function_id": clean_text(at.function_id, MAX_NAME)}
    return ErrorEvent(
        project_id=at.project_id,
        timestamp=at.timestamp,
        error_type=error_type,
        message=message,
        # Rendered from the chain's parts, each cleaned already.
        stack=bounded_stack(scrubber.echoes_out(stack)),
        exception=exception or None,
        fingerprint=group,
        severity=severity,
        handled=handled,
        endpoint=at.endpoint,
        method=at.method,
        user_id=at.user_id,
        request_id=at.request_id,
        deployment_id=at.deployment_id or rules.release,
        context=context,
    )


def current_stack(skip: int = 1) -> list[Frame]:
    """The caller's stack as frames (for a message captured outside an exception)."""
    frame: FrameType | None = sys._getframe(skip + 1)
    out: list[Frame] = []
    while frame is not None and len(out) < MAX_FRAMES:
        code = frame.f_code
        filename, in_app = where(code.co_filename)
        module = frame.f_globals.get("__name__")
        out.append(
            Frame(
                module=module if isinstance(module, str) else filename,
                function=getattr(code, "co_qualname", code.co_name),
                filename=filename,
                lineno=frame.f_lineno or 0,
                in_app=in_app,
                line=clean_text(
                    linecache.getline(code.co_filename, frame.f_lineno, frame.f_globals).strip(),
                    MAX_LINE,
                ),
            )
        )
        frame = frame.f_back
    out.reverse()
    return out
