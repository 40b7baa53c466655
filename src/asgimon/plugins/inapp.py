"""The in-app channel: notifications kept in the alert history, listed in the dashboard's
header and pushed to its live stream.

Delivery is one append to storage (idempotent on the notification's id, so a retried
delivery is shown once). It needs the store, which the engine attaches when it loads the
channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from asgimon.alerts.channels import Delivery, Notification
from asgimon.alerts.records import INAPP, HistoryEntry
from asgimon.errors import FieldError

if TYPE_CHECKING:
    from asgimon.settings import Settings
    from asgimon.storage.base import AlertRecords


class InAppChannel:
    name = "inapp"

    def __init__(self) -> None:
        self._storage: AlertRecords | None = None

    def attach(self, storage: AlertRecords) -> None:
        self._storage = storage

    def validate(self, target: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
        errors = [FieldError(k, "is not a setting of the in-app channel") for k in target]
        return {}, errors

    async def send(self, notification: Notification, target: Mapping[str, Any]) -> Delivery:
        if self._storage is None:
            return Delivery(False, 0, "no store attached")
        entry = HistoryEntry(
            id=f"{notification.id}:inapp",
            project_id=notification.project_id,
            rule_id=notification.rule_id,
            at=notification.at,
            kind=INAPP,
            body=notification.to_json(),
        )
        try:
            await self._storage.add_alert_history([entry])
        except Exception as exc:
            return Delivery(False, 1, f"not stored: {exc}"[:300])
        return Delivery(True, 1)

    async def aclose(self) -> None:
        return None


def channel(settings: Settings) -> InAppChannel | None:
    return InAppChannel() if settings.alerts_enabled else None
