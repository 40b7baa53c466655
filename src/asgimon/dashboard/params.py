"""What a route reads from its URL, checked: its query parameters (each known, each given
once) and the project it names."""

from __future__ import annotations

from collections.abc import Set

from starlette.datastructures import QueryParams
from starlette.requests import Request

from asgimon._validate import project_id_problem
from asgimon.analytics.ranges import BadQuery


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
