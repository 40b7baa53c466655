"""What an error report says of its request and its context, scrubbed.

The request: method, path, query, headers and cookie names. Every header and query value is
looked at, so that each secret is remembered by the report's scrubber and blanked wherever
it is echoed; only the first few are kept. Cookie values are never kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from asgimon._validate import MAX_CONTEXT_BYTES, bounded_json, clean_text

from .scrub import FILTERED, Scrubber

MAX_HEADERS = 40
MAX_QUERY = 50


def request_context(scope: Mapping[str, Any], scrubber: Scrubber) -> dict[str, Any]:
    """What an error report says of its request: method, path, query, headers and cookie
    names, scrubbed. Cookie values are never kept: each is a secret until shown otherwise."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    # Every header and query value is looked at, so that each secret is remembered (and
    # blanked wherever it is echoed); only the first few are kept.
    for raw_name, raw_value in scope.get("headers") or ():
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        keep = len(headers) < MAX_HEADERS
        if name == "cookie":
            for part in value.split(";"):
                key, _, val = part.strip().partition("=")
                if key:
                    if len(cookies) < MAX_HEADERS:
                        cookies.append(clean_text(key, 100))
                    scrubber.remember(val)
            scrubber.remember(value)
            if keep:
                headers[name] = FILTERED
        elif scrubber.sensitive(name):
            scrubber.remember(value)
            for word in value.split():
                scrubber.remember(word)
            if keep:
                headers[name] = FILTERED
        elif keep:
            headers[name] = clean_text(value, 500)
    query: dict[str, str] = {}
    raw_query = scope.get("query_string") or b""
    for key, val in parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True):
        keep = len(query) < MAX_QUERY
        if scrubber.sensitive(key):
            scrubber.remember(val)
            if keep:
                query[clean_text(key, 100)] = FILTERED
        elif keep:
            query[clean_text(key, 100)] = clean_text(val, 500)
    return {
        "method": "WS" if scope.get("type") == "websocket" else scope.get("method"),
        "path": clean_text(str(scope.get("path", "")), 500),
        "query": query,
        "headers": headers,
        "cookies": cookies,
    }


def scrubbed_context(
    scrubber: Scrubber, context: Mapping[str, Any] | None, request: dict[str, Any] | None
) -> dict[str, Any]:
    given = bounded_json(dict(context or {}))
    out: dict[str, Any] = scrubber.mapping(given) if isinstance(given, dict) else {}
    if request is not None:
        out["request"] = {
            k: scrubber.value(v) if k in ("path", "query", "headers") else v
            for k, v in request.items()
        }
    # Over the bound, what the host added goes before the request's own description.
    if len(json.dumps(out, separators=(",", ":"))) > MAX_CONTEXT_BYTES:
        out = {"request": out["request"]} if "request" in out else {}
        if len(json.dumps(out, separators=(",", ":"))) > MAX_CONTEXT_BYTES:
            out = {}
        out["truncated"] = True
    return out
