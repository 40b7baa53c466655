"""The pages' routes: each :class:`~asgimon.dashboard.pages.views.Page` rendered from its
template, the sign-in forms, and the static files, all behind the API's guard."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from asgimon.alerts.engine import AlertEngine
from asgimon.analytics.query import Query
from asgimon.analytics.ranges import BadQuery
from asgimon.dashboard.auth import SESSION_COOKIE, Authenticator, cookie_value
from asgimon.dashboard.guard import mount_root
from asgimon.dashboard.inbox import Inbox, firing
from asgimon.errors import StorageError
from asgimon.ratelimit.host import HostLimits
from asgimon.settings import Settings
from asgimon.storage.base import Storage

from . import csrf
from .alert_forms import PAGE_ERRORS, AlertForms
from .alerts import AlertsPage
from .assets import Assets
from .context import FILTER_CHOICES, RANGE_NAMES, PageContext, UnknownProject, page_context
from .formats import FILTERS
from .group_forms import GroupForms
from .headers import STYLESHEET
from .overview import OVERVIEW
from .ratelimits import OverrideForms, ratelimits_page
from .signin import SignIn
from .streamed import settle, shell, stream
from .views import PAGES, Page

log = logging.getLogger("asgimon.dashboard")
NO_STORE = {"Cache-Control": "no-store"}

MakeQuery = Callable[[PageContext, str], Query]


class Pages:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        query: Callable[[Request, str, Any, float], Query],
        authn: Authenticator,
        limits: HostLimits,
        *,
        alerts: AlertEngine | None = None,
        inbox: Inbox | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self._query = query
        self.env = Environment(
            loader=PackageLoader("asgimon.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(FILTERS)
        self.signin = SignIn(authn, self.render)
        self.group_forms = GroupForms(storage, self.problem)
        self.override_forms = OverrideForms(limits, self.problem)
        self.inbox = inbox
        self.alerts = AlertsPage(alerts)
        self.alert_forms = AlertForms(self.alerts, self, inbox)
        self.pages = (OVERVIEW, *PAGES, ratelimits_page(limits), self.alerts.page)

    def query(self, ctx: PageContext, project_id: str) -> Query:
        q = self._query(ctx.request, project_id, ctx.span, ctx.now)
        # A form's field left empty is no filter (the API, stricter, refuses one).
        return dataclasses.replace(q, params={k: v for k, v in q.params.items() if v})

    def values(self, request: Request, **values: Any) -> dict[str, Any]:
        """What every template is rendered with, and ``values``."""
        return {
            "root": mount_root(request.scope),
            "nav": [p for p in self.pages if p.name],
            "signed_in": _signed_in(request),
            "stylesheet": STYLESHEET,
            "csrf_token": csrf.token_of(request),
            **values,
        }

    def render(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        html = self.env.get_template(template).render(self.values(request, **values))
        return HTMLResponse(html, status_code=status, headers=NO_STORE)

    async def context(self, request: Request) -> PageContext:
        known = await self.storage.projects()
        return await page_context(request, known, self.settings.project_id)

    def handler(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            ctx: PageContext | None = None
            try:
                ctx = await self.context(request)
                figures = await page.view(ctx, self.query)
            except PAGE_ERRORS as exc:
                return self.refusal(request, ctx, exc)
            return await self.show(ctx, page, figures)

        return handle

    async def show(
        self, ctx: PageContext, page: Page, figures: dict[str, Any], status: int = 200
    ) -> Response:
        """The page with its figures, the header's notifications, and a CSRF token for
        its forms."""
        request = ctx.request
        token = csrf.issue(request) if page.forms else None
        try:
            shown = {
                "ctx": ctx,
                "page": page,
                "ranges": RANGE_NAMES,
                "filter_choices": FILTER_CHOICES,
                "inbox": await self.notifications(ctx),
                **({"csrf_token": token} if token is not None else {}),
            }
            response: Response
            if page.panels:
                parts = shell(self.env, page.template, self.values(request, **shown))
                body = stream(self.env, parts, page.panels, self.values(request, **shown), figures)
                response = StreamingResponse(body, status, NO_STORE, media_type="text/html")
            else:
                response = self.render(request, page.template, status, **shown, **figures)
        except BaseException:
            if page.panels:
                settle(figures.values())  # no panel will wait for these reads
            raise
        if token is not None:
            csrf.remember(response, request, token)
        if page.finish is not None:
            page.finish(request, response)
        return response

    async def notifications(self, ctx: PageContext) -> dict[str, Any] | None:
        """The header's in-app notifications: the newest of the projects the caller may
        see, this one's first (None while alerting is off)."""
        if self.inbox is None:
            return None
        try:
            notes = await self.inbox.latest([ctx.project_id, *ctx.projects])
        except StorageError as exc:
            log.warning("asgimon: the notifications could not be read: %s", exc)
            return {"notes": [], "firing": 0, "unavailable": True}
        return {"notes": notes, "firing": firing(notes), "unavailable": False}

    def refusal(self, request: Request, ctx: PageContext | None, exc: Exception) -> Response:
        """The problem page for what a page's query or storage raised."""
        if isinstance(exc, BadQuery):
            return self.problem(request, ctx, 422, f"{exc.field}: {exc.message}")
        if isinstance(exc, UnknownProject):
            return self.problem(
                request, ctx, 404, "no project of that name among those you may see"
            )
        log.warning("asgimon: a dashboard page could not read storage: %s", exc)
        return self.problem(request, ctx, 503, "storage is unavailable; retry shortly")

    def problem(
        self, request: Request, ctx: PageContext | None, status: int, message: str
    ) -> Response:
        return self.render(request, "problem.html", status, ctx=ctx, code=status, message=message)

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route(p.path, self.handler(p), methods=["GET", "HEAD"]) for p in self.pages
        ]
        routes += [
            Route("/errors/{fingerprint:path}", self.group_forms.post, methods=["POST"]),
            Route("/ratelimits/overrides", self.override_forms.post, methods=["POST"]),
            Route("/alerts", self.alert_forms.post, methods=["POST"]),
            Route("/signin", self.signin.get, methods=["GET", "HEAD"]),
            Route("/signin", self.signin.post, methods=["POST"]),
            Route("/signout", self.signin.signout, methods=["POST"]),
            Mount("/static", Assets(), name="static"),
        ]
        return routes


def _signed_in(request: Request) -> bool:
    return cookie_value(request.headers.get("cookie", ""), SESSION_COOKIE) is not None
