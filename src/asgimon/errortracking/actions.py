"""Resolve, unresolve and ignore: one change of one group, as the API and the pages make it."""

from __future__ import annotations

from asgimon.events import ErrorEvent
from asgimon.storage.base import Storage

from .state import GroupState, ignore, resolve, unresolve

ACTIONS = ("resolve", "unresolve", "ignore")


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
    latest = await storage.events(
        "error", project_id=project_id, limit=1, match={"fingerprint": fingerprint}
    )
    held = await storage.error_groups(project_id, [fingerprint])
    if not latest and not held:
        return None
    seed = _seed(project_id, fingerprint, latest[0] if latest else None)

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
