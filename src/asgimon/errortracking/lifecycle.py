"""Keeping error groups' lifecycle as errors are stored, and telling who listens.

A subscriber of the recorder (``pipeline.sinks``): each stored batch's new error events
are folded into their groups' states in one atomic change per project, off the request
path. The transitions that come out of it (a new group, a regression, an ignore run out)
go to the listeners, the alert engine among them, once each: an event reaches this
subscriber only in the process that stored it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from asgimon.events import ErrorEvent, Event
from asgimon.storage.base import ErrorGroups

from .state import GroupState, Seen, Transition, group_events, observe

log = logging.getLogger("asgimon.errors")

Listener = Callable[[Transition], Awaitable[object]]


class Lifecycle:
    """Folds stored error events into their groups; hands each transition to listeners."""

    def __init__(self, storage: ErrorGroups) -> None:
        self.storage = storage
        self.listeners: list[Listener] = []
        self.transitions: dict[str, int] = {"new": 0, "regression": 0, "unignored": 0}
        self.listener_failures = 0

    def listen(self, listener: Listener) -> None:
        """Call ``listener(transition)`` for every transition from now on."""
        self.listeners.append(listener)

    async def __call__(self, events: Sequence[Event]) -> None:
        errors = [ev for ev in events if isinstance(ev, ErrorEvent)]
        if not errors:
            return
        for project_id, seen in group_events(errors).items():
            fold = _Fold(project_id, seen)
            written = await self.storage.change_error_groups(project_id, list(seen), fold)
            by_fp = {s.fingerprint: s for s in written}
            for t in fold.transitions:
                self.transitions[t.kind] = self.transitions.get(t.kind, 0) + 1
                await self._tell(Transition(t.kind, t.at, by_fp.get(t.state.fingerprint, t.state)))

    async def _tell(self, transition: Transition) -> None:
        for listener in self.listeners:
            try:
                await listener(transition)
            except Exception:
                self.listener_failures += 1
                log.exception("asgimon: an error-group listener failed")


class _Fold:
    """The change for one project's batch: a callable the store may call more than once (it
    recomputes from what another worker left), keeping the transitions of the last call."""

    def __init__(self, project_id: str, seen: dict[str, Seen]) -> None:
        self.project_id = project_id
        self.seen = seen
        self.transitions: list[Transition] = []

    def __call__(self, held: dict[str, GroupState | None]) -> list[GroupState]:
        self.transitions = []
        states = []
        for fp, s in self.seen.items():
            state, transition = observe(held.get(fp), self.project_id, fp, s)
            states.append(state)
            if transition is not None:
                self.transitions.append(transition)
        return states
