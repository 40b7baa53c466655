"""Deliveries: each notification handed to its channels off the engine's path, each outcome
written to the history.

Every target (an address list, a URL, a project's in-app list) has its own bounded queue
and worker, so a webhook that hangs holds back only itself, and only up to its deadline;
the engine never waits for a delivery, and a target's notifications arrive in order. Past
the bound a delivery is recorded as not sent, never silently lost. A storm across many
rules is capped per target: at most ``rate`` notifications a minute reach one target, the
rest are recorded as not sent. Each attempt is bounded twice: by the channel's own deadline
and, in case a plugin does not keep it, by :attr:`Outbox.hard_deadline`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .channels import Channel, Delivery, Notification
from .records import DELIVERY, HistoryEntry

log = logging.getLogger("asgimon.alerts")

MAX_QUEUED = 100
"""Notifications waiting for one target; past it they are recorded as not sent."""
MAX_TARGETS = 1000
IDLE_S = 60.0

History = Callable[[list[HistoryEntry]], Awaitable[None]]
Disable = Callable[[str, str, Mapping[str, Any]], Awaitable[None]]
"""Mark a rule's channel (by its type and target) as gone for good: a webhook's 410."""


def describe(target: Mapping[str, Any]) -> dict[str, Any]:
    """The target as the history shows it: never its secret."""
    return {k: v for k, v in target.items() if k not in ("secret", "password")}


@dataclass(frozen=True, slots=True, eq=False)
class Job:
    notification: Notification
    channel: str
    index: int
    target: Mapping[str, Any]


class Outbox:
    def __init__(
        self,
        channels: Mapping[str, Channel],
        history: History,
        disable: Disable,
        *,
        hard_deadline: float,
        rate: int = 30,
    ) -> None:
        self.channels = channels
        self.history = history
        self.disable = disable
        self.hard_deadline = hard_deadline
        self.rate = rate
        self.counts = {"delivered": 0, "failed": 0, "dropped": 0, "rateLimited": 0}
        self._sent: dict[str, deque[float]] = {}
        self._queues: dict[str, asyncio.Queue[Job]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._running = False
        self._busy = 0
        self._current: set[Job] = set()

    def start(self) -> None:
        self._running = True

    @staticmethod
    def target_key(job: Job) -> str:
        """One queue, one worker and one rate per target: an address list, a URL, or (in
        app) the project."""
        if not job.target:
            return f"{job.channel}:{job.notification.project_id}"
        return job.channel + ":" + json.dumps(describe(job.target), sort_keys=True, default=str)

    async def put(self, job: Job) -> None:
        if job.channel not in self.channels or not self._running:
            await self._record(job, Delivery(False, 0, f"the {job.channel} channel is not enabled"))
            return
        key = self.target_key(job)
        if not self._within_rate(key):
            self.counts["rateLimited"] += 1
            reason = f"not sent: this target already had {self.rate} notifications this minute"
            await self._record(job, Delivery(False, 0, reason))
            return
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= MAX_TARGETS:
                self.counts["dropped"] += 1
                reason = f"not sent: {MAX_TARGETS} other targets are still being delivered to"
                await self._record(job, Delivery(False, 0, reason))
                return
            queue = self._queues[key] = asyncio.Queue(MAX_QUEUED)
            self._workers[key] = asyncio.get_running_loop().create_task(
                self._work(key, queue), name=f"asgimon-alerts-{job.channel}"
            )
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            await self._record(job, Delivery(False, 0, "not sent: this target's queue is full"))

    def _within_rate(self, key: str) -> bool:
        now = time.monotonic()
        sent = self._sent.setdefault(key, deque())
        while sent and now - sent[0] >= 60.0:
            sent.popleft()
        if len(sent) >= self.rate:
            return False
        sent.append(now)
        if len(self._sent) > 10_000:  # targets long quiet are forgotten
            self._sent = {k: v for k, v in self._sent.items() if v and now - v[-1] < 60.0}
        return True

    async def send_now(self, job: Job) -> Delivery:
        """Deliver while the caller waits (a test notification), recorded like the others."""
        delivery = await self._deliver(job)
        await self._record(job, delivery)
        return delivery

    async def _work(self, key: str, queue: asyncio.Queue[Job]) -> None:
        """One target's deliveries in order (a resolution never overtakes its firing); a
        target that hangs holds back only itself. Gone once idle for a while."""
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_S):
                        job = await queue.get()
                except TimeoutError:
                    if queue.empty():
                        return
                    continue
                self._busy += 1
                self._current.add(job)
                try:
                    delivery = await self._deliver(job)
                    await self._record(job, delivery)
                    if delivery.disable:
                        await self.disable(job.notification.rule_id, job.channel, job.target)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("asgimon: recording an alert delivery failed")
                finally:
                    self._current.discard(job)
                    self._busy -= 1
                    queue.task_done()
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]
                self._workers.pop(key, None)

    async def _deliver(self, job: Job) -> Delivery:
        channel = self.channels.get(job.channel)
        if channel is None:
            return Delivery(False, 0, f"the {job.channel} channel is not enabled")
        try:
            async with asyncio.timeout(self.hard_deadline):
                return await channel.send(job.notification, job.target)
        except TimeoutError:
            return Delivery(False, 1, f"abandoned after {self.hard_deadline:g} s")
        except Exception as exc:  # a plugin that raises must not take the others down
            log.exception("asgimon: the %s channel raised", job.channel)
            return Delivery(False, 1, f"the channel raised {type(exc).__name__}: {exc}"[:300])

    async def _record(self, job: Job, delivery: Delivery) -> None:
        self.counts["delivered" if delivery.ok else "failed"] += 1
        n = job.notification
        entry = HistoryEntry(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{n.id}/{job.channel}/{job.index}")),
            project_id=n.project_id,
            rule_id=n.rule_id,
            at=time.time(),
            kind=DELIVERY,
            body={
                "notificationId": n.id,
                "status": n.status,
                "channel": job.channel,
                "target": describe(job.target),
                "ok": delivery.ok,
                "attempts": delivery.attempts,
                "reason": delivery.reason,
                "tries": list(delivery.tries),
                "disabled": delivery.disable,
            },
        )
        try:
            await self.history([entry])
        except Exception as exc:
            log.warning("asgimon: could not record an alert delivery: %s", exc)

    @property
    def idle(self) -> bool:
        return not self._busy and all(q.empty() for q in self._queues.values())

    async def settled(self, timeout: float = 5.0) -> bool:
        """Wait until every queued delivery is done (within ``timeout``); whether they are."""
        for _ in range(max(1, int(timeout / 0.005))):
            if self.idle:
                return True
            await asyncio.sleep(0.005)
        return self.idle

    async def drain(self, timeout: float) -> None:
        """Let queued deliveries finish within ``timeout``, then stop the workers."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            if self.idle:
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        # Cut short at shutdown: what was being sent, or waited, is recorded as not sent,
        # never silently lost.
        self._running = False
        unsent = list(self._current)
        for queue in self._queues.values():
            while not queue.empty():
                unsent.append(queue.get_nowait())
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.wait(workers)
        self._workers = {}
        self._queues = {}
        for job in unsent:
            await self._record(job, Delivery(False, 0, "not sent: the process shut down first"))

    def report(self) -> dict[str, Any]:
        queued = sum(q.qsize() for q in self._queues.values())
        return {
            **self.counts,
            "queued": queued,
            "targets": len(self._queues),
            "inFlight": self._busy,
        }
