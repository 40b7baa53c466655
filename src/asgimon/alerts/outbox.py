"""Deliveries: each notification handed to its channels off the engine's path, each outcome
written to the history.

Every channel has its own bounded queue and a few workers, so an SMTP server that hangs
holds back only email, and only up to the channel's deadline; the engine never waits for
a delivery. Past the bound a delivery is recorded as failed ("queue full"), never silently
lost. A storm across many rules is capped per target: at most ``rate`` notifications a
minute reach one address or URL, the rest are recorded as not sent. Each attempt is bounded
twice: by the channel's own deadline and, in case a plugin does not keep it, by
:attr:`Outbox.hard_deadline`.
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

WORKERS_PER_CHANNEL = 4
MAX_QUEUED = 1000

History = Callable[[list[HistoryEntry]], Awaitable[None]]
Disable = Callable[[str, int], Awaitable[None]]
"""Mark a rule's channel (by its index) as gone for good: a webhook's 410."""


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
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self._current: set[Job] = set()

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        for name in self.channels:
            queue: asyncio.Queue[Job] = asyncio.Queue(MAX_QUEUED)
            self._queues[name] = queue
            for i in range(WORKERS_PER_CHANNEL):
                task = loop.create_task(self._work(queue), name=f"asgimon-alerts-{name}-{i}")
                self._tasks.append(task)

    async def put(self, job: Job) -> None:
        queue = self._queues.get(job.channel)
        if queue is None:
            await self._record(job, Delivery(False, 0, f"the {job.channel} channel is not enabled"))
            return
        if not self._within_rate(job):
            self.counts["rateLimited"] += 1
            reason = f"not sent: this target already had {self.rate} notifications this minute"
            await self._record(job, Delivery(False, 0, reason))
            return
        try:
            queue.put_nowait(job)
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            await self._record(job, Delivery(False, 0, "not sent: the channel's queue is full"))

    def _within_rate(self, job: Job) -> bool:
        key = job.channel + json.dumps(describe(job.target), sort_keys=True, default=str)
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

    async def _work(self, queue: asyncio.Queue[Job]) -> None:
        while True:
            job = await queue.get()
            self._busy += 1
            self._current.add(job)
            try:
                delivery = await self._deliver(job)
                await self._record(job, delivery)
                if delivery.disable:
                    await self.disable(job.notification.rule_id, job.index)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("asgimon: recording an alert delivery failed")
            finally:
                self._current.discard(job)
                self._busy -= 1
                queue.task_done()

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
        unsent = list(self._current)
        for queue in self._queues.values():
            while not queue.empty():
                unsent.append(queue.get_nowait())
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        self._queues = {}
        for job in unsent:
            await self._record(job, Delivery(False, 0, "not sent: the process shut down first"))

    def report(self) -> dict[str, Any]:
        queued = {name: q.qsize() for name, q in self._queues.items()}
        return {**self.counts, "queued": queued, "inFlight": self._busy}
