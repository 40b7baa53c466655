"""One of the API's own routes, described once for the router and the OpenAPI document."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Operation:
    """One of the API's own routes (not a project's analytics): where, how, what it answers.

    ``handler`` names the method that serves it, of the :class:`~asgimon.dashboard.app.Api`
    or (``owner="errors"``) of the
    :class:`~asgimon.dashboard.error_routes.ErrorGroupsApi`; a ``handler`` of the form
    ``action:NAME`` is that object's ``action(NAME)``; ``owner="alerts"`` is the
    :class:`~asgimon.dashboard.alert_routes.AlertsApi`, ``owner="metrics"`` the
    :class:`~asgimon.dashboard.metrics.PrometheusMetrics`.
    """

    path: str
    method: str
    handler: str
    summary: str
    answers: dict[int, tuple[str, Schema]]  # status -> (description, schema)
    errors: tuple[int, ...]  # statuses answered in the error shape
    request: Schema | None = None  # the JSON body it takes
    owner: str = "api"
    params: tuple[str, ...] = ()  # query parameters besides the path's
    query: tuple[Schema, ...] = ()  # its own query parameters, as OpenAPI describes them
    media_types: tuple[str, ...] = ("application/json",)  # of its answers

    @property
    def route(self) -> str:
        """The path as Starlette routes it: a fingerprint may hold "/" (ingested ones do)."""
        return self.path.replace("{fingerprint}", "{fingerprint:path}")
