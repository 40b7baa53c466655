"""The query parameters a route takes: each known, each given once."""

from __future__ import annotations

from collections.abc import Set

from starlette.datastructures import QueryParams

from asgimon.analytics.ranges import BadQuery


def check_params(params: QueryParams, allowed: Set[str], where: str = "this endpoint") -> None:
    """:class:`BadQuery` naming the first parameter that is unknown or repeated."""
    for name in params:
        if name not in allowed:
            raise BadQuery(name, f"is not a parameter of {where}")
    for name in allowed:
        if len(params.getlist(name)) > 1:
            raise BadQuery(name, "give it once")
