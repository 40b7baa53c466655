"""Alert records and history: the same behaviour from every backend."""

from __future__ import annotations

import asyncio
import time

from asgimon import Storage
from asgimon.alerts.records import DELIVERY, RULE, STATE, TRANSITION, HistoryEntry, Record


async def test_a_record_is_written_read_replaced_and_deleted(storage: Storage) -> None:
    rule = Record(RULE, "r1", "p", {"name": "errors", "threshold": 5})
    first = await storage.put_alert_record(rule)
    assert first is not None
    assert first.version == 1
    other = await storage.put_alert_record(Record(RULE, "r2", "q", {"name": "latency"}))
    assert other is not None

    assert [r.id for r in await storage.alert_records(RULE)] == ["r1", "r2"]
    (held,) = await storage.alert_records(RULE, project_id="p")
    assert held.body == {"name": "errors", "threshold": 5}
    assert held.version == 1
    assert abs(held.updated_at - time.time()) < 5
    assert [r.id for r in await storage.alert_records(RULE, ids=["r2", "nope"])] == ["r2"]
    assert await storage.alert_records(STATE) == []

    rule.body["threshold"] = 9
    second = await storage.put_alert_record(rule)
    assert second is not None
    assert second.version == 2
    (held,) = await storage.alert_records(RULE, ids=["r1"])
    assert held.body["threshold"] == 9

    assert await storage.delete_alert_record(RULE, "r1") is True
    assert await storage.delete_alert_record(RULE, "r1") is False
    assert [r.id for r in await storage.alert_records(RULE)] == ["r2"]


async def test_a_conditional_write_succeeds_only_on_the_version_read(storage: Storage) -> None:
    state = Record(STATE, "r1", "p", {"status": "pending"})
    assert await storage.put_alert_record(state, expect=1) is None  # nothing held yet
    created = await storage.put_alert_record(state, expect=0)
    assert created is not None
    assert created.version == 1
    assert await storage.put_alert_record(state, expect=0) is None

    firing = Record(STATE, "r1", "p", {"status": "firing"})
    assert (await storage.put_alert_record(firing, expect=1)) is not None
    stale = Record(STATE, "r1", "p", {"status": "ok"})
    assert await storage.put_alert_record(stale, expect=1) is None
    (held,) = await storage.alert_records(STATE, ids=["r1"])
    assert held.body == {"status": "firing"}
    assert held.version == 2


async def test_of_many_writers_on_one_version_exactly_one_wins(storage: Storage) -> None:
    await storage.put_alert_record(Record(STATE, "r1", "p", {"status": "ok"}))
    attempts = [
        storage.put_alert_record(Record(STATE, "r1", "p", {"by": i}), expect=1) for i in range(8)
    ]
    won = [r for r in await asyncio.gather(*attempts) if r is not None]
    assert len(won) == 1
    (held,) = await storage.alert_records(STATE, ids=["r1"])
    assert held.body == won[0].body
    assert held.version == 2


async def test_history_is_appended_once_and_read_newest_first(storage: Storage) -> None:
    now = time.time()
    entries = [
        HistoryEntry("h1", "p", "r1", now - 30, TRANSITION, {"to": "pending"}),
        HistoryEntry("h2", "p", "r1", now - 20, TRANSITION, {"to": "firing"}),
        HistoryEntry("h3", "p", "r1", now - 19, DELIVERY, {"channel": "email", "ok": True}),
        HistoryEntry("h4", "p", "r2", now - 10, TRANSITION, {"to": "firing"}),
        HistoryEntry("h5", "q", "r9", now - 5, TRANSITION, {"to": "firing"}),
    ]
    await storage.add_alert_history(entries)
    retried = HistoryEntry("h2", "p", "r1", now, TRANSITION, {"to": "changed"})
    await storage.add_alert_history([retried])

    got = await storage.alert_history("p")
    assert [e.id for e in got] == ["h4", "h3", "h2", "h1"]
    assert got[2].body == {"to": "firing"}
    assert abs(got[2].at - (now - 20)) < 0.001
    assert [e.id for e in await storage.alert_history("p", rule_id="r1")] == ["h3", "h2", "h1"]
    transitions = await storage.alert_history("p", rule_id="r1", kinds=[TRANSITION])
    assert [e.id for e in transitions] == ["h2", "h1"]
    assert [e.id for e in await storage.alert_history("p", before=now - 19.5)] == ["h2", "h1"]
    assert [e.id for e in await storage.alert_history("p", limit=2)] == ["h4", "h3"]
    assert [e.id for e in await storage.alert_history("q")] == ["h5"]


async def test_the_purge_drops_history_older_than_its_cutoff(storage: Storage) -> None:
    now = time.time()
    await storage.add_alert_history(
        [
            HistoryEntry("old", "p", "r1", now - 100 * 86_400, TRANSITION, {}),
            HistoryEntry("new", "p", "r1", now - 60, TRANSITION, {}),
        ]
    )
    deleted = await storage.purge(before={"alert_history": now - 90 * 86_400})
    assert deleted == {"alert_history": 1}
    assert [e.id for e in await storage.alert_history("p")] == ["new"]


async def test_a_record_body_comes_back_exactly_as_written(storage: Storage) -> None:
    body = {"empty": [], "nested": {"list": [1, 2.5, "x"]}, "at": 1718000000.123456, "big": 2**53}
    await storage.put_alert_record(Record(RULE, "r1", "p", body))
    (held,) = await storage.alert_records(RULE, ids=["r1"])
    assert held.body == body
