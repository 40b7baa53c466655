"""An alert's state and how it moves: ok → pending → firing → resolved, one step at a time.

Pure functions from a state and what was seen to the next state and, where someone should
hear of it, a :class:`Notice`. The engine stores each next state on the version it read,
so of the workers that saw the same thing exactly one stores it and sends its notice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .records import STATE, Record
from .rules import AlertRule

OK = "ok"
PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
STATUSES = (OK, PENDING, FIRING, RESOLVED)


@dataclass(slots=True)
class AlertState:
    status: str = OK
    since: float = 0.0
    """When it entered this status."""
    value: float | None = None
    fired_at: float | None = None
    last_notified_at: float | None = None
    suppressed: int = 0
    """Matches or evaluations held back by the repeat interval (or a silence) since the last
    notification; the next one reports them."""
    last_match_at: float | None = None
    matches: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, record: Record | None) -> AlertState:
        if record is None:
            return cls()
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in record.body.items() if k in names})

    def to_record(self, rule: AlertRule) -> Record:
        return Record(STATE, rule.id, rule.project_id, asdict(self))

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "since": self.since,
            "value": self.value,
            "firedAt": self.fired_at,
            "lastNotifiedAt": self.last_notified_at,
            "suppressed": self.suppressed,
            "lastMatchAt": self.last_match_at,
            "matches": self.matches,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True, slots=True)
class Notice:
    """Tell the rule's channels: ``firing`` (first or repeated) or ``resolved``."""

    status: str
    suppressed: int


Step = tuple[AlertState, Notice | None, str | None]
"""The next state, what to tell (if anything), and the transition's name (if one)."""


def _fire(s: AlertState, now: float, value: float | None, labels: dict[str, str]) -> Step:
    nxt = AlertState(FIRING, now, value, now, now, 0, s.last_match_at, s.matches, labels)
    return nxt, Notice(FIRING, s.suppressed), FIRING


def _repeat(rule: AlertRule, s: AlertState, now: float, value: float | None, more: int) -> Step:
    due = s.last_notified_at is None or now - s.last_notified_at >= rule.repeat_interval
    nxt = AlertState(**{**asdict(s), "value": value})
    if due:
        nxt.last_notified_at = now
        nxt.suppressed = 0
        return nxt, Notice(FIRING, s.suppressed + more - 1 if more else s.suppressed), None
    nxt.suppressed = s.suppressed + max(more, 1)
    return nxt, None, None


def _resolve(s: AlertState, now: float, value: float | None) -> Step:
    # What it matched while it fired is kept: the resolution says so, the next firing
    # starts the count again.
    nxt = AlertState(RESOLVED, now, value, s.fired_at, now, 0, s.last_match_at, s.matches, s.labels)
    return nxt, Notice(RESOLVED, s.suppressed), RESOLVED


def judge(
    rule: AlertRule,
    s: AlertState,
    value: float | None,
    breached: bool,
    now: float,
    labels: dict[str, str] | None = None,
) -> Step:
    """A window rule's step after one evaluation."""
    labels = labels or {}
    if s.status == FIRING:
        if breached:
            return _repeat(rule, s, now, value, 0)
        return _resolve(s, now, value)
    if not breached:
        if s.status == PENDING:
            return AlertState(OK, now, value), None, OK
        return AlertState(**{**asdict(s), "value": value}), None, None
    if s.status == PENDING:
        if now - s.since >= rule.pending_for:
            return _fire(s, now, value, labels)
        return AlertState(**{**asdict(s), "value": value}), None, None
    if rule.pending_for > 0:
        return AlertState(PENDING, now, value, labels=labels), None, PENDING
    return _fire(s, now, value, labels)


def hit(
    rule: AlertRule,
    s: AlertState,
    count: int,
    value: float | None,
    labels: dict[str, str],
    now: float,
) -> Step:
    """An event rule's step after ``count`` matching events (one batch of them)."""
    if s.status == FIRING:
        nxt, notice, name = _repeat(rule, s, now, value, count)
        nxt.last_match_at = now
        nxt.matches = s.matches + count
        return nxt, notice, name
    base = AlertState(**{**asdict(s), "suppressed": s.suppressed + count - 1})
    base.last_match_at = now
    base.matches = count
    return _fire(base, now, value, labels)


def quiet(rule: AlertRule, s: AlertState, now: float) -> Step | None:
    """An event rule resolves once ``window`` passes without a match (silently if no one
    was told it fired: a silence held that back)."""
    if s.status != FIRING or s.last_match_at is None:
        return None
    if now - s.last_match_at < rule.window:
        return None
    nxt, notice, name = _resolve(s, now, s.value)
    return nxt, notice if s.last_notified_at is not None else None, name


def owed(rule: AlertRule, s: AlertState, now: float) -> Step | None:
    """A firing event rule that no one was told of (a silence held it back): tell now, with
    what it held back."""
    if s.status != FIRING or s.last_notified_at is not None:
        return None
    return _repeat(rule, s, now, s.value, 0)
