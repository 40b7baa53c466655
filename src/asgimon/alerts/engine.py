"""The alert engine: rules judged as events are stored and once per period, each
transition stored once across every worker and told once to the rule's channels.

Event rules are judged in each worker on the events it stored (a subscriber of the
recorder, off the request path), window rules by whichever worker claims the period (the
scheduler's claims, shared by every worker and host). Either way the next state is
written on the version read: two workers that saw the same thing race, one write wins, and
only the winner notifies. The losers read again and fold what they saw into the winner's
state (a repeat held back, counted as suppressed), so nothing is told twice and nothing
seen is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from asgimon.errortracking.state import Transition
from asgimon.events import Event

from .channels import Channel, Delivery, load_channels
from .herald import Herald
from .matching import EVENT_KINDS, Match, match
from .measure import MEASURES, Measurement, StorageReader
from .records import MAX_RACES, RULE, SILENCE, STATE, TRANSITION, HistoryEntry, Record
from .rules import AlertRule
from .state import FIRING, OK, AlertState, Step, hit, judge, owed, quiet

if TYPE_CHECKING:
    from asgimon.settings import Settings
    from asgimon.storage.base import Storage

log = logging.getLogger("asgimon.alerts")

RULES_FRESH_S = 1.0
"""How long a worker's event path trusts the rules it read: a rule saved on another worker
takes effect here within this (at once on the worker that saved it)."""
SILENCES_KEPT_S = 7 * 86_400
"""How long an ended silence stays listed before the evaluation forgets it."""
SLICE_RULES = 50
"""Rules judged between two yields to the event loop."""
SLICE_MATCHES = 2000
"""Events matched against event rules between two yields."""
GROUP_RULES = {"new": "new_error_group", "regression": "error_regression"}


class AlertEngine:
    """Rules, their states and silences in storage; evaluation; deliveries."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        channels: Mapping[str, Channel] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.channels: dict[str, Channel] = (
            dict(channels) if channels is not None else load_channels(settings)
        )
        for channel in self.channels.values():
            attach = getattr(channel, "attach", None)
            if callable(attach):
                attach(storage)
        self.clock = clock
        self.counts = {
            "evaluations": 0,
            "transitions": 0,
            "notifications": 0,
            "silenced": 0,
            "races": 0,
            "failures": 0,
        }
        self.herald = Herald(
            settings, storage, self.channels, self.counts, clock, rule=self.rule, save=self.save
        )
        self.outbox = self.herald.outbox
        self.last_evaluation_ms: float | None = None
        self._rules: list[AlertRule] = []
        self._rules_at = -RULES_FRESH_S

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self.outbox.start()

    async def aclose(self, timeout: float) -> None:
        await self.outbox.drain(timeout)
        for channel in self.channels.values():
            try:
                await channel.aclose()
            except Exception:
                log.exception("asgimon: closing an alert channel failed")

    # -- rules, states, silences -------------------------------------------------------

    async def rules(self, project_id: str | None = None) -> list[AlertRule]:
        records = await self.storage.alert_records(RULE, project_id=project_id)
        rules = [AlertRule.from_record(r) for r in records]
        if project_id is None:
            self._rules, self._rules_at = rules, time.monotonic()
        return rules

    async def rule(self, rule_id: str) -> AlertRule | None:
        found = await self.storage.alert_records(RULE, ids=[rule_id])
        return AlertRule.from_record(found[0]) if found else None

    async def save(self, rule: AlertRule, *, by: str | None = None) -> AlertRule | None:
        """Store a new rule, or a change on the version it was read at (None if another
        change got there first)."""
        if not rule.version:
            rule.created_at = self.clock()
            rule.created_by = by
        written = await self.storage.put_alert_record(rule.to_record(), expect=rule.version)
        if written is None:
            return None
        self._rules_at = -RULES_FRESH_S
        return AlertRule.from_record(written)

    async def reset(self, rule: AlertRule, why: str) -> None:
        """Set the rule's state back to ok without telling anyone (its type changed: what
        it was firing for is no longer what it watches), and record it."""
        found = await self.storage.alert_records(STATE, ids=[rule.id])
        if not found:
            return
        before = AlertState.from_record(found[0])
        now = self.clock()
        await self.storage.put_alert_record(AlertState(OK, now).to_record(rule))
        if before.status != OK:
            body = {"from": before.status, "to": OK, "ruleName": rule.name, "reason": why}
            entry = HistoryEntry(str(uuid.uuid4()), rule.project_id, rule.id, now, TRANSITION, body)
            await self.herald.remember([entry])

    async def delete(self, rule_id: str) -> bool:
        gone = await self.storage.delete_alert_record(RULE, rule_id)
        await self.storage.delete_alert_record(STATE, rule_id)
        self._rules_at = -RULES_FRESH_S
        return gone

    async def states(self, rule_ids: Sequence[str]) -> dict[str, AlertState]:
        found = await self.storage.alert_records(STATE, ids=list(rule_ids))
        return {r.id: AlertState.from_record(r) for r in found}

    async def silences(self, project_id: str) -> list[Record]:
        return await self.storage.alert_records(SILENCE, project_id=project_id)

    async def _cached_rules(self) -> list[AlertRule]:
        if time.monotonic() - self._rules_at >= RULES_FRESH_S:
            await self.rules()
        return self._rules

    # -- judging -----------------------------------------------------------------------

    async def evaluate(self, now: float | None = None) -> dict[str, int]:
        """One period: every enabled window rule measured, every firing event rule checked
        for quiet. Runs on one worker per period (the scheduler's claim)."""
        started = time.perf_counter()
        now = self.clock() if now is None else now
        rules = await self.rules()
        held = {r.id: r for r in await self.storage.alert_records(STATE, ids=[r.id for r in rules])}
        silences = await self.storage.alert_records(SILENCE)
        for ended in [x for x in silences if x.body.get("until", 0) < now - SILENCES_KEPT_S]:
            await self.storage.delete_alert_record(SILENCE, ended.id)
        reader = StorageReader(self.storage)
        changed = 0
        for i, rule in enumerate(rules):
            if i and not i % SLICE_RULES:
                await asyncio.sleep(0)  # many rules: let the host's requests in between
            record = held.get(rule.id)
            try:
                step_of = await self._judge(rule, AlertState.from_record(record), reader, now)
                if step_of is not None:
                    await self._advance(rule, step_of, now, silences, (record,))
                    changed += 1
            except Exception as exc:
                self.counts["failures"] += 1
                log.warning("asgimon: alert rule %s could not be evaluated: %s", rule.id, exc)
        self.counts["evaluations"] += 1
        self.last_evaluation_ms = (time.perf_counter() - started) * 1000
        return {"rules": len(rules), "changed": changed}

    async def _judge(
        self, rule: AlertRule, state: AlertState, reader: StorageReader, now: float
    ) -> Callable[[AlertState], Step] | None:
        """How the rule's state steps this period, or None where it stays as it is."""
        if not rule.enabled:
            if state.status == OK:
                return None
            return lambda s: (AlertState(OK, now), None, OK)
        if rule.is_event_rule:
            if quiet(rule, state, now) is None and owed(rule, state, now) is None:
                return None
            return lambda s: quiet(rule, s, now) or owed(rule, s, now) or (s, None, None)
        m: Measurement = await MEASURES[rule.type](rule, reader, now)

        def step_of(s: AlertState) -> Step:
            return judge(rule, s, m.value, m.breached, now, m.labels)

        nxt, notice, name = step_of(state)
        if notice is None and name is None and nxt.suppressed == state.suppressed:
            return None  # nothing changed that anyone reads: no write
        return step_of

    async def on_events(self, events: Sequence[Event]) -> None:
        """The recorder's subscriber: event rules judged on each stored batch."""
        by_source: dict[tuple[str, str], list[AlertRule]] = {}
        for r in await self._cached_rules():
            if r.enabled and r.type in EVENT_KINDS:
                by_source.setdefault((r.project_id, EVENT_KINDS[r.type]), []).append(r)
        if not by_source:
            return
        now = self.clock()
        seen: dict[str, tuple[AlertRule, int, Match]] = {}
        checked = 0
        for ev in events:
            for rule in by_source.get((ev.project_id, ev.kind), ()):
                checked += 1
                if not checked % SLICE_MATCHES:
                    await asyncio.sleep(0)  # a big batch and many rules: yield to requests
                found = match(rule, ev)
                if found is not None:
                    count = seen[rule.id][1] if rule.id in seen else 0
                    seen[rule.id] = (rule, count + 1, found)
        if not seen:
            return
        # One read of the states and one of the silences for the batch, not three round
        # trips per matching rule: a storm matches many rules at once.
        try:
            held = {r.id: r for r in await self.storage.alert_records(STATE, ids=list(seen))}
            silences = await self.storage.alert_records(SILENCE)
        except Exception as exc:
            self.counts["failures"] += 1
            log.warning("asgimon: event rules could not be judged: %s", exc)
            return
        for rule, count, (value, labels) in seen.values():
            await self._hit(rule, count, value, labels, now, silences, (held.get(rule.id),))

    async def on_group(self, transition: Transition) -> None:
        """The error tracker's listener: a new group, or a resolved one that came back."""
        rule_type = GROUP_RULES.get(transition.kind)
        if rule_type is None:
            return
        g = transition.state
        labels = {"fingerprint": g.fingerprint, "errorType": g.error_type, "message": g.message}
        for rule in await self._cached_rules():
            if rule.type != rule_type or not rule.enabled or rule.project_id != g.project_id:
                continue
            if rule.filters.get("severity", g.severity) != g.severity:
                continue
            await self._hit(rule, 1, float(g.count), labels, self.clock())

    async def _hit(
        self,
        rule: AlertRule,
        count: int,
        value: float | None,
        labels: dict[str, str],
        now: float,
        silences: list[Record] | None = None,
        first: tuple[Record | None] | None = None,
    ) -> None:
        try:
            await self._advance(
                rule, lambda s: hit(rule, s, count, value, labels, now), now, silences, first
            )
        except Exception as exc:
            self.counts["failures"] += 1
            log.warning("asgimon: alert rule %s could not be judged: %s", rule.id, exc)

    async def _advance(
        self,
        rule: AlertRule,
        step_of: Callable[[AlertState], Step],
        now: float,
        silences: list[Record] | None,
        first: tuple[Record | None] | None,
    ) -> None:
        """Write the step on the version read (``first``: the record already read); on a
        race, read again and step from what the winner left."""
        if silences is None:
            silences = await self.storage.alert_records(SILENCE, project_id=rule.project_id)
        for attempt in range(MAX_RACES):
            if attempt or first is None:
                found = await self.storage.alert_records(STATE, ids=[rule.id])
                held = found[0] if found else None
            else:
                held = first[0]
            state = AlertState.from_record(held)
            nxt, notice, name = step_of(state)
            silenced = notice is not None and self._silenced(rule, silences, now)
            if silenced and notice is not None and notice.status == FIRING:
                nxt.last_notified_at = None  # told once the silence ends, if still firing
                nxt.suppressed = notice.suppressed + 1
            written = await self.storage.put_alert_record(
                nxt.to_record(rule), expect=0 if held is None else held.version
            )
            if written is None:
                self.counts["races"] += 1
                continue
            await self.herald.announce(
                rule, state, nxt, notice, name, written.version, now, silenced
            )
            return
        raise RuntimeError(f"the state of {rule.id} kept changing under {MAX_RACES} writers")

    def _silenced(self, rule: AlertRule, silences: list[Record], now: float) -> bool:
        for s in silences:
            b = s.body
            if s.project_id != rule.project_id or b.get("until", 0) <= now:
                continue
            if b.get("ruleId") in (None, rule.id):
                return True
        return False

    async def test(self, rule: AlertRule) -> list[tuple[str, Delivery]]:
        """Send a test notification on each of the rule's channels now; each outcome."""
        return await self.herald.test(rule)

    def report(self) -> dict[str, Any]:
        return {
            **self.counts,
            "channels": sorted(self.channels),
            "lastEvaluationMs": self.last_evaluation_ms,
            "deliveries": self.outbox.report(),
        }
