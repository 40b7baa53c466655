"""The error group page's form: resolve, unresolve or ignore, without JavaScript.

It posts back to the group's page with this browser's CSRF token and comes from this
origin (both checked), the principal being the signed-in one (the session cookie, which is
``SameSite=Strict``, is read for these posts). Done, it answers 303 to the group's page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from asgimon.dashboard.guard import mount_root, principal_of
from asgimon.errors import StorageError
from asgimon.errortracking.actions import ACTIONS, change_group
from asgimon.storage.base import Storage

from . import csrf
from .signin import read_form

IGNORE_FOR = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
IGNORE_COUNTS = ("10", "100", "1000")
Problem = Callable[[Request, Any, int, str], Response]


class GroupForms:
    def __init__(self, storage: Storage, problem: Problem) -> None:
        self.storage = storage
        self.problem = problem

    async def post(self, request: Request) -> Response:
        now = time.time()
        form = await read_form(request)
        if form is None:
            return self.problem(request, None, 400, "send the form on the group's page")
        refused = csrf.problem(request, form.get(csrf.FIELD))
        if refused is not None:
            return self.problem(request, None, 403, refused)
        principal = principal_of(request)
        project = request.query_params.get("project", "")
        fingerprint = request.path_params["fingerprint"]
        if not project or not principal.can_see(project):
            return self.problem(
                request, None, 404, "no project of that name among those you may see"
            )
        action = form.get("action", "")
        if action not in ACTIONS:
            return self.problem(request, None, 422, "action: must be resolve, unresolve or ignore")
        until = count = None
        if action == "ignore":
            choice = form.get("ignore", "forever")
            if choice in IGNORE_FOR:
                until = now + IGNORE_FOR[choice]
            elif choice.startswith("count:") and choice[6:] in IGNORE_COUNTS:
                count = int(choice[6:])
            elif choice != "forever":
                return self.problem(request, None, 422, "ignore: not one of the offered choices")
        try:
            written = await change_group(
                self.storage,
                project,
                fingerprint,
                action,
                by=principal.subject,
                now=now,
                until=until,
                count=count,
            )
        except StorageError:
            return self.problem(request, None, 503, "storage is unavailable; retry shortly")
        if written is None:
            return self.problem(request, None, 404, "no error group with this fingerprint")
        root = mount_root(request.scope)
        back = form.get("next", "")
        if back.startswith(("/errors?", "/errors/")) or back == "/errors":
            # Back to the list it was sent from (a path of this mount, never elsewhere).
            return RedirectResponse(root + back, status_code=303)
        keep = {k: v for k, v in request.query_params.items() if k in ("project", "range")}
        target = f"{root}/errors/{quote(fingerprint, safe='')}"
        return RedirectResponse(f"{target}?{urlencode(keep)}", status_code=303)
