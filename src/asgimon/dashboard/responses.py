"""The API's error answers, all in one shape: ``{"error": {code, message, details}}``."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgimon.analytics.ranges import BadQuery
from asgimon.errors import StorageError

log = logging.getLogger("asgimon.dashboard")


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or []}},
        status_code=status,
        headers=headers,
    )


def storage_unavailable(exc: StorageError) -> JSONResponse:
    # The driver's words (hosts, ports) stay in the server log.
    log.warning("asgimon: the analytics API could not read storage: %s", exc)
    return error_response(503, "storage_unavailable", "storage is unavailable; retry later")


def bad_query(exc: BadQuery) -> JSONResponse:
    return error_response(
        422, "invalid_query", str(exc), [{"field": exc.field, "message": exc.message}]
    )


def forbidden(project_id: str) -> JSONResponse:
    return error_response(
        403,
        "forbidden_project",
        "this principal may not see the project",
        [{"field": "projectId", "message": f"not among the caller's projects: {project_id!r}"}],
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """404s and 405s in the API's own error shape, not Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("asgimon: the analytics API failed on %s", request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the analytics API failed; see the server log")
