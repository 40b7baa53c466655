"""An error group's lifecycle: its state, and every way that state changes.

A group is ``unresolved`` until someone resolves or ignores it. A ``resolved`` group that
occurs again after it was resolved is a *regression*: it is unresolved again, flagged and
counted. An ``ignored`` group stays ignored forever, until a date, or for a number of
further occurrences, then is unresolved again. The changes are pure functions of the state
held and what happened, so every backend applies them the same way inside its own atomic
read-modify-write (:meth:`~asgimon.storage.base.ErrorGroups.change_error_groups`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asgimon.events import ErrorEvent

STATUSES = ("unresolved", "resolved", "ignored")
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2, "critical": 3}


@dataclass(slots=True, kw_only=True)
class GroupState:
    """What storage holds for one error group (``version``: how many times it was written)."""

    project_id: str
    fingerprint: str
    error_type: str = ""
    message: str = ""
    severity: str = "low"
    status: str = "unresolved"
    first_seen: float = 0.0
    last_seen: float = 0.0
    count: int = 0
    first_release: str | None = None
    last_release: str | None = None
    resolved_at: float | None = None
    ignore_until: float | None = None
    ignore_count: int | None = None
    ignored_seen: int = 0
    regressions: int = 0
    regressed_at: float | None = None
    changed_at: float | None = None
    changed_by: str | None = None
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def regressed(self) -> bool:
        """Unresolved again by a recurrence since it was last resolved."""
        return self.status == "unresolved" and self.regressed_at is not None


@dataclass(frozen=True, slots=True)
class Transition:
    """A change worth telling someone about: ``new`` (a group's first occurrence),
    ``regression`` (a resolved group recurred) or ``unignored`` (its ignore ran out)."""

    kind: str
    at: float
    state: GroupState


@dataclass(slots=True)
class Seen:
    """The occurrences of one group in one stored batch."""

    count: int
    first: float
    last: float
    error_type: str
    message: str
    severity: str
    first_release: str | None
    last_release: str | None

    @classmethod
    def of(cls, events: Sequence[ErrorEvent]) -> Seen:
        ordered = sorted(events, key=lambda ev: ev.timestamp)
        first, last = ordered[0], ordered[-1]
        return cls(
            count=len(ordered),
            first=first.timestamp,
            last=last.timestamp,
            error_type=last.error_type,
            message=last.message,
            severity=max((ev.severity for ev in ordered), key=lambda s: SEVERITY_RANK.get(s, 0)),
            first_release=first.deployment_id,
            last_release=last.deployment_id,
        )


def group_events(events: Iterable[ErrorEvent]) -> dict[str, dict[str, Seen]]:
    """A stored batch's error events as what each project's groups saw."""
    by: dict[str, dict[str, list[ErrorEvent]]] = {}
    for ev in events:
        by.setdefault(ev.project_id, {}).setdefault(ev.fingerprint, []).append(ev)
    return {p: {fp: Seen.of(evs) for fp, evs in groups.items()} for p, groups in by.items()}


def observe(
    held: GroupState | None, project_id: str, fingerprint: str, seen: Seen
) -> tuple[GroupState, Transition | None]:
    """The group after ``seen``, and the transition it made, if any."""
    if held is None:
        state = GroupState(
            project_id=project_id,
            fingerprint=fingerprint,
            first_seen=seen.first,
            last_seen=seen.last,
            first_release=seen.first_release,
        )
        transition: Transition | None = Transition("new", seen.first, state)
    else:
        state = dataclasses.replace(held)
        transition = None
        state.first_seen = min(state.first_seen, seen.first)
    state.count += seen.count
    if seen.last >= state.last_seen:
        state.last_seen = seen.last
        state.error_type = seen.error_type
        state.message = seen.message
        state.last_release = seen.last_release
    if SEVERITY_RANK.get(seen.severity, 0) > SEVERITY_RANK.get(state.severity, 0):
        state.severity = seen.severity
    if state.status == "resolved" and state.resolved_at is not None:
        if seen.last > state.resolved_at:
            state.status = "unresolved"
            state.regressions += 1
            state.regressed_at = max(seen.first, state.resolved_at)
            state.changed_at = state.regressed_at
            state.changed_by = None
            transition = Transition("regression", state.regressed_at, state)
    elif state.status == "ignored":
        state.ignored_seen += seen.count
        over_count = state.ignore_count is not None and state.ignored_seen >= state.ignore_count
        over_date = state.ignore_until is not None and seen.last >= state.ignore_until
        if over_count or over_date:
            state.status = "unresolved"
            state.changed_at = seen.last
            state.changed_by = None
            _clear_ignore(state)
            transition = Transition("unignored", seen.last, state)
    return state, transition


def _clear_ignore(state: GroupState) -> None:
    state.ignore_until = None
    state.ignore_count = None
    state.ignored_seen = 0


def resolve(state: GroupState, at: float, by: str | None) -> GroupState:
    out = dataclasses.replace(state, status="resolved", resolved_at=at, changed_at=at)
    out.changed_by = by
    out.regressed_at = None
    _clear_ignore(out)
    return out


def unresolve(state: GroupState, at: float, by: str | None) -> GroupState:
    out = dataclasses.replace(state, status="unresolved", resolved_at=None, changed_at=at)
    out.changed_by = by
    out.regressed_at = None
    _clear_ignore(out)
    return out


def ignore(
    state: GroupState,
    at: float,
    by: str | None,
    *,
    until: float | None = None,
    count: int | None = None,
) -> GroupState:
    """Ignored forever, until ``until`` (epoch seconds), or for ``count`` more occurrences."""
    out = dataclasses.replace(state, status="ignored", changed_at=at, resolved_at=None)
    out.changed_by = by
    out.regressed_at = None
    out.ignore_until = until
    out.ignore_count = count
    out.ignored_seen = 0
    return out


def effective(state: GroupState, now: float) -> GroupState:
    """An ignore whose date has passed reads as unresolved even before the group recurs."""
    if state.status == "ignored" and state.ignore_until is not None and now >= state.ignore_until:
        out = dataclasses.replace(state, status="unresolved", changed_at=state.ignore_until)
        _clear_ignore(out)
        return out
    return state
