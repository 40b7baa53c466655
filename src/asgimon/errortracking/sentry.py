"""Sentry's wire format read as asgimon's: envelopes and store bodies into error reports.

Sentry's SDKs (JavaScript, Go, Python…) send an *envelope* (``POST …/api/{id}/envelope/``):
a JSON header line, then items, each a JSON header line (``type``, optional ``length``) and
a payload. Items of type ``event`` are error events; every other type (transactions,
sessions, client reports, attachments) is accepted and left aside. The older ``store``
endpoint takes one event as the whole body. An event is mapped onto an
:class:`~asgimon.events.ErrorEvent` as asgimon's own capture would make it: its exception
chain and frames (the SDK's ``in_app`` kept), grouped by asgimon's fingerprint (or the
event's own ``fingerprint``), its release as the deployment, its request, tags and extra
scrubbed by the same rules, before anything is stored.

https://develop.sentry.dev/sdk/data-model/envelopes/ and …/event-payloads/
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from asgimon._validate import bounded_json, clean_text
from asgimon.events import MAX_MESSAGE, MAX_NAME, ErrorEvent

from .capture import (
    MAX_CHAIN,
    MAX_FRAMES,
    MAX_LINE,
    Rules,
    bounded_stack,
    exception_json,
    render,
)
from .grouping import DEFAULT, Frame, fingerprint
from .request import request_context, scrubbed_context

MAX_ITEMS = 100
LEVELS = {"fatal": "critical", "error": "high", "warning": "medium", "info": "low", "debug": "low"}
EVENT_ITEMS = frozenset({"event", "error"})


class BadEnvelope(ValueError):
    """The body is not what a Sentry SDK sends: refused whole, nothing stored."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _json_object(raw: bytes, field: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadEnvelope(field, "is not JSON") from None
    if not isinstance(value, dict):
        raise BadEnvelope(field, "must be a JSON object")
    return value


def envelope_events(body: bytes) -> tuple[str | None, list[dict[str, Any]]]:
    """The envelope's event id and its error event payloads, in order."""
    newline = body.find(b"\n")
    header = _json_object(body if newline < 0 else body[:newline], "envelope header")
    pos = len(body) if newline < 0 else newline + 1
    events: list[dict[str, Any]] = []
    items = 0
    while pos < len(body):
        if body[pos : pos + 1] == b"\n":  # a blank line between items
            pos += 1
            continue
        items += 1
        if items > MAX_ITEMS:
            raise BadEnvelope("items", f"at most {MAX_ITEMS} per envelope")
        end = body.find(b"\n", pos)
        item = _json_object(body[pos : len(body) if end < 0 else end], f"items[{items - 1}]")
        pos = len(body) if end < 0 else end + 1
        length = item.get("length")
        if length is not None:
            if isinstance(length, bool) or not isinstance(length, int) or length < 0:
                raise BadEnvelope(f"items[{items - 1}].length", "must be a whole number")
            if pos + length > len(body):
                raise BadEnvelope(f"items[{items - 1}].length", "runs past the end of the body")
            payload = body[pos : pos + length]
            pos += length
        else:
            end = body.find(b"\n", pos)
            payload = body[pos : len(body) if end < 0 else end]
            pos = len(body) if end < 0 else end
        if pos < len(body) and body[pos : pos + 1] == b"\n":
            pos += 1
        if item.get("type") in EVENT_ITEMS:
            events.append(_json_object(payload, f"items[{items - 1}] payload"))
    event_id = header.get("event_id")
    return (event_id if isinstance(event_id, str) else None), events


def _text(value: Any, limit: int) -> str:
    if isinstance(value, str):
        return clean_text(value, limit)
    if value is None:
        return ""
    return clean_text(json.dumps(value, default=str)[:limit], limit)


def _event_id(raw: Any) -> str:
    if raw is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise BadEnvelope("event_id", "must be 32 hex digits") from None


def _timestamp(raw: Any, now: float) -> float:
    if raw is None:
        return now
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            return float(raw)
        except OverflowError:
            raise BadEnvelope("timestamp", "is out of range") from None
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadEnvelope("timestamp", "must be epoch seconds or ISO 8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise BadEnvelope("timestamp", "must be epoch seconds or ISO 8601")


def _frame(raw: Any) -> Frame | None:
    if not isinstance(raw, Mapping):
        return None
    filename = raw.get("filename") or raw.get("abs_path") or ""
    if not isinstance(filename, str):
        filename = ""
    if filename.startswith("/") or (len(filename) > 2 and filename[1:3] in (":\\", ":/")):
        # An absolute path: its last parts say as much and give away less.
        filename = "/".join(filename.replace("\\", "/").split("/")[-2:])
    lineno = raw.get("lineno")
    module = raw.get("module") if isinstance(raw.get("module"), str) else None
    function = raw.get("function") if isinstance(raw.get("function"), str) else None
    return Frame(
        module=clean_text(module or filename or "?", MAX_NAME),
        function=clean_text(function or "?", MAX_NAME),
        filename=clean_text(filename, 400),
        lineno=lineno if isinstance(lineno, int) and not isinstance(lineno, bool) else 0,
        in_app=raw.get("in_app") is True,
        line=clean_text(raw["context_line"].strip(), MAX_LINE)
        if isinstance(raw.get("context_line"), str)
        else "",
    )


def _exceptions(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    found = event.get("exception")
    values = found.get("values") if isinstance(found, Mapping) else found
    if not isinstance(values, list):
        return []
    return [v for v in values if isinstance(v, Mapping)][-MAX_CHAIN:]


def _message(event: Mapping[str, Any]) -> tuple[str, str | None]:
    """The message and its template (a log entry's unformatted text), if any."""
    entry = event.get("logentry")
    message = event.get("message")
    if isinstance(entry, Mapping):
        template = entry.get("message")
        formatted = entry.get("formatted") or template
        return _text(formatted, MAX_MESSAGE), _text(template, MAX_MESSAGE) if template else None
    if isinstance(message, Mapping):
        return _text(message.get("formatted") or message.get("message"), MAX_MESSAGE), None
    return _text(message, MAX_MESSAGE), None


def _scope(request: Any) -> dict[str, Any] | None:
    """A Sentry ``request`` as an ASGI scope, for the same request context as asgimon's."""
    if not isinstance(request, Mapping):
        return None
    url = request.get("url") if isinstance(request.get("url"), str) else ""
    parts = urlsplit(url)
    headers_raw = request.get("headers") or {}
    pairs: list[tuple[str, str]] = []
    if isinstance(headers_raw, Mapping):
        pairs = [(str(k), _text(v, 2000)) for k, v in headers_raw.items()]
    elif isinstance(headers_raw, list):
        pairs = [
            (str(p[0]), _text(p[1], 2000))
            for p in headers_raw
            if isinstance(p, list | tuple) and len(p) == 2
        ]
    cookies = request.get("cookies")
    if isinstance(cookies, Mapping):
        pairs.append(("cookie", "; ".join(f"{k}={v}" for k, v in cookies.items())))
    elif isinstance(cookies, str) and cookies:
        pairs.append(("cookie", cookies))
    query = request.get("query_string", parts.query)
    if isinstance(query, Mapping):
        query = urlencode({str(k): str(v) for k, v in query.items()})
    elif isinstance(query, list):
        query = urlencode(
            [(str(p[0]), str(p[1])) for p in query if isinstance(p, list | tuple) and len(p) == 2]
        )
    method = request.get("method")
    return {
        "type": "http",
        "method": clean_text(method, 16) if isinstance(method, str) else "GET",
        "path": parts.path or "/",
        "query_string": str(query or "").encode("latin-1", "replace"),
        "headers": [
            (k.lower().encode("latin-1", "replace"), v.encode("latin-1", "replace"))
            for k, v in pairs
        ],
    }


def _endpoint(transaction: Any) -> str | None:
    if isinstance(transaction, str) and transaction.startswith("/") and " " not in transaction:
        return clean_text(transaction, 400)
    return None


def error_event(event: Mapping[str, Any], project_id: str, rules: Rules, now: float) -> ErrorEvent:
    """One Sentry event as an asgimon error report, scrubbed; BadEnvelope if it cannot be."""
    try:
        return _error_event(event, project_id, rules, now)
    except BadEnvelope:
        raise
    except Exception as exc:  # any shape the reading above did not foresee: a 400, not a 500
        raise BadEnvelope("event", f"could not be read ({type(exc).__name__})") from None


def _error_event(event: Mapping[str, Any], project_id: str, rules: Rules, now: float) -> ErrorEvent:
    scrubber = rules.scrubber.fork()
    scope = _scope(event.get("request"))
    request = request_context(scope, scrubber) if scope is not None else None
    if isinstance(event.get("request"), Mapping) and "data" in event["request"]:
        scrubber.collect(bounded_json(event["request"]["data"]))
    extra: dict[str, Any] = {}
    for key in ("tags", "extra"):
        given = event.get(key)
        if isinstance(given, list):
            # Sentry allows tags as [[key, value], ...]: keyed here, so their keys are judged.
            given = {str(p[0]): p[1] for p in given if isinstance(p, list | tuple) and len(p) == 2}
        if isinstance(given, Mapping):
            extra[key] = dict(given)
    scrubber.collect(bounded_json(extra))
    links = _exceptions(event)
    chain: list[dict[str, Any]] = []
    grouping: list[tuple[str, str, list[Frame]]] = []
    for link in reversed(links):  # Sentry lists the chain innermost first
        stack = link.get("stacktrace")
        raw_frames = stack.get("frames") if isinstance(stack, Mapping) else None
        frames = [f for f in map(_frame, raw_frames if isinstance(raw_frames, list) else []) if f][
            -MAX_FRAMES:
        ]
        kind = _text(link.get("type") or "Error", MAX_NAME)
        module = link.get("module")
        if isinstance(module, str) and module and module not in ("builtins", "__main__"):
            kind = clean_text(f"{module}.{kind}", MAX_NAME)
        value = _text(link.get("value"), MAX_MESSAGE)
        grouping.append((kind, value, frames))
        entries = []
        for f in frames:
            entry = f.to_json()
            entry["line"] = scrubber.text(f.line)
            entries.append(entry)
        chain.append(
            {
                "type": kind,
                "value": clean_text(scrubber.text(value), MAX_MESSAGE),
                "frames": entries,
            }
        )
    message, template = _message(event)
    if not chain:
        if not message:
            raise BadEnvelope("exception", "an event needs an exception or a message")
        error_type = "Message"
        text = clean_text(scrubber.text(message), MAX_MESSAGE)
        group_by: list[tuple[str, str, list[Frame]]] = [(error_type, template or message, [])]
        chain_json = ""
        stack = ""
    else:
        error_type = chain[0]["type"]
        text = chain[0]["value"] or clean_text(scrubber.text(message), MAX_MESSAGE)
        group_by = grouping
        chain_json = exception_json(chain)
        stack = bounded_stack(scrubber.echoes_out(render(chain)))
    custom = event.get("fingerprint")
    parts = [str(p) for p in custom] if isinstance(custom, list) and custom else None
    if parts == [DEFAULT]:
        parts = None
    mechanism = links[-1].get("mechanism") if links else None
    handled = not (isinstance(mechanism, Mapping) and mechanism.get("handled") is False)
    level = event.get("level")
    user = event.get("user")
    user_id = user.get("id") if isinstance(user, Mapping) else None
    release = event.get("release")
    context: dict[str, Any] = dict(extra)
    for key in ("environment", "platform", "server_name"):
        if isinstance(event.get(key), str):
            context[key] = clean_text(event[key], 200)
    sdk = event.get("sdk")
    if isinstance(sdk, Mapping) and isinstance(sdk.get("name"), str):
        context["sdk"] = clean_text(f"{sdk.get('name')}/{sdk.get('version', '')}", 200)
    if isinstance(event.get("request"), Mapping) and "data" in event["request"]:
        context["request_data"] = event["request"]["data"]
    return ErrorEvent(
        id=_event_id(event.get("event_id")),
        project_id=project_id,
        timestamp=_timestamp(event.get("timestamp"), now),
        error_type=error_type,
        message=text,
        stack=stack,
        exception=chain_json or None,
        fingerprint=fingerprint(group_by, parts),
        severity=LEVELS.get(level, "high") if isinstance(level, str) else "high",
        handled=handled,
        endpoint=_endpoint(event.get("transaction")),
        method=scope["method"] if scope is not None else None,
        user_id=clean_text(str(user_id), 200) if user_id not in (None, "") else None,
        request_id=None,
        deployment_id=clean_text(release, 128) if isinstance(release, str) and release else None,
        context=scrubbed_context(scrubber, context, request),
    )
