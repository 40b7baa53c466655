"""The Monitor's error tracking: the rules reports follow, and where each one happened."""

from __future__ import annotations

import time

from starlette.types import Scope

from asgimon._validate import clean_text
from asgimon.context import current
from asgimon.middleware import route_template
from asgimon.middleware.host import ScopeResolver
from asgimon.pipeline.records import user_id_of
from asgimon.settings import Settings
from asgimon.storage.base import ErrorGroups
from asgimon.tracking import current_function

from .capture import Rules, Where
from .lifecycle import Lifecycle
from .request import request_context
from .scrub import Scrubber


class ErrorTracker:
    """Rules from the settings, the group lifecycle, and :meth:`where` for each report."""

    def __init__(
        self,
        settings: Settings,
        storage: ErrorGroups,
        *,
        user_resolver: ScopeResolver | None = None,
        route_resolver: ScopeResolver | None = None,
        project_resolver: ScopeResolver | None = None,
    ) -> None:
        self.settings = settings
        self.rules = Rules(
            scrubber=Scrubber(settings.error_scrub_keys, defaults=settings.error_scrub_defaults),
            include_locals=settings.error_include_locals,
            release=settings.deployment_id,
        )
        self.lifecycle = Lifecycle(storage)
        self.failing_statuses = frozenset(
            n for lo, hi in settings.error_capture_statuses for n in range(lo, hi + 1)
        )
        self.user_resolver = user_resolver
        self.route_resolver = route_resolver
        self.project_resolver = project_resolver

    def where(
        self, scope: Scope | None, *, root0: str | None = None, project_id: str | None = None
    ) -> Where:
        """Where a report happened: inside ``scope`` (default: the current request), else
        the process. ``root0`` is the root_path the request arrived with."""
        ctx = current()
        if ctx is not None:
            ctx.reported = True
            if scope is None:
                scope, root0 = ctx.scope, ctx.root0
        pid = project_id or self.settings.project_id
        at = Where(project_id=pid, timestamp=time.time(), function_id=current_function.get())
        if scope is None:
            return at
        if project_id is None and self.project_resolver is not None:
            found = self.project_resolver(scope)
            if isinstance(found, str) and found:
                at.project_id = clean_text(found, 128)
        at.scope = scope
        at.method = "WS" if scope.get("type") == "websocket" else scope.get("method")
        at.endpoint = self._endpoint(scope, root0)
        user = self.user_resolver(scope) if self.user_resolver else scope.get("user")
        if isinstance(user, int):
            user = str(user)
        elif user is not None and not isinstance(user, str):
            user = user_id_of(user)
        at.user_id = clean_text(user, 200) if user else None
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                at.request_id = clean_text(value.decode("latin-1"), 200)
                break
        return at

    def scrub_text(self, text: str) -> str:
        """Text scrubbed as a report would be: the current request's secrets blanked too."""
        scrubber = self.rules.scrubber.fork()
        ctx = current()
        if ctx is not None and ctx.scope is not None:
            request_context(ctx.scope, scrubber)  # for what it remembers
        return scrubber.text(text)

    def _endpoint(self, scope: Scope, root0: str | None) -> str | None:
        if self.route_resolver is not None:
            found = self.route_resolver(scope)
            return clean_text(found, 400) if isinstance(found, str) else None
        route = scope.get("route")
        if route is None:
            return None
        root = scope.get("root_path", "") if root0 is None else root0
        return clean_text(route_template(route, root, scope.get("root_path", "")), 400)
