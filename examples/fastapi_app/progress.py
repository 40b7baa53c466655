"""Builds in flight, told as they go to whoever follows them (a log stream, a websocket).

In memory, one per app: a deployment's row is written when its build starts and ends, and
what happens in between is only told to the followers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

FINISHED = frozenset({"ready", "failed"})


@dataclass(frozen=True, slots=True)
class Update:
    """One step of a build: the deployment's status, the phase running, a line of its log."""

    status: str
    phase: str | None
    line: str


@dataclass(slots=True)
class _Build:
    updates: list[Update] = field(default_factory=list)
    followers: set[asyncio.Queue[Update | None]] = field(default_factory=set)


class Follower:
    """A build's updates: those told so far, then each as it comes, until it finishes."""

    def __init__(self, build: _Build) -> None:
        self._build = build
        self._so_far = list(build.updates)
        self._queue: asyncio.Queue[Update | None] = asyncio.Queue()
        build.followers.add(self._queue)

    async def updates(self) -> AsyncIterator[Update]:
        try:
            for update in self._so_far:
                yield update
            while (following := await self._queue.get()) is not None:
                yield following
        finally:
            self._build.followers.discard(self._queue)


class Progress:
    """The builds running in this process, by deployment id."""

    def __init__(self) -> None:
        self._builds: dict[str, _Build] = {}

    def begin(self, deployment_id: str, first: Update) -> None:
        self._builds[deployment_id] = _Build([first])

    def tell(self, deployment_id: str, update: Update) -> None:
        build = self._builds[deployment_id]
        build.updates.append(update)
        for queue in build.followers:
            queue.put_nowait(update)

    def end(self, deployment_id: str) -> None:
        """The build is over (its row says how): its followers' streams end."""
        build = self._builds.pop(deployment_id, None)
        for queue in () if build is None else build.followers:
            queue.put_nowait(None)

    def follow(self, deployment_id: str) -> Follower | None:
        """Its updates, or None once the build is over (its row then has the whole log)."""
        build = self._builds.get(deployment_id)
        return None if build is None else Follower(build)
