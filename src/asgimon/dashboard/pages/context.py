"""What every page reads from its URL: the project, the range and the filters, checked."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request

from asgimon._validate import project_id_problem
from asgimon.analytics.ranges import DEFAULT_RANGE, RANGES, BadQuery, TimeRange, parse_range
from asgimon.dashboard.guard import mount_root, principal_of
from asgimon.dashboard.params import check_params

# Which filters each page takes, and the values each may have (None: free text, bounded).
FILTER_CHOICES: dict[str, tuple[str, ...] | None] = {
    # Deployments' and builds' outcomes; the errors page offers groups' states instead.
    "status": ("success", "failure", "unresolved", "resolved", "ignored", "regressed"),
    "severity": ("critical", "high", "medium", "low"),
    "type": None,
    "endpoint": None,
    "deployment": None,
}
MAX_FILTER_LEN = 256
KNOWN = frozenset({"project", "range", "start", "end", "sort", "method", *FILTER_CHOICES})


class UnknownProject(Exception):
    def __init__(self, project_id: str) -> None:
        super().__init__(project_id)
        self.project_id = project_id


@dataclass(frozen=True)
class PageContext:
    request: Request
    project_id: str
    projects: tuple[str, ...]  # those the caller may see, for the switcher
    span: TimeRange
    now: float
    range_name: str | None  # None for an explicit start/end
    filters: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return mount_root(self.request.scope)

    @property
    def here(self) -> str:
        """This page's path under the mount."""
        path = self.request.url.path
        return path[len(self.base) :] if path.startswith(self.base) else path

    def url(self, page: str, **overrides: str | None) -> str:
        """The URL of ``page`` keeping this project, range and filters, with ``overrides``."""
        params: dict[str, str] = {"project": self.project_id}
        if self.range_name is not None:
            params["range"] = self.range_name
        else:
            params.update(
                {
                    k: self.request.query_params[k]
                    for k in ("start", "end")
                    if k in self.request.query_params
                }
            )
        params.update(self.filters)
        for k, v in overrides.items():
            if v is None:
                params.pop(k, None)
            else:
                params[k] = v
        return f"{self.base}/{page.lstrip('/')}?{urlencode(params)}"


async def page_context(request: Request, known_projects: list[str], default: str) -> PageContext:
    """The context of a page request; :class:`BadQuery` or :class:`UnknownProject` if wrong."""
    q: Mapping[str, str] = request.query_params
    check_params(request.query_params, KNOWN, "this page")
    principal = principal_of(request)
    visible = sorted({p for p in known_projects if principal.can_see(p)} | set(principal.projects))
    if principal.admin and default not in visible:
        visible = sorted({*visible, default})
    # With no project asked for: the configured one if anything was recorded for it (or if
    # nothing was recorded at all), else the first the caller may see.
    fallback = default if default in known_projects or not visible else visible[0]
    if not principal.can_see(fallback):
        fallback = visible[0] if visible else default
    project = q.get("project") or fallback
    problem = project_id_problem(project)
    if problem is not None:
        raise BadQuery("project", problem)
    if not principal.can_see(project) or (project not in visible):
        raise UnknownProject(project)
    now = time.time()
    span = parse_range(q, now)
    range_name = None if ("start" in q or "end" in q) else q.get("range", DEFAULT_RANGE)
    filters: dict[str, str] = {}
    for name, choices in FILTER_CHOICES.items():
        value = q.get(name)
        if value is None or value == "":
            continue
        if choices is not None and value not in choices:
            raise BadQuery(name, "must be one of " + ", ".join(choices))
        if len(value) > MAX_FILTER_LEN:
            raise BadQuery(name, f"at most {MAX_FILTER_LEN} characters")
        filters[name] = value
    return PageContext(request, project, tuple(visible), span, now, range_name, filters)


RANGE_NAMES = tuple(RANGES)
