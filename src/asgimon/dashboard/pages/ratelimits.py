"""The rate-limits page: who the host's limit refused, where and how often, the limits as
configured, and (for admins) the per-key overrides with a form to add or remove one.

The form posts back to ``/ratelimits/overrides`` with this browser's CSRF token, from this
origin; done, it answers 303 to the page, where the change is already in force.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from asgimon.analytics.ratelimits import ratelimits
from asgimon.dashboard.guard import mount_root, principal_of
from asgimon.dashboard.ratelimit_routes import limits_figures
from asgimon.errors import StorageError
from asgimon.ratelimit.host import HostLimits, SubjectError

from . import csrf
from .context import PageContext
from .signin import read_form
from .views import Figures, MakeQuery, Page, deploy_markers, trend_chart

Problem = Callable[[Request, Any, int, str], Response]


def ratelimits_page(limits: HostLimits) -> Page:
    async def view(ctx: PageContext, query: MakeQuery) -> Figures:
        f, markers = await asyncio.gather(
            ratelimits(query(ctx, ctx.project_id)), deploy_markers(ctx, query)
        )
        chart = trend_chart(
            "Refused requests",
            f["denial_trend"],
            {"refused": "denied", "would refuse (shadow)": "shadow_denied"},
            markers,
            bars=True,
        )
        admin = principal_of(ctx.request).admin
        return {
            "f": f,
            "charts": [chart],
            "limits": limits_figures(limits),
            "admin": admin,
            "overrides": limits.overrides() if admin else [],
        }

    return Page("/ratelimits", "Rate limits", "ratelimits.html", view, forms=True)


class OverrideForms:
    def __init__(self, limits: HostLimits, problem: Problem) -> None:
        self.limits = limits
        self.problem = problem

    async def post(self, request: Request) -> Response:
        form = await read_form(request)
        if form is None:
            return self.problem(request, None, 400, "send the form on the rate-limits page")
        refused = csrf.problem(request, form.get(csrf.FIELD))
        if refused is not None:
            return self.problem(request, None, 403, refused)
        principal = principal_of(request)
        if not principal.admin:
            return self.problem(request, None, 403, "only an admin may change overrides")
        action = form.get("action", "")
        try:
            if action == "set":
                await self.limits.set_override(
                    form.get("subject", ""),
                    form.get("rate", ""),
                    note=form.get("note", ""),
                    by=principal.subject,
                )
            elif action == "remove":
                if not await self.limits.remove_override(form.get("subject", "")):
                    return self.problem(request, None, 404, "subject: holds no override")
            else:
                return self.problem(request, None, 422, "action: must be set or remove")
        except SubjectError as exc:
            return self.problem(request, None, 422, f"{exc.field}: {exc.message}")
        except StorageError:
            return self.problem(request, None, 503, "storage is unavailable; retry shortly")
        keep = {k: v for k, v in request.query_params.items() if k in ("project", "range")}
        return RedirectResponse(
            f"{mount_root(request.scope)}/ratelimits?{urlencode(keep)}", status_code=303
        )
