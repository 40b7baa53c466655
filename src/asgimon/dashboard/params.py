"""What a route reads from its URL, checked: its query parameters (each known, each given
once) and the project it names."""

from __future__ import annotations

import json
from collections.abc import Set
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request

from asgimon._validate import project_id_problem
from asgimon.analytics.ranges import BadQuery

MAX_BODY = 4096


def check_params(params: QueryParams, allowed: Set[str], where: str = "this endpoint") -> None:
    """:class:`BadQuery` naming the first parameter that is unknown or repeated."""
    for name in params:
        if name not in allowed:
            raise BadQuery(name, f"is not a parameter of {where}")
    for name in allowed:
        if len(params.getlist(name)) > 1:
            raise BadQuery(name, "give it once")


def project_id_of(request: Request) -> str:
    """The ``{project_id}`` of the path; :class:`BadQuery` if it is no project id."""
    project_id: str = request.path_params["project_id"]
    problem = project_id_problem(project_id)
    if problem is not None:
        raise BadQuery("projectId", problem)
    return project_id


async def json_body(
    request: Request, allowed: frozenset[str] | None, limit: int = MAX_BODY
) -> dict[str, Any]:
    """A small JSON object body (empty: ``{}``) whose every key is in ``allowed`` (any key
    with None); :class:`BadQuery` naming what is wrong."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise BadQuery("body", f"must be at most {limit} bytes")
    if not raw.strip():
        return {}
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise BadQuery("Content-Type", "must be application/json")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadQuery("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadQuery("body", "must be a JSON object")
    for key in body:
        if allowed is not None and key not in allowed:
            raise BadQuery(key, "is not a field of this request")
    return body
