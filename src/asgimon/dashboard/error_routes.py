"""The error groups' own routes: one group's detail, and resolve / unresolve / ignore.

    GET  /api/errors/{projectId}/groups/{fingerprint}
    POST /api/errors/{projectId}/groups/{fingerprint}/resolve      body: {} (or none)
    POST /api/errors/{projectId}/groups/{fingerprint}/unresolve    body: {} (or none)
    POST /api/errors/{projectId}/groups/{fingerprint}/ignore       body: {"until": ISO 8601}
                                                                   or {"count": N}, or {}
A change is one atomic step in storage, seen by every worker; a principal changes only its
own projects' groups. A bad body is a 4xx naming the field, and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgimon.analytics.common import instant
from asgimon.analytics.error_detail import error_group
from asgimon.analytics.query import Query
from asgimon.analytics.ranges import BadQuery, TimeRange, instant_param, parse_range
from asgimon.errors import StorageError
from asgimon.errortracking.actions import ACTIONS, change_group
from asgimon.errortracking.state import GroupState
from asgimon.storage.base import Storage

from .export import csv_response, export_table
from .guard import principal_of
from .params import check_params, json_body, project_id_of
from .responses import bad_query, error_response, forbidden, storage_unavailable
from .wire import to_wire

GROUP_PATH = "/api/errors/{project_id}/groups/{fingerprint}"
DETAIL_TABLES = ("occurrences", "endpoints", "deployments", "trend")
MAX_IGNORE_COUNT = 1_000_000_000
_INSTANTS = ("first_seen", "last_seen", "resolved_at", "ignore_until", "regressed_at", "changed_at")

MakeQuery = Callable[[Request, str, TimeRange, float], Query]


def _fingerprint(request: Request) -> str:
    fp: str = request.path_params["fingerprint"]
    if not 0 < len(fp) <= 64 or not fp.isascii() or not fp.isprintable() or ":" in fp:
        raise BadQuery("fingerprint", "must be 1 to 64 printable ASCII characters, no ':'")
    return fp


def state_figures(state: GroupState) -> dict[str, Any]:
    out = state.to_dict()
    for name in _INSTANTS:
        if out[name] is not None:
            out[name] = instant(out[name])
    return out


def _ignore_terms(body: dict[str, Any], now: float) -> tuple[float | None, int | None]:
    until = count = None
    if "until" in body:
        if not isinstance(body["until"], str):
            raise BadQuery("until", "must be an ISO 8601 timestamp with a UTC offset")
        until = instant_param("until", body["until"])
        if until <= now:
            raise BadQuery("until", "must be in the future")
    if "count" in body:
        raw = body["count"]
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_IGNORE_COUNT:
            raise BadQuery("count", f"must be an integer from 1 to {MAX_IGNORE_COUNT}")
        count = raw
    return until, count


class ErrorGroupsApi:
    """The handlers, bound to the store and the API's query maker."""

    def __init__(self, storage: Storage, query: MakeQuery) -> None:
        self.storage = storage
        self.query = query

    async def detail(self, request: Request) -> Response:
        now = time.time()
        try:
            project_id = project_id_of(request)
            if not principal_of(request).can_see(project_id):
                return forbidden(project_id)
            fingerprint = _fingerprint(request)
            check_params(request.query_params, {"range", "start", "end", "format", "table"})
            table = export_table(request, DETAIL_TABLES)
            span = parse_range(request.query_params, now)
            found = await error_group(self.query(request, project_id, span, now), fingerprint)
        except BadQuery as exc:
            return bad_query(exc)
        except StorageError as exc:
            return storage_unavailable(exc)
        if found is None:
            return _no_group(fingerprint)
        body = to_wire(found)
        if table is not None:
            return csv_response(body[table], f"{project_id}-error-group-{table}.csv")
        return JSONResponse(body)

    def action(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        assert name in ACTIONS

        async def handle(request: Request) -> Response:
            return await self._change(request, name)

        return handle

    async def _change(self, request: Request, action: str) -> Response:
        now = time.time()
        principal = principal_of(request)
        try:
            project_id = project_id_of(request)
            if not principal.can_see(project_id):
                return forbidden(project_id)
            fingerprint = _fingerprint(request)
            check_params(request.query_params, set())
            allowed = frozenset({"until", "count"} if action == "ignore" else ())
            body = await json_body(request, allowed)
            until, count = _ignore_terms(body, now) if action == "ignore" else (None, None)
            written = await change_group(
                self.storage,
                project_id,
                fingerprint,
                action,
                by=principal.subject,
                now=now,
                until=until,
                count=count,
            )
            if written is None:
                return _no_group(fingerprint)
        except BadQuery as exc:
            return bad_query(exc)
        except StorageError as exc:
            return storage_unavailable(exc)
        return JSONResponse(to_wire(state_figures(written)))


def _no_group(fingerprint: str) -> JSONResponse:
    return error_response(
        404,
        "not_found",
        "no error group with this fingerprint in this project",
        [{"field": "fingerprint", "message": f"unknown: {fingerprint!r}"}],
    )
