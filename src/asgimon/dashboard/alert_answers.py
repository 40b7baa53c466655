"""The alert API's answers and path checks, shared by its rule and silence routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgimon._validate import project_id_problem
from asgimon.analytics.ranges import BadQuery
from asgimon.errors import FieldError, StorageError

from .responses import bad_query, error_response, storage_unavailable

Handler = Callable[[Request], Awaitable[Response]]


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def invalid(errors: list[FieldError]) -> JSONResponse:
    details = [{"field": e.field, "message": e.message} for e in errors]
    fields = ", ".join(d["field"] or "body" for d in details)
    return error_response(422, "invalid_alert", f"the alert rule is invalid: {fields}", details)


def not_found(what: str = "alert") -> JSONResponse:
    return error_response(
        404, "not_found", f"no {what} with this id", [{"field": "id", "message": "not found"}]
    )


def not_yours(message: str) -> JSONResponse:
    return error_response(
        403, "forbidden", message, [{"field": "projectId", "message": "not one of your projects"}]
    )


def conflict() -> JSONResponse:
    return error_response(
        409, "conflict", "the rule changed meanwhile; read it again and retry", []
    )


def guarded(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except BadQuery as exc:
            return bad_query(exc)
        except StorageError as exc:
            return storage_unavailable(exc)

    return guarded


def project_of(request: Request) -> str:
    project_id: str = request.path_params["id"]
    problem = project_id_problem(project_id)
    if problem is not None:
        raise BadQuery("id", problem)
    return project_id
