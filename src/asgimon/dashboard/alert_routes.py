"""The alert API: rules, their history, silences, a preview and a test send.

    POST   /api/alerts                          a rule (its projectId inside): 201
    GET    /api/alerts/{id}                     the rules of project {id}, with their state
    PATCH  /api/alerts/{id}                     change rule {id}: enable, threshold, channels…
    DELETE /api/alerts/{id}                     remove rule {id}: 204
    POST   /api/alerts/preview                  when a rule would have fired, before saving
    POST   /api/alerts/{id}/test                a test notification on rule {id}'s channels
    GET    /api/alerts/{id}/history             project {id}'s transitions and deliveries

and the silences (:mod:`asgimon.dashboard.alert_silences`).

A principal manages only its projects' alerts; a rule of another project is answered 404,
as one that does not exist. A bad rule is a 422 listing every bad field; nothing is stored.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.preview import replay
from asgimon.alerts.records import HISTORY_KINDS
from asgimon.alerts.rules import AlertRule, parse_rule
from asgimon.alerts.state import AlertState
from asgimon.analytics.ranges import BadQuery, instant_param
from asgimon.errors import FieldError

from .alert_answers import (
    Handler,
    conflict,
    guarded,
    invalid,
    iso_time,
    not_found,
    not_yours,
    project_of,
)
from .alert_silences import SilenceRoutes
from .guard import principal_of
from .params import check_params, json_body
from .responses import error_response

ALERTS_PATH = "/api/alerts"
ONE_PATH = ALERTS_PATH + "/{id}"
MAX_RULE_BODY = 32 * 1024
MAX_HISTORY = 500
MAX_RULES = 1000
"""Alert rules one project may hold: each is judged every period."""
PREVIEW_DAYS = 7
MASK = "whsec_…"


def _masked(secret: str) -> str:
    return MASK + secret[-4:]


def rule_json(rule: AlertRule, state: AlertState | None) -> dict[str, Any]:
    """A rule as the API shows it: instants as ISO text, secrets masked, its state."""
    out = rule.to_json()
    out["createdAt"] = iso_time(rule.created_at)
    out["channels"] = [
        {k: (_masked(v) if k == "secret" and isinstance(v, str) else v) for k, v in c.items()}
        for c in rule.channels
    ]
    s = (state or AlertState()).to_json()
    for name in ("since", "firedAt", "lastNotifiedAt", "lastMatchAt"):
        s[name] = iso_time(s[name]) if s[name] else None
    out["state"] = s
    return out


def _unmask(data: Any, base: AlertRule) -> Any:
    """A PATCH may send back the channels as read: a masked secret means "keep the secret of
    that webhook" (found by its URL, wherever it now stands in the list)."""
    if not isinstance(data, dict) or not isinstance(data.get("channels"), list):
        return data
    secrets = {(c.get("type"), c.get("url")): c["secret"] for c in base.channels if "secret" in c}
    channels = []
    for c in data["channels"]:
        if isinstance(c, dict):
            old = secrets.get((c.get("type"), c.get("url")))
            if old is not None and c.get("secret") == _masked(old):
                c = {**c, "secret": old}
        channels.append(c)
    return {**data, "channels": channels}


class AlertsApi(SilenceRoutes):
    def __init__(self, engine: AlertEngine | None) -> None:
        self.engine = engine
        for name in (
            "create",
            "listing",
            "change",
            "remove",
            "preview",
            "test",
            "history",
            "silences",
            "silence",
            "unsilence",
        ):
            setattr(self, name, guarded(self._enabled(getattr(self, "_" + name))))

    def _enabled(self, handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if self.engine is None:
                return error_response(
                    404, "alerts_disabled", "alerting is off (ALERTS_ENABLED=false)", []
                )
            return await handler(request)

        return check

    @property
    def _engine(self) -> AlertEngine:
        assert self.engine is not None
        return self.engine

    async def _visible_rule(self, request: Request) -> AlertRule | None:
        rule_id: str = request.path_params["id"]
        if not 0 < len(rule_id) <= 64 or not rule_id.isascii() or not rule_id.isprintable():
            raise BadQuery("id", "must be an alert id")
        rule = await self._engine.rule(rule_id)
        if rule is None or not principal_of(request).can_see(rule.project_id):
            return None
        return rule

    async def _body(self, request: Request) -> Any:
        # Any key is read: parse_rule names every unknown one with the other problems.
        return await json_body(request, None, MAX_RULE_BODY)

    async def _create(self, request: Request) -> Response:
        check_params(request.query_params, set())
        body = await self._body(request)
        body.pop("days", None)
        rule, errors = parse_rule(body, self._engine.channels)
        if rule is None:
            return invalid(errors)
        principal = principal_of(request)
        if not principal.can_see(rule.project_id):
            return not_yours("you may not manage this project")
        if len(await self._engine.rules(rule.project_id)) >= MAX_RULES:
            return invalid([FieldError("projectId", f"already has {MAX_RULES} alert rules")])
        saved = await self._engine.save(rule, by=principal.subject)
        if saved is None:
            return conflict()
        out = rule_json(saved, None)
        out["channels"] = saved.channels  # once, in full: a generated secret is shown here
        return JSONResponse(out, status_code=201)

    async def _listing(self, request: Request) -> Response:
        check_params(request.query_params, set())
        project_id = project_of(request)
        if not principal_of(request).can_see(project_id):
            return not_yours("you may not see this project")
        rules = await self._engine.rules(project_id)
        states = await self._engine.states([r.id for r in rules])
        return JSONResponse([rule_json(r, states.get(r.id)) for r in rules])

    async def _change(self, request: Request) -> Response:
        check_params(request.query_params, set())
        base = await self._visible_rule(request)
        if base is None:
            return not_found()
        body = await self._body(request)
        if "days" in body:
            return invalid([FieldError("days", "is not a field of an alert rule")])
        rule, errors = parse_rule(_unmask(body, base), self._engine.channels, base=base)
        if rule is None:
            return invalid(errors)
        saved = await self._engine.save(rule)
        if saved is None:
            return conflict()
        if saved.type != base.type:
            await self._engine.reset(saved, f"its type changed from {base.type}")
        states = await self._engine.states([saved.id])
        return JSONResponse(rule_json(saved, states.get(saved.id)))

    async def _remove(self, request: Request) -> Response:
        check_params(request.query_params, set())
        rule = await self._visible_rule(request)
        if rule is None or not await self._engine.delete(rule.id):
            return not_found()
        return Response(status_code=204)

    async def _preview(self, request: Request) -> Response:
        check_params(request.query_params, set())
        body = await self._body(request)
        days = body.pop("days", PREVIEW_DAYS)
        errors: list[FieldError] = []
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 30:
            errors.append(FieldError("days", "must be a whole number of days from 1 to 30"))
        body.setdefault("name", "preview")
        rule, problems = parse_rule(body, self._engine.channels)
        errors += problems
        if rule is None or errors:
            return invalid(errors)
        if not principal_of(request).can_see(rule.project_id):
            return not_yours("you may not see this project")
        now = time.time()
        period = self._engine.settings.alerts_interval
        done = await replay(rule, self._engine.storage, now=now, days=days, period=period)
        return JSONResponse(
            {
                "projectId": rule.project_id,
                "type": rule.type,
                "from": iso_time(done.start),
                "to": iso_time(done.end),
                "days": days,
                "fired": len(done.fired),
                "firedAt": [iso_time(t) for t in done.fired],
                "resolvedAt": [iso_time(t) for t in done.resolved],
                "notifications": done.notifications,
                "evaluations": done.evaluations,
                "truncated": done.truncated,
                "summary": f"would have fired {len(done.fired)} time"
                f"{'' if len(done.fired) == 1 else 's'} in the last {days} day"
                f"{'' if days == 1 else 's'}",
            }
        )

    async def _test(self, request: Request) -> Response:
        check_params(request.query_params, set())
        rule = await self._visible_rule(request)
        if rule is None:
            return not_found()
        await json_body(request, frozenset())
        sent = await self._engine.test(rule)
        return JSONResponse(
            {
                "deliveries": [
                    {
                        "channel": name,
                        "ok": d.ok,
                        "attempts": d.attempts,
                        "reason": d.reason,
                    }
                    for name, d in sent
                ]
            }
        )

    async def _history(self, request: Request) -> Response:
        check_params(request.query_params, {"rule", "kind", "before", "limit"})
        project_id = project_of(request)
        q = request.query_params
        if not principal_of(request).can_see(project_id):
            return not_yours("you may not see this project")
        kinds = None
        if "kind" in q:
            kinds = [k.strip() for k in q["kind"].split(",")]
            if not all(k in HISTORY_KINDS for k in kinds):
                raise BadQuery("kind", "must be " + ", ".join(HISTORY_KINDS) + " (comma-separated)")
        before = instant_param("before", q["before"]) if "before" in q else None
        raw_limit = q.get("limit", "100")
        ok = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4
        if not ok or not 1 <= int(raw_limit) <= MAX_HISTORY:
            raise BadQuery("limit", f"must be a whole number from 1 to {MAX_HISTORY}")
        rule_id = q.get("rule")
        if rule_id is not None and not 0 < len(rule_id) <= 64:
            raise BadQuery("rule", "must be an alert id")
        entries = await self._engine.storage.alert_history(
            project_id, rule_id=rule_id, kinds=kinds, before=before, limit=int(raw_limit)
        )
        return JSONResponse(
            {
                "history": [
                    {
                        **e.body,
                        "id": e.id,
                        "ruleId": e.rule_id,
                        "at": iso_time(e.at),
                        "kind": e.kind,
                    }
                    for e in entries
                ]
            }
        )
