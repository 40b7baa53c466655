"""Sentry's SDKs as clients: ``POST {mount}/api/{id}/envelope/`` and ``…/store/``.

A DSN ``http://PUBLIC_KEY@host/analytics/1`` makes an SDK post to these paths, the key in
``X-Sentry-Auth`` (or ``?sentry_key=`` from browsers). The key names the project
(``ERROR_SENTRY_KEYS``); the number in the DSN is any whole number, for the SDKs' sake.
Bodies may be gzip- or deflate-compressed (and brotli, where the ``brotli`` package is
installed); compressed and decompressed, they are held to ``ANALYTICS_INGEST_MAX_BYTES``.
An envelope with any bad event is refused whole with a 400 and stores nothing.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from typing import Protocol

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from asgimon.errors import InvalidEventError, StorageError
from asgimon.errortracking.capture import Rules
from asgimon.errortracking.sentry import BadEnvelope, envelope_events, error_event
from asgimon.events import Event
from asgimon.settings import Settings
from asgimon.storage.base import WriteResult

from .guard import principal_of
from .responses import error_response, storage_unavailable

# Browsers' SDKs post cross-origin; the key they send is public by design.
CORS = {"Access-Control-Allow-Origin": "*"}


class Writer(Protocol):
    async def write_through(self, events: Sequence[Event]) -> WriteResult: ...


def _refuse(status: int, field: str, message: str) -> JSONResponse:
    return error_response(
        status,
        "invalid_envelope" if status == 400 else "refused",
        f"{field}: {message}",
        [{"field": field, "message": message}],
        headers=CORS,
    )


def _decode(raw: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "deflate", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(raw, limit + 1)
        except zlib.error:
            raise BadEnvelope("Content-Encoding", f"the body is not valid {encoding}") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _TooLarge
        return out
    if encoding == "br":
        try:
            import brotli  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise BadEnvelope("Content-Encoding", "br needs the brotli package here") from None
        decompressor = brotli.Decompressor()
        try:
            # Bounded as it inflates, like gzip: a small body must not take the memory.
            out = decompressor.process(raw, output_buffer_limit=limit + 1)
        except TypeError:
            raise BadEnvelope("Content-Encoding", "br needs brotli 1.1 or later here") from None
        except brotli.error:
            raise BadEnvelope("Content-Encoding", "the body is not valid br") from None
        if len(out) > limit or not decompressor.is_finished():
            raise _TooLarge
        return bytes(out)
    raise BadEnvelope("Content-Encoding", "must be gzip, deflate, br or none")


class _TooLarge(Exception):
    pass


class SentryIngest:
    def __init__(self, settings: Settings, rules: Rules, writer: Writer) -> None:
        self.settings = settings
        self.rules = rules
        self.writer = writer
        self.refused = 0

    async def envelope(self, request: Request) -> Response:
        return await self._ingest(request, envelope=True)

    async def store(self, request: Request) -> Response:
        return await self._ingest(request, envelope=False)

    async def _ingest(self, request: Request, *, envelope: bool) -> Response:
        limit = self.settings.ingest_max_bytes
        (project,) = principal_of(request).projects
        encoding = request.headers.get("content-encoding", "").strip().lower()
        try:
            raw = b""
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > limit:
                    raise _TooLarge
            body = _decode(raw, encoding, limit)
            if envelope:
                event_id, payloads = envelope_events(body)
            else:
                try:
                    payload = json.loads(body)
                except (ValueError, RecursionError):
                    raise BadEnvelope("body", "is not JSON") from None
                if not isinstance(payload, dict):
                    raise BadEnvelope("body", "must be a JSON object")
                event_id, payloads = payload.get("event_id"), [payload]
            now = time.time()
            events = [error_event(p, project, self.rules, now) for p in payloads]
            for ev in events:
                ev.validate(max_age_s=self.settings.error_log_retention_days * 86_400.0)
        except _TooLarge:
            self.refused += 1
            return _refuse(413, "body", f"over {limit} bytes")
        except BadEnvelope as bad:
            self.refused += 1
            return _refuse(400, bad.field, bad.message)
        except InvalidEventError as bad:
            self.refused += 1
            first = bad.errors[0]
            return _refuse(400, first.field, first.message)
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            if events and self.settings.error_tracking_enabled:
                await self.writer.write_through(events)
        except StorageError as exc:
            response = storage_unavailable(exc)
            response.headers.update(CORS)
            return response
        answer = event_id if isinstance(event_id, str) else (events[0].id if events else None)
        return JSONResponse({"id": answer}, headers=CORS)
