"""Which deployment was live when: each successful deployment's window, from its completion
to the next one's.

An error that names its release (the process's ``ANALYTICS_DEPLOYMENT_ID``, a Sentry SDK's
``release``) belongs to that deployment; one that does not belongs to the deployment live
when it happened: the project's latest successful deployment before it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from asgimon.events import DeploymentEvent, ErrorEvent

from .query import Reader

MAX_DEPLOYMENTS = 1000


@dataclass(frozen=True, slots=True)
class Live:
    deployment_id: str
    start: float
    end: float  # the next deployment's start, or infinity


class Releases:
    """The project's successful deployments in order, and lookups over them."""

    def __init__(self, windows: list[Live]) -> None:
        self.windows = windows
        self._starts = [w.start for w in windows]
        self._by_id = {w.deployment_id: w for w in windows}

    @classmethod
    async def load(cls, storage: Reader, project_id: str, until: float) -> Releases:
        found = await storage.events(
            "deployment",
            project_id=project_id,
            end=until,
            limit=MAX_DEPLOYMENTS,
            match={"type": "completed", "status": "success"},
        )
        done = sorted(
            (ev for ev in found if isinstance(ev, DeploymentEvent)), key=lambda ev: ev.timestamp
        )
        windows: list[Live] = []
        for i, ev in enumerate(done):
            nxt = done[i + 1].timestamp if i + 1 < len(done) else float("inf")
            windows.append(Live(ev.deployment_id, ev.timestamp, nxt))
        return cls(windows)

    def live_at(self, ts: float) -> str | None:
        i = bisect.bisect_right(self._starts, ts) - 1
        return self.windows[i].deployment_id if i >= 0 else None

    def of(self, ev: ErrorEvent) -> str | None:
        """The deployment an error belongs to."""
        return ev.deployment_id or self.live_at(ev.timestamp)

    def window(self, deployment_id: str) -> Live | None:
        """When a deployment was live; None for a release no deployment event names (the
        errors that carry it are its errors)."""
        return self._by_id.get(deployment_id)

    def contains(self, deployment_id: str, ev: ErrorEvent) -> bool:
        """Whether an error happened in this deployment."""
        if ev.deployment_id is not None:
            return ev.deployment_id == deployment_id
        live = self._by_id.get(deployment_id)
        return live is not None and live.start <= ev.timestamp < live.end

    def first_seen_in(self, first_seen: float, first_release: str | None) -> str | None:
        return first_release or self.live_at(first_seen)
