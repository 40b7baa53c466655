"""The alert API's silences: a project's (or one rule's) notifications held back until a time.

GET    /api/alerts/{id}/silences            project {id}'s silences
POST   /api/alerts/{id}/silences            silence project {id} (or one rule) until a time
DELETE /api/alerts/{id}/silences/{silence}  end a silence
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.records import SILENCE, Record
from asgimon.analytics.ranges import BadQuery, instant_param
from asgimon.errors import FieldError

from .alert_answers import conflict, invalid, iso_time, not_found, not_yours, project_of
from .guard import principal_of
from .params import check_params, json_body

MAX_SILENCE_S = 90 * 86_400
MAX_REASON = 500
MAX_SILENCES = 100


def silence_json(record: Record) -> dict[str, Any]:
    b = record.body
    return {
        "id": record.id,
        "projectId": record.project_id,
        "ruleId": b.get("ruleId"),
        "until": iso_time(b.get("until")),
        "reason": b.get("reason", ""),
        "createdBy": b.get("createdBy"),
        "createdAt": iso_time(b.get("createdAt")),
        "active": b.get("until", 0) > time.time(),
    }


class SilenceRoutes:
    """Mixed into the alert API, which gives it its engine."""

    @property
    def _engine(self) -> AlertEngine:
        raise NotImplementedError

    async def _silences(self, request: Request) -> Response:
        check_params(request.query_params, set())
        project_id = project_of(request)
        if not principal_of(request).can_see(project_id):
            return not_yours("you may not see this project")
        found = await self._engine.silences(project_id)
        return JSONResponse({"silences": [silence_json(s) for s in found]})

    async def _silence(self, request: Request) -> Response:
        check_params(request.query_params, set())
        project_id = project_of(request)
        principal = principal_of(request)
        if not principal.can_see(project_id):
            return not_yours("you may not manage this project")
        body = await json_body(request, frozenset({"ruleId", "until", "reason"}))
        errors: list[FieldError] = []
        now = time.time()
        until = None
        raw_until = body.get("until")
        if not isinstance(raw_until, str):
            errors.append(FieldError("until", "is required: an ISO 8601 time with a UTC offset"))
        else:
            try:
                until = instant_param("until", raw_until)
            except BadQuery as exc:
                errors.append(FieldError("until", exc.message))
            else:
                if not now < until <= now + MAX_SILENCE_S:
                    errors.append(FieldError("until", "must be in the next 90 days"))
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
            errors.append(
                FieldError("reason", f"must be a text of at most {MAX_REASON} characters")
            )
        rule_id = body.get("ruleId")
        if rule_id is not None:
            rule = await self._engine.rule(rule_id) if isinstance(rule_id, str) else None
            if rule is None or rule.project_id != project_id:
                errors.append(FieldError("ruleId", "is not an alert of this project"))
        if len(await self._engine.silences(project_id)) >= MAX_SILENCES:
            errors.append(FieldError("until", f"the project already has {MAX_SILENCES} silences"))
        if errors:
            return invalid(errors)
        record = Record(
            SILENCE,
            str(uuid.uuid4()),
            project_id,
            {
                "ruleId": rule_id,
                "until": until,
                "reason": reason,
                "createdBy": principal.subject,
                "createdAt": now,
            },
        )
        written = await self._engine.storage.put_alert_record(record, expect=0)
        if written is None:
            return conflict()
        return JSONResponse(silence_json(written), status_code=201)

    async def _unsilence(self, request: Request) -> Response:
        check_params(request.query_params, set())
        project_id = project_of(request)
        if not principal_of(request).can_see(project_id):
            return not_yours("you may not manage this project")
        silence_id: str = request.path_params["silence"]
        found = await self._engine.storage.alert_records(SILENCE, ids=[silence_id[:64]])
        if not found or found[0].project_id != project_id:
            return not_found("silence")
        await self._engine.storage.delete_alert_record(SILENCE, silence_id)
        return Response(status_code=204)
