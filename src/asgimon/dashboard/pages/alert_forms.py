"""The alerts page's forms, working without JavaScript: create or preview a rule; enable,
disable, delete or test one; silence the project or one rule until a time; end a silence.

Every form posts to ``/alerts?project=…`` with this browser's CSRF token and from this
origin, both checked before anything else: a refused form changes nothing. Done, it
answers 303 to the page, whose message says what was done (:mod:`.flash`). A form with a
problem is the page again (422) with each problem beside its field, and a preview is the
page again with the form as it was sent and when the rule would have fired.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Protocol

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.preview import replay
from asgimon.alerts.records import SILENCE, Record
from asgimon.alerts.rules import AlertRule, parse_rule
from asgimon.analytics.ranges import BadQuery
from asgimon.dashboard.guard import principal_of
from asgimon.dashboard.inbox import Inbox
from asgimon.errors import StorageError

from . import csrf
from .alerts import CHANNEL_NAMES, PREVIEW_DAYS, AlertsPage, Preview, SilenceForm
from .context import PageContext, UnknownProject
from .flash import Flash, keep
from .formats import when
from .rule_form import RuleForm, name_errors, rule_json
from .signin import read_form
from .views import Figures, Page

MAX_FIELDS = 40
MAX_SILENCE_S = 90 * 86_400
MAX_REASON = 500
MAX_ID = 64
PAGE_ERRORS = (BadQuery, UnknownProject, StorageError)
ACTIONS = ("create", "preview", "enable", "disable", "delete", "test", "silence", "unsilence")


class PageHost(Protocol):
    """What the forms use of the pages: the context, the page shown, the problem pages."""

    async def context(self, request: Request) -> PageContext: ...

    async def show(
        self, ctx: PageContext, page: Page, figures: Figures, status: int = 200
    ) -> Response: ...

    def problem(
        self, request: Request, ctx: PageContext | None, status: int, message: str
    ) -> Response: ...

    def refusal(self, request: Request, ctx: PageContext | None, exc: Exception) -> Response: ...


def _quoted(rule: AlertRule) -> str:
    return f"“{rule.name}”"


class AlertForms:
    def __init__(self, page: AlertsPage, host: PageHost, inbox: Inbox | None = None) -> None:
        self.page = page
        self.host = host
        self.inbox = inbox

    async def post(self, request: Request) -> Response:
        form = await read_form(request, max_fields=MAX_FIELDS)
        if form is None:
            return self.host.problem(request, None, 400, "send the form on the alerts page")
        refused = csrf.problem(request, form.get(csrf.FIELD))
        if refused is not None:
            return self.host.problem(request, None, 403, refused)
        engine = self.page.engine
        if engine is None:
            return self.host.problem(request, None, 404, "alerting is off (ALERTS_ENABLED=false)")
        ctx: PageContext | None = None
        try:
            ctx = await self.host.context(request)
            return await self._act(ctx, engine, form)
        except PAGE_ERRORS as exc:
            return self.host.refusal(request, ctx, exc)

    async def _act(self, ctx: PageContext, engine: AlertEngine, form: dict[str, str]) -> Response:
        action = form.get("action", "")
        if action in ("create", "preview"):
            return await self._rule(ctx, engine, form, preview=action == "preview")
        if action == "silence":
            return await self._silence(ctx, engine, form)
        if action == "unsilence":
            return await self._unsilence(ctx, engine, form.get("silence", ""))
        if action not in ACTIONS:
            return self.problem(ctx, 422, "action: must be one of " + ", ".join(ACTIONS))
        rule = await self._rule_of(ctx, engine, form.get("rule", ""))
        if rule is None:
            return self.problem(ctx, 404, "no alert rule with this id in this project")
        if action == "delete":
            await engine.delete(rule.id)
            return self.done(ctx, Flash(f"Deleted {_quoted(rule)}."))
        if action == "test":
            return await self._test(ctx, engine, rule)
        changed, errors = parse_rule({"enabled": action == "enable"}, engine.channels, base=rule)
        if changed is None:  # e.g. a channel of the rule since turned off on this server
            why = "; ".join(f"{e.field}: {e.message}" for e in errors)
            return self.problem(ctx, 422, f"the rule as stored cannot be saved again: {why}")
        saved = await engine.save(changed)
        if saved is None:
            return self.problem(ctx, 409, "the rule changed meanwhile; reload the page and retry")
        text = (
            f"Enabled {_quoted(rule)}."
            if saved.enabled
            else f"Disabled {_quoted(rule)}: it is not evaluated and tells no one until enabled."
        )
        return self.done(ctx, Flash(text), f"rule-{rule.id}")

    def problem(self, ctx: PageContext, status: int, message: str) -> Response:
        return self.host.problem(ctx.request, ctx, status, message)

    def done(self, ctx: PageContext, told: Flash, anchor: str = "") -> Response:
        """303 to the page, which tells what was done."""
        target = ctx.url("/alerts") + (f"#{anchor}" if anchor else "")
        response = RedirectResponse(target, status_code=303)
        keep(response, ctx.request, told)
        return response

    async def again(
        self,
        ctx: PageContext,
        status: int,
        *,
        form: RuleForm | None = None,
        silence: SilenceForm | None = None,
        preview: Preview | None = None,
    ) -> Response:
        """The page again, with the form as it was sent."""
        figures = await self.page.figures(ctx, form=form, silence=silence, preview=preview)
        return await self.host.show(ctx, self.page.page, figures, status)

    async def _rule_of(
        self, ctx: PageContext, engine: AlertEngine, rule_id: str
    ) -> AlertRule | None:
        if not 0 < len(rule_id) <= MAX_ID:
            return None
        rule = await engine.rule(rule_id)
        return rule if rule is not None and rule.project_id == ctx.project_id else None

    async def _rule(
        self, ctx: PageContext, engine: AlertEngine, sent: dict[str, str], *, preview: bool
    ) -> Response:
        form = RuleForm.sent(sent)
        data, channel_fields = rule_json(form, engine.channels, preview=preview)
        rule = None
        if data is not None:
            rule, errors = parse_rule(data, engine.channels, project_id=ctx.project_id)
            name_errors(form, errors, channel_fields)
        if rule is None or form.errors:
            return await self.again(ctx, 422, form=form)
        if preview:
            period = engine.settings.alerts_interval
            done = await replay(
                rule, engine.storage, now=time.time(), days=PREVIEW_DAYS, period=period
            )
            return await self.again(ctx, 200, form=form, preview=Preview.of(done, PREVIEW_DAYS))
        saved = await engine.save(rule, by=principal_of(ctx.request).subject)
        if saved is None:
            return self.problem(ctx, 409, "a rule with this id exists; send the form again")
        secret = next((c.get("secret") for c in saved.channels if c["type"] == "webhook"), None)
        told = Flash(
            f"Created {_quoted(saved)}."
            + (
                " Its webhook requests are signed with this secret, shown this once:"
                if secret
                else ""
            ),
            secret=secret,
        )
        return self.done(ctx, told, f"rule-{saved.id}")

    async def _test(self, ctx: PageContext, engine: AlertEngine, rule: AlertRule) -> Response:
        if not rule.channels:
            text = f"{_quoted(rule)} has no channel: nothing was sent."
            return self.done(ctx, Flash(text, ok=False), f"rule-{rule.id}")
        sent = await engine.test(rule)
        if self.inbox is not None:
            self.inbox.forget(rule.project_id)  # the header shows the in-app one at once
        items = tuple(
            f"{CHANNEL_NAMES.get(name, name)}: "
            + ("delivered" if d.ok else "failed")
            + (f" ({d.reason})" if d.reason else "")
            for name, d in sent
        )
        good = sum(1 for _, d in sent if d.ok)
        text = f"Test notification for {_quoted(rule)}: {good} of {len(sent)} channels delivered."
        return self.done(ctx, Flash(text, ok=good == len(sent), items=items), f"rule-{rule.id}")

    async def _silence(
        self, ctx: PageContext, engine: AlertEngine, sent: dict[str, str]
    ) -> Response:
        form = SilenceForm(
            {k: sent[k][:MAX_REASON] for k in ("rule", "until", "reason") if k in sent}
        )
        now = time.time()
        until = _until(form, now)
        reason = form.value("reason").strip()
        if not reason.isprintable():
            form.errors["reason"] = "must be one line of text"
        rule = None
        if form.value("rule"):
            rule = await self._rule_of(ctx, engine, form.value("rule"))
            if rule is None:
                form.errors["rule"] = "is not a rule of this project"
        if form.errors or until is None:
            return await self.again(ctx, 422, silence=form)
        body = {
            "ruleId": rule.id if rule else None,
            "until": until,
            "reason": reason,
            "createdBy": principal_of(ctx.request).subject,
            "createdAt": now,
        }
        record = Record(SILENCE, str(uuid.uuid4()), ctx.project_id, body)
        await engine.storage.put_alert_record(record, expect=0)
        what = _quoted(rule) if rule else "every rule of this project"
        text = f"Silenced {what} until {when(until)}: transitions are recorded, nobody is told."
        return self.done(ctx, Flash(text), "silences")

    async def _unsilence(self, ctx: PageContext, engine: AlertEngine, silence_id: str) -> Response:
        found = await engine.storage.alert_records(SILENCE, ids=[silence_id[:MAX_ID]])
        if not silence_id or not found or found[0].project_id != ctx.project_id:
            return self.problem(ctx, 404, "no silence with this id in this project")
        await engine.storage.delete_alert_record(SILENCE, found[0].id)
        return self.done(ctx, Flash("Ended the silence: its rules notify again."), "silences")


def _until(form: SilenceForm, now: float) -> float | None:
    raw = form.value("until").strip()
    for pattern in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            until = datetime.strptime(raw, pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
        if not now < until <= now + MAX_SILENCE_S:
            form.errors["until"] = "must be a time in the next 90 days (UTC)"
            return None
        return until
    form.errors["until"] = "must be a date and time such as 2030-01-31T18:00 (UTC)"
    return None
