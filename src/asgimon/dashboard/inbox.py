"""The in-app notifications the pages' header lists and the live stream pushes.

Each project's latest notifications are read from the alert history at most once a second
per process, whatever the number of pages and streams asking: every reader of a project
waits on the same :class:`_Held` copy, as the live figures do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

from asgimon.alerts.records import INAPP, HistoryEntry

from .pages import formats

INTERVAL_S = 1.0
SHOWN = 10
"""Notifications listed, newest first, over every project the viewer may see."""
MAX_PROJECTS = 50
"""Projects read for one viewer: the page's own first, then the others in order."""
MAX_HELD = 1000
CONCURRENCY = 4


class History(Protocol):
    async def alert_history(
        self,
        project_id: str,
        *,
        rule_id: str | None = None,
        kinds: Sequence[str] | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]: ...

    async def projects(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Note:
    """One in-app notification, as the header shows it."""

    id: str
    project_id: str
    rule_id: str
    rule_name: str
    status: str  # firing, resolved or test
    summary: str
    at: float

    @classmethod
    def of(cls, entry: HistoryEntry) -> Note:
        b = entry.body
        return cls(
            id=entry.id,
            project_id=entry.project_id,
            rule_id=entry.rule_id,
            rule_name=str(b.get("ruleName", "")),
            status=str(b.get("status", "firing")),
            summary=str(b.get("summary", "")),
            at=entry.at,
        )

    def href(self, root: str) -> str:
        """The rule's row on its project's alerts page."""
        return f"{root}/alerts?project={quote(self.project_id, safe='')}#rule-{self.rule_id}"

    @property
    def when(self) -> str:
        """The instant as every page writes one."""
        return formats.when(self.at)

    def to_json(self, root: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "projectId": self.project_id,
            "ruleId": self.rule_id,
            "ruleName": self.rule_name,
            "status": self.status,
            "summary": self.summary,
            "when": self.when,
            "href": self.href(root),
        }


def firing(notes: Iterable[Note]) -> int:
    """How many rules' newest notification (of those listed) says firing."""
    newest: dict[str, str] = {}
    for n in notes:  # newest first
        newest.setdefault(n.rule_id, n.status)
    return sum(1 for status in newest.values() if status == "firing")


@dataclass
class _Held:
    read_at: float = float("-inf")  # monotonic
    notes: tuple[Note, ...] = ()
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Inbox:
    def __init__(self, storage: History, *, interval_s: float = INTERVAL_S) -> None:
        self.storage = storage
        self.interval_s = interval_s
        self.reads = 0
        self._held: dict[str, _Held] = {}
        self._projects = _Held()
        self._known: list[str] = []

    async def projects(self) -> list[str]:
        """Every project with anything recorded, as of at most a second ago."""
        async with self._projects.lock:
            if time.monotonic() - self._projects.read_at >= self.interval_s:
                self._known = await self.storage.projects()
                self._projects.read_at = time.monotonic()
        return self._known

    async def of_project(self, project_id: str) -> tuple[Note, ...]:
        held = self._held.get(project_id)
        if held is None:
            if len(self._held) >= MAX_HELD:
                self._held.pop(next(iter(self._held)))
            held = self._held[project_id] = _Held()
        async with held.lock:  # the first caller reads; the others wait and share it
            if time.monotonic() - held.read_at >= self.interval_s:
                self.reads += 1
                found = await self.storage.alert_history(project_id, kinds=[INAPP], limit=SHOWN)
                held.notes = tuple(Note.of(e) for e in found)
                held.read_at = time.monotonic()
        return held.notes

    def forget(self, project_id: str) -> None:
        """What this process just wrote for the project: the next reader reads again."""
        held = self._held.get(project_id)
        if held is not None:
            held.read_at = float("-inf")

    async def latest(self, projects: Sequence[str]) -> list[Note]:
        """The newest notifications of these projects (the first :data:`MAX_PROJECTS`)."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def read(project_id: str) -> tuple[Note, ...]:
            async with gate:
                return await self.of_project(project_id)

        chosen = list(dict.fromkeys(projects))[:MAX_PROJECTS]
        found = await asyncio.gather(*(read(p) for p in chosen))
        notes = [n for part in found for n in part]
        notes.sort(key=lambda n: (-n.at, n.id))
        return notes[:SHOWN]
