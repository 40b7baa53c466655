"""Alert records and history in memory, for :class:`~asgimon.storage.memory.MemoryStorage`."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

from asgimon.alerts.records import HistoryEntry, Record


class MemoryAlerts:
    def __init__(self) -> None:
        self._records: dict[tuple[str, str], Record] = {}
        self._history: dict[str, HistoryEntry] = {}

    async def alert_records(
        self, kind: str, *, project_id: str | None = None, ids: Sequence[str] | None = None
    ) -> list[Record]:
        if ids is not None:
            found = [r for i in dict.fromkeys(ids) if (r := self._records.get((kind, i)))]
        else:
            found = [r for (k, _), r in self._records.items() if k == kind]
        if project_id is not None:
            found = [r for r in found if r.project_id == project_id]
        found.sort(key=lambda r: r.updated_at if ids is None else 0)
        return [copy.deepcopy(r) for r in found]

    async def put_alert_record(self, record: Record, *, expect: int | None = None) -> Record | None:
        held = self._records.get((record.kind, record.id))
        version = 0 if held is None else held.version
        if expect is not None and expect != version:
            return None
        written = copy.deepcopy(record)
        written.version = version + 1
        written.updated_at = time.time()
        self._records[(record.kind, record.id)] = written
        return copy.deepcopy(written)

    async def delete_alert_record(self, kind: str, record_id: str) -> bool:
        return self._records.pop((kind, record_id), None) is not None

    async def add_alert_history(self, entries: Sequence[HistoryEntry]) -> None:
        for e in entries:
            self._history.setdefault(e.id, copy.deepcopy(e))

    async def alert_history(
        self,
        project_id: str,
        *,
        rule_id: str | None = None,
        kinds: Sequence[str] | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]:
        found = [
            e
            for e in self._history.values()
            if e.project_id == project_id
            and (rule_id is None or e.rule_id == rule_id)
            and (kinds is None or e.kind in kinds)
            and (before is None or e.at < before)
        ]
        found.sort(key=lambda e: (e.at, e.id), reverse=True)
        return [copy.deepcopy(e) for e in found[:limit]]

    def _purge_alert_history(self, cutoff: float) -> int:
        doomed = [i for i, e in self._history.items() if e.at < cutoff]
        for i in doomed:
            del self._history[i]
        return len(doomed)
