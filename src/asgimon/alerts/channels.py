"""What a notification channel is: one small protocol, found by name through entry points.

A channel turns a :class:`Notification` into a delivery to one target (an address, a URL)
and reports the outcome as a :class:`Delivery`; it never raises for a failed delivery and
keeps to the deadline it is built with. asgimon's own channels live in
:mod:`asgimon.plugins`; a third party adds one by publishing an entry point in the
``asgimon.channels`` group whose object is a :data:`ChannelFactory`::

    [project.entry-points."asgimon.channels"]
    pager = "mypager:channel"        # def channel(settings) -> Channel

The engine never imports a channel by name: it asks :func:`load_channels`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from asgimon.errors import ConfigError, FieldError

if TYPE_CHECKING:
    from asgimon.settings import Settings

log = logging.getLogger("asgimon.alerts")

ENTRY_POINT_GROUP = "asgimon.channels"

Status = Literal["firing", "resolved", "test", "notice"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Notification:
    """One transition of one alert, as every channel is handed it.

    ``id`` is the same on every attempt and every channel for one transition (the webhook's
    ``webhook-id``, the receiver's deduplication key). ``suppressed`` counts the repeats
    held back by the rule's repeat interval since the previous notification.
    """

    id: str
    project_id: str
    rule_id: str
    rule_name: str
    rule_type: str
    status: Status
    summary: str
    at: float
    """When the transition happened (epoch seconds)."""
    started_at: float | None = None
    """When the alert began firing (for a resolution: how long it lasted)."""
    value: float | None = None
    threshold: float | None = None
    unit: str = ""
    suppressed: int = 0
    link: str | None = None
    """The alert's page on the dashboard, when its address is known."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The rule's filters and what it matched (``endpoint``, ``function``, ``fingerprint``…)."""

    def to_json(self) -> dict[str, Any]:
        """The camelCase JSON document a webhook posts."""
        return {
            "id": self.id,
            "type": f"alert.{self.status}",
            "projectId": self.project_id,
            "ruleId": self.rule_id,
            "ruleName": self.rule_name,
            "ruleType": self.rule_type,
            "status": self.status,
            "summary": self.summary,
            "at": _iso(self.at),
            "startedAt": None if self.started_at is None else _iso(self.started_at),
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "suppressed": self.suppressed,
            "link": self.link,
            "labels": dict(self.labels),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending one notification to one target, after every retry."""

    ok: bool
    attempts: int
    reason: str | None = None
    """Why it failed, or a note on how it succeeded; a line a person reads in the history."""
    disable: bool = False
    """The target is gone for good (a webhook's 410): stop sending to it and tell the owner."""
    tries: tuple[str, ...] = ()
    """Each attempt's outcome in order, as the history lists them ("HTTP 500", "accepted")."""


@runtime_checkable
class Channel(Protocol):
    """Delivers notifications of one kind (``name``: ``email``, ``webhook``, ``inapp``…).

    ``validate`` checks a rule's target for this channel (``{"to": "ops@example.com"}``)
    and returns it normalised with the problems found, each a
    :class:`~asgimon.errors.FieldError` whose field is relative to the target
    (``to``, ``url``). ``send`` delivers, retrying as the channel sees fit within its
    deadline, and never raises for a failed delivery.
    """

    name: str

    def validate(self, target: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]: ...

    async def send(self, notification: Notification, target: Mapping[str, Any]) -> Delivery: ...

    async def aclose(self) -> None: ...


ChannelFactory = Callable[["Settings"], "Channel | None"]
"""Builds a channel from the settings, or None when the settings turn it off."""


def load_channels(settings: Settings) -> dict[str, Channel]:
    """Every channel the installed entry points offer and the settings enable, by name.

    A plugin that fails to load or to build is logged and left out: a broken third-party
    package must not stop the host from starting. A setting it refuses
    (:class:`~asgimon.errors.ConfigError`, a bad ``ALERTS_SMTP_URL``) does, like any bad
    setting: it names the variable.
    """
    channels: dict[str, Channel] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            factory = ep.load()
            channel = factory(settings)
        except ConfigError:
            raise
        except Exception:
            log.exception("asgimon: alert channel plugin %r failed to load", ep.name)
            continue
        if channel is None:
            continue
        if not isinstance(channel, Channel):
            log.error("asgimon: alert channel plugin %r is not a Channel", ep.name)
            continue
        if channel.name in channels:
            log.error("asgimon: two alert channels are named %r; keeping the first", channel.name)
            continue
        channels[channel.name] = channel
    return channels
