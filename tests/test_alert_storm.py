"""An alert storm: ten thousand matching errors in a minute tell each rule's channels once,
and the next notification says how many were held back."""

from __future__ import annotations

import time

from asgimon.alerts.records import DELIVERY

from .alerting import open_shop

STORM = 10_000


async def test_ten_thousand_errors_in_a_minute_notify_once_per_rule_per_repeat() -> None:
    async for shop in open_shop(queue_max_events=50_000, batch_size=500):
        rules = [
            await shop.rule(type="critical_error", name=f"critical {i}", repeatInterval=3600)
            for i in range(3)
        ]
        counted = await shop.rule(type="error_count", threshold=100, window=300)
        started = time.time()
        for i in range(STORM):
            shop.monitor.capture_exception(
                RuntimeError(f"shard {i % 7} is down"), severity="critical"
            )
            if i % 1000 == 999:
                await shop.settle()  # batches arrive while the storm goes on
        await shop.settle()
        assert time.time() - started < 60
        await shop.evaluate(started + 30)
        await shop.evaluate(started + 60)

        for rule in rules:
            state = await shop.state(rule)
            assert state.status == "firing"
            assert state.matches == STORM
            (note,) = await shop.inbox(rule)
            assert note.body["status"] == "firing"
        window = await shop.inbox(counted)
        assert [n.body["status"] for n in window] == ["firing"]

        # The storm is over; after the quiet window each rule resolves, telling what it
        # held back since it first fired.
        await shop.evaluate(time.time() + 3601)
        for rule in rules:
            notes = await shop.inbox(rule)
            assert [n.body["status"] for n in notes] == ["firing", "resolved"]
            first_batch = notes[0].body["suppressed"]
            assert first_batch + notes[1].body["suppressed"] == STORM - 1


async def test_one_target_gets_at_most_its_rate_of_notifications_a_minute() -> None:
    async for shop in open_shop(alerts_channel_rate=5):
        rules = [await shop.rule(type="error_count", threshold=0, name=f"r{i}") for i in range(8)]
        await shop.client.get("/boom")
        await shop.evaluate()
        sent = [len(await shop.inbox(r)) for r in rules]
        assert sum(sent) == 5
        deliveries = await shop.monitor.storage.alert_history(
            "default", kinds=[DELIVERY], limit=100
        )
        refused = [d for d in deliveries if not d.body["ok"]]
        assert len(refused) == 3
        assert all("5 notifications this minute" in d.body["reason"] for d in refused)
        assert shop.engine.outbox.counts["rateLimited"] == 3
