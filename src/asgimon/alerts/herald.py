"""Who hears of an alert's transition, once it is stored: its history entry, and its
notification queued for each of the rule's channels (the outbox delivers, retries and rate
limits); a test notification sent now; a channel that answered 410 Gone disabled, and its
owner told where they will look.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from .channels import Channel, Delivery
from .notices import plain_notification, transition_notification
from .outbox import Job, Outbox
from .records import INAPP, MAX_RACES, TRANSITION, HistoryEntry
from .rules import AlertRule
from .state import AlertState, Notice

if TYPE_CHECKING:
    from asgimon.settings import Settings
    from asgimon.storage.base import Storage

log = logging.getLogger("asgimon.alerts")


class Herald:
    """The engine's voice: everything told of a transition after its state is written."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        channels: Mapping[str, Channel],
        counts: dict[str, int],
        clock: Callable[[], float],
        *,
        rule: Callable[[str], Awaitable[AlertRule | None]],
        save: Callable[[AlertRule], Awaitable[AlertRule | None]],
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.counts = counts  # the engine's, where health reads them
        self.clock = clock
        self._rule = rule
        self._save = save
        hard = settings.alerts_retry_deadline + max(settings.smtp_timeout, settings.webhook_timeout)
        self.outbox = Outbox(
            channels,
            storage.add_alert_history,
            self._disable_channel,
            hard_deadline=hard,
            rate=settings.alerts_channel_rate,
        )

    async def announce(
        self,
        rule: AlertRule,
        before: AlertState,
        after: AlertState,
        notice: Notice | None,
        name: str | None,
        version: int,
        now: float,
        silenced: bool,
    ) -> None:
        """The transition of ``rule`` from ``before`` to ``after`` (stored at ``version``):
        its history entry, and its notice to the rule's channels unless ``silenced``."""
        note_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"asgimon-alert/{rule.id}/{version}"))
        entries = []
        if name is not None:
            self.counts["transitions"] += 1
            entries.append(
                HistoryEntry(
                    id=note_id + ":t",
                    project_id=rule.project_id,
                    rule_id=rule.id,
                    at=now,
                    kind=TRANSITION,
                    body={
                        "from": before.status,
                        "to": after.status,
                        "value": after.value,
                        "threshold": rule.threshold,
                        "unit": rule.kind.unit,
                        "ruleName": rule.name,
                        "notificationId": note_id if notice else None,
                        "silenced": silenced,
                        "labels": after.labels,
                    },
                )
            )
        # The state is already stored: who must hear of it hears first, and the history is
        # written after, its failure logged and retried once, never a reason to tell no one.
        if notice is not None and not silenced:
            notification = transition_notification(
                rule, after, notice, note_id, now, self.settings.dashboard_url
            )
            self.counts["notifications"] += 1
            for index, target in enumerate(rule.channels):
                if target.get("disabled"):
                    continue
                body = {k: v for k, v in target.items() if k != "type"}
                await self.outbox.put(Job(notification, str(target["type"]), index, body))
        elif notice is not None:
            self.counts["silenced"] += 1
        if entries:
            await self.remember(entries)

    async def remember(self, entries: list[HistoryEntry]) -> None:
        for attempt in range(2):
            try:
                await self.storage.add_alert_history(entries)
                return
            except Exception as exc:
                if attempt:
                    self.counts["failures"] += 1
                    log.warning("asgimon: an alert transition was not recorded: %s", exc)
                else:
                    await asyncio.sleep(0.05)

    async def test(self, rule: AlertRule) -> list[tuple[str, Delivery]]:
        """Send a test notification on each of the rule's channels now; each outcome."""
        note = plain_notification(
            rule, "test", f"Test notification for {rule.name!r}", self.clock()
        )
        out = []
        for index, target in enumerate(rule.channels):
            body = {k: v for k, v in target.items() if k not in ("type", "disabled")}
            job = Job(note, str(target["type"]), index, body)
            out.append((str(target["type"]), await self.outbox.send_now(job)))
        return out

    async def _disable_channel(self, rule_id: str, channel: str, target: Mapping[str, Any]) -> None:
        for _ in range(MAX_RACES):
            rule = await self._rule(rule_id)
            if rule is None:
                return
            # By what it is, not where it stood: the rule may have been changed meanwhile.
            index = next(
                (
                    i
                    for i, c in enumerate(rule.channels)
                    if c.get("type") == channel and all(c.get(k) == v for k, v in target.items())
                ),
                None,
            )
            if index is None:
                return
            rule.channels[index] = {**rule.channels[index], "disabled": True}
            if await self._save(rule) is not None:
                gone = rule.channels[index].get("url") or rule.channels[index].get("type")
                log.warning("asgimon: alert %s: %s is gone (410) and disabled", rule_id, gone)
                # The owner hears of it where they will look: the dashboard's notifications.
                now = self.clock()
                summary = (
                    f"{gone} answered 410 Gone: this channel of {rule.name!r} is disabled"
                    " until the rule is saved with it again"
                )
                note = plain_notification(rule, "notice", summary, now)
                entry = HistoryEntry(
                    f"{note.id}:inapp", rule.project_id, rule.id, now, INAPP, note.to_json()
                )
                await self.storage.add_alert_history([entry])
                return
