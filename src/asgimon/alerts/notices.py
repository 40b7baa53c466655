"""What a notification says: built from a rule and its state, the same for every channel."""

from __future__ import annotations

import uuid

from .channels import Notification, Status
from .rules import AlertRule
from .state import AlertState, Notice


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip() if unit not in ("%", "x") else f"{text}{unit}"


def transition_notification(
    rule: AlertRule,
    state: AlertState,
    notice: Notice,
    note_id: str,
    now: float,
    dashboard_url: str | None,
) -> Notification:
    """A firing (first or repeated) or resolved notification, with the rule's value."""
    unit = rule.kind.unit
    if rule.is_event_rule:
        what = f"{state.matches} matching" if state.matches else "a matching event"
        summary = f"{rule.kind.label}: {what}"
    else:
        summary = (
            f"{rule.kind.label} is {_fmt(state.value, unit)}"
            f" (threshold {_fmt(rule.threshold, unit)})"
        )
    if notice.status == "resolved":
        summary = f"Resolved: {summary}"
    link = None
    if dashboard_url:
        link = f"{dashboard_url.rstrip('/')}/alerts?project={rule.project_id}#rule-{rule.id}"
    return Notification(
        id=note_id,
        project_id=rule.project_id,
        rule_id=rule.id,
        rule_name=rule.name,
        rule_type=rule.type,
        status="resolved" if notice.status == "resolved" else "firing",
        summary=summary,
        at=now,
        started_at=state.fired_at,
        value=state.value,
        threshold=None if not rule.kind.needs_threshold else rule.threshold,
        unit=unit,
        suppressed=notice.suppressed,
        link=link,
        labels={**rule.filters, **state.labels},
    )


def plain_notification(rule: AlertRule, status: Status, summary: str, now: float) -> Notification:
    """A notification of no transition (a test send, a channel disabled), an id of its own."""
    return Notification(
        id=str(uuid.uuid4()),
        project_id=rule.project_id,
        rule_id=rule.id,
        rule_name=rule.name,
        rule_type=rule.type,
        status=status,
        summary=summary,
        at=now,
        threshold=rule.threshold if rule.kind.needs_threshold else None,
        unit=rule.kind.unit,
    )
