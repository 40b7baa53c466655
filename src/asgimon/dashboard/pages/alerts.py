"""The alerts page: a project's rules with their state, the form that makes one (with a
preview over stored history), the project's silences and its alert history.

Its forms post back to ``/alerts`` (:mod:`.alert_forms`); what a form did is told on the
page it redirects to (:mod:`.flash`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.preview import Replay
from asgimon.alerts.records import DELIVERY, TRANSITION, HistoryEntry, Record
from asgimon.alerts.rules import AlertRule
from asgimon.alerts.state import AlertState
from asgimon.alerts.types import EVENT, FILTERS, RULE_TYPES, STATISTICS
from asgimon.events import SEVERITIES

from . import flash
from .context import PageContext
from .rule_form import FILTER_LABELS, STATISTIC_LABELS, RuleForm
from .views import Figures, MakeQuery, Page

HISTORY_SHOWN = 50
PREVIEW_SHOWN = 50
PREVIEW_DAYS = 7
SILENCE_DEFAULT_S = 3600
CHANNEL_NAMES = {"inapp": "in-app", "webhook": "webhook", "email": "email"}


def duration(seconds: float) -> str:
    """A rule's duration in the two largest units that say it: "5 min", "1 h 30 min"."""
    if seconds <= 0:
        return "none"
    parts = []
    rest = int(seconds)
    for unit, size in (("day", 86_400), ("h", 3600), ("min", 60), ("s", 1)):
        n, rest = divmod(rest, size)
        if n:
            parts.append(f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''}")
    return " ".join(parts[:2])


def amount(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    text = f"{value:,.0f}" if value == int(value) and abs(value) < 1e15 else f"{value:,.3g}"
    if unit == "x":
        return f"{text}\u00d7"  # a multiplication sign: "2 times the previous window"
    return f"{text} {unit}".strip()


def condition(rule: AlertRule) -> str:
    """When the rule fires, in words: "> 5 %", "p95 > 500 ms", "on each event"."""
    kind = rule.kind
    if not kind.needs_threshold:
        return "on each event"
    if rule.type == "ssl_certificate":
        return f"fails, or under {amount(rule.threshold, kind.unit)} to expiry"
    stat = f"{STATISTIC_LABELS[rule.statistic]} " if kind.statistic else ""
    return f"{stat}> {amount(rule.threshold, kind.unit)}"


def channel_text(target: Mapping[str, Any]) -> str:
    """A rule's channel as a person reads it: never its secret."""
    kind = str(target.get("type", ""))
    name = CHANNEL_NAMES.get(kind, kind)
    if kind == "webhook" and target.get("url"):
        name += f" {target['url']}"
    elif kind == "email" and target.get("to"):
        to = target["to"]
        name += " " + (", ".join(str(a) for a in to) if isinstance(to, list) else str(to))
    return name + (" (off: the receiver is gone)" if target.get("disabled") else "")


def _iso_minute(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


@dataclass(frozen=True)
class RuleRow:
    rule: AlertRule
    label: str
    condition: str
    window: str
    pending: str
    repeat: str
    state: AlertState
    channels: list[str]
    filters: str


@dataclass(frozen=True)
class HistoryRow:
    at: float
    rule: str
    kind: str  # transition or delivery
    what: str
    ok: bool | None = None  # a delivery's outcome
    detail: str = ""


@dataclass(frozen=True)
class SilenceRow:
    id: str
    target: str
    until: float
    reason: str
    by: str
    active: bool


@dataclass(frozen=True)
class Preview:
    days: int
    fired: list[float]
    resolved: list[float]
    notifications: int
    truncated: bool

    @classmethod
    def of(cls, done: Replay, days: int) -> Preview:
        return cls(days, done.fired, done.resolved, done.notifications, done.truncated)

    @property
    def summary(self) -> str:
        n = len(self.fired)
        return (
            f"Would have fired {n} time{'' if n == 1 else 's'} in the last {self.days}"
            f" day{'' if self.days == 1 else 's'}"
        )

    @property
    def shown(self) -> list[float]:
        """The newest times it would have fired, newest first."""
        return self.fired[::-1][:PREVIEW_SHOWN]


@dataclass
class SilenceForm:
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def blank(cls, now: float) -> SilenceForm:
        return cls({"until": _iso_minute(now + SILENCE_DEFAULT_S)})

    def value(self, name: str) -> str:
        return self.values.get(name, "")


def _row(rule: AlertRule, state: AlertState | None) -> RuleRow:
    return RuleRow(
        rule=rule,
        label=rule.kind.label,
        condition=condition(rule),
        window=duration(rule.window),
        pending=duration(rule.pending_for),
        repeat=duration(rule.repeat_interval),
        state=state or AlertState(),
        channels=[channel_text(c) for c in rule.channels],
        filters=", ".join(f"{FILTER_LABELS[k].lower()} {v}" for k, v in rule.filters.items()),
    )


def _history_row(entry: HistoryEntry, names: Mapping[str, str]) -> HistoryRow:
    b = entry.body
    rule = str(b.get("ruleName") or names.get(entry.rule_id) or entry.rule_id[:8])
    if entry.kind == TRANSITION:
        value = amount(b.get("value"), str(b.get("unit", "")))
        what = f"{b.get('from')} → {b.get('to')}"
        detail = f"value {value}" if b.get("value") is not None else ""
        if b.get("silenced"):
            detail = (detail + "; " if detail else "") + "silenced: nobody was told"
        return HistoryRow(entry.at, rule, TRANSITION, what, None, detail)
    target = b.get("target") or {}
    where = channel_text({"type": b.get("channel", ""), **target})
    what = f"{b.get('status', '')} notification by {where}"
    attempts = int(b.get("attempts") or 0)
    tries = f"{attempts} attempt{'' if attempts == 1 else 's'}"
    reason = str(b.get("reason") or "")
    ok = bool(b.get("ok"))
    detail = f"{'delivered' if ok else 'failed'} after {tries}" + (f": {reason}" if reason else "")
    return HistoryRow(entry.at, rule, DELIVERY, what, ok, detail)


def _silence_row(record: Record, names: Mapping[str, str], now: float) -> SilenceRow:
    b = record.body
    rule_id = b.get("ruleId")
    target = "the whole project" if rule_id is None else names.get(rule_id, "a deleted rule")
    until = float(b.get("until") or 0)
    return SilenceRow(
        record.id,
        target,
        until,
        str(b.get("reason") or ""),
        str(b.get("createdBy") or ""),
        until > now,
    )


def type_choices() -> dict[str, list[dict[str, Any]]]:
    """The rule types for the form's select, each with what the form's script needs."""
    groups: dict[str, list[dict[str, Any]]] = {"Over a window": [], "On each event": []}
    for t in RULE_TYPES.values():
        groups["On each event" if t.mode == EVENT else "Over a window"].append(
            {
                "name": t.name,
                "label": t.label,
                "unit": t.unit,
                "threshold": t.threshold if t.needs_threshold else None,
                "window": t.window // 60,
                "filters": ",".join(t.filters),
                "statistic": t.statistic,
                "event": t.mode == EVENT,
            }
        )
    return groups


def _filter_hints() -> dict[str, str]:
    return {f: ", ".join(t.label for t in RULE_TYPES.values() if f in t.filters) for f in FILTERS}


class AlertsPage:
    def __init__(self, engine: AlertEngine | None) -> None:
        self.engine = engine
        self.page = Page(
            "/alerts", "Alerts", "alerts.html", self.view, forms=True, finish=flash.clear
        )

    async def view(self, ctx: PageContext, query: MakeQuery) -> Figures:
        return await self.figures(ctx, told=flash.read(ctx.request))

    async def figures(
        self,
        ctx: PageContext,
        *,
        form: RuleForm | None = None,
        silence: SilenceForm | None = None,
        preview: Preview | None = None,
        told: flash.Flash | None = None,
    ) -> Figures:
        now = time.time()
        out: Figures = {
            "enabled": self.engine is not None,
            "form": form or RuleForm.blank(),
            "silence_form": silence or SilenceForm.blank(now),
            "preview": preview,
            "told": told,
            "types": type_choices(),
            "filters": FILTERS,
            "filter_labels": FILTER_LABELS,
            "filter_hints": _filter_hints(),
            "statistics": {s: STATISTIC_LABELS[s] for s in STATISTICS},
            "severities": sorted(SEVERITIES),
            "preview_days": PREVIEW_DAYS,
            "rules": [],
            "history": [],
            "silences": [],
            "available": [],
        }
        if self.engine is None:
            return out
        engine = self.engine
        rules = await engine.rules(ctx.project_id)
        states, history, silences = await asyncio.gather(
            engine.states([r.id for r in rules]),
            engine.storage.alert_history(
                ctx.project_id, kinds=[TRANSITION, DELIVERY], limit=HISTORY_SHOWN
            ),
            engine.silences(ctx.project_id),
        )
        names = {r.id: r.name for r in rules}
        out["rules"] = [_row(r, states.get(r.id)) for r in rules]
        out["history"] = [_history_row(e, names) for e in history]
        out["silences"] = sorted(
            (_silence_row(s, names, now) for s in silences), key=lambda s: (not s.active, s.until)
        )
        out["available"] = sorted(engine.channels)
        return out
