"""Resolve, unresolve and ignore: one change of one group, as the API and the pages make it."""

from __future__ import annotations

from asgimon import series
from asgimon._validate import clean_text
from asgimon.events import ErrorEvent
from asgimon.rollups import Window
from asgimon.storage.base import Storage

from .state import SEVERITY_RANK, GroupState, ignore, resolve, unresolve

ACTIONS = ("resolve", "unresolve", "ignore")
MAX_BY = 200  # the column's size: a JWT's subject may be longer


async def change_group(
    storage: Storage,
    project_id: str,
    fingerprint: str,
    action: str,
    *,
    by: str | None,
    now: float,
    until: float | None = None,
    count: int | None = None,
) -> GroupState | None:
    """The group after ``action``, or None if the project has no such group."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    by = clean_text(by, MAX_BY) if by else by
    latest = await storage.events(
        "error", project_id=project_id, limit=1, match={"fingerprint": fingerprint}
    )
    held = await storage.error_groups(project_id, [fingerprint])
    if not latest and not held:
        return None
    seed = _seed(project_id, fingerprint, latest[0] if latest else None)
    if not held:
        # Recorded before groups had a lifecycle: its day rollups know how many and since
        # when (the newest event alone would make it new).
        names = tuple(f"{series.ERROR}{s}:{fingerprint}:" for s in SEVERITY_RANK)
        totals = await storage.series_totals(Window(project_id, "day", 0, now + 86_400), names)
        if totals:
            seed.count = sum(t.count for t in totals)
            seed.first_seen = min(seed.first_seen, *(t.first_bucket for t in totals))

    def change(states: dict[str, GroupState | None]) -> list[GroupState]:
        state = states.get(fingerprint) or seed
        if action == "resolve":
            return [resolve(state, now, by)]
        if action == "unresolve":
            return [unresolve(state, now, by)]
        return [ignore(state, now, by, until=until, count=count)]

    (written,) = await storage.change_error_groups(project_id, [fingerprint], change)
    return written


def _seed(project_id: str, fingerprint: str, latest: object) -> GroupState:
    """A group stored errors know but no lifecycle yet holds (recorded before it had one)."""
    state = GroupState(project_id=project_id, fingerprint=fingerprint)
    if isinstance(latest, ErrorEvent):
        state.error_type = latest.error_type
        state.message = latest.message
        state.severity = latest.severity
        state.first_seen = state.last_seen = latest.timestamp
        state.first_release = state.last_release = latest.deployment_id
    return state
