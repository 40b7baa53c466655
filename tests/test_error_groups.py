"""Error groups' lifecycle: the state changes, kept by every backend, for every worker."""

from __future__ import annotations

import asyncio
import time

import pytest

from asgimon import ErrorEvent, Storage
from asgimon.errortracking.lifecycle import Lifecycle
from asgimon.errortracking.state import (
    GroupState,
    Seen,
    Transition,
    effective,
    group_events,
    ignore,
    observe,
    resolve,
    unresolve,
)

T0 = 1_790_000_000.0


def error(ts: float, fp: str = "fp1", project: str = "p1", **kw: object) -> ErrorEvent:
    fields: dict[str, object] = {
        "error_type": "ValueError",
        "message": f"bad {ts}",
        "severity": "medium",
    }
    fields.update(kw)
    return ErrorEvent(project_id=project, timestamp=ts, fingerprint=fp, **fields)  # type: ignore[arg-type]


def seen(ts: float, n: int = 1, severity: str = "medium") -> Seen:
    return Seen(n, ts, ts, "ValueError", "bad", severity, "rel-1", "rel-1")


def test_a_first_occurrence_makes_a_new_unresolved_group() -> None:
    state, t = observe(None, "p1", "fp1", seen(T0, 3))
    assert t is not None
    assert t.kind == "new"
    assert (state.status, state.count, state.first_seen, state.first_release) == (
        "unresolved",
        3,
        T0,
        "rel-1",
    )


def test_a_resolved_group_that_recurs_regresses_once_and_counts_it() -> None:
    state, _ = observe(None, "p1", "fp1", seen(T0))
    state = resolve(state, T0 + 10, "ann")
    # An occurrence from before the resolve (late in arriving) is no regression.
    late, t = observe(state, "p1", "fp1", seen(T0 + 5))
    assert t is None
    assert late.status == "resolved"
    again, t = observe(late, "p1", "fp1", seen(T0 + 20))
    assert t is not None
    assert t.kind == "regression"
    assert (again.status, again.regressions, again.regressed, again.regressed_at) == (
        "unresolved",
        1,
        True,
        T0 + 20,
    )
    more, t = observe(again, "p1", "fp1", seen(T0 + 30))
    assert t is None
    assert more.regressions == 1
    assert more.count == 4


def test_ignore_for_a_count_lasts_that_many_occurrences() -> None:
    state, _ = observe(None, "p1", "fp1", seen(T0))
    state = ignore(state, T0 + 1, "ann", count=5)
    state, t = observe(state, "p1", "fp1", seen(T0 + 2, n=4))
    assert t is None
    assert (state.status, state.ignored_seen) == ("ignored", 4)
    state, t = observe(state, "p1", "fp1", seen(T0 + 3))
    assert t is not None
    assert t.kind == "unignored"
    assert (state.status, state.ignore_count, state.ignored_seen) == ("unresolved", None, 0)


def test_ignore_until_a_date_ends_at_that_date_even_without_recurrence() -> None:
    state, _ = observe(None, "p1", "fp1", seen(T0))
    state = ignore(state, T0 + 1, "ann", until=T0 + 100)
    assert effective(state, T0 + 99).status == "ignored"
    assert effective(state, T0 + 100).status == "unresolved"
    state, t = observe(state, "p1", "fp1", seen(T0 + 50))
    assert t is None
    assert state.status == "ignored"
    state, t = observe(state, "p1", "fp1", seen(T0 + 150))
    assert t is not None
    assert t.kind == "unignored"
    assert state.status == "unresolved"


def test_ignore_forever_outlasts_any_number_of_occurrences() -> None:
    state, _ = observe(None, "p1", "fp1", seen(T0))
    state = ignore(state, T0 + 1, None)
    state, t = observe(state, "p1", "fp1", seen(T0 + 10**6, n=10**6))
    assert t is None
    assert state.status == "ignored"
    assert unresolve(state, T0 + 2, "bo").status == "unresolved"


def test_severity_is_the_highest_seen_and_the_message_the_latest() -> None:
    state, _ = observe(None, "p1", "fp1", seen(T0, severity="critical"))
    later = Seen(1, T0 + 5, T0 + 5, "ValueError", "newest", "low", None, "rel-2")
    state, _ = observe(state, "p1", "fp1", later)
    assert (state.severity, state.message, state.last_release, state.first_release) == (
        "critical",
        "newest",
        "rel-2",
        "rel-1",
    )


def test_a_batch_is_folded_per_project_and_group() -> None:
    events = [error(T0 + i, fp=f"fp{i % 2}", project=f"p{i % 3}") for i in range(12)]
    folded = group_events(events)
    assert sorted(folded) == ["p0", "p1", "p2"]
    assert sum(s.count for groups in folded.values() for s in groups.values()) == 12
    assert folded["p0"]["fp0"].first == T0
    assert folded["p0"]["fp0"].last == T0 + 6


# -- every backend --------------------------------------------------------------------


async def test_storage_keeps_group_states_and_versions_them(storage: Storage) -> None:
    assert await storage.error_groups("p1") == []

    def create(held: dict[str, GroupState | None]) -> list[GroupState]:
        assert held == {"fp1": None, "fp2": None}
        return [observe(None, "p1", fp, seen(T0))[0] for fp in held]

    written = await storage.change_error_groups("p1", ["fp2", "fp1"], create)
    assert sorted((s.fingerprint, s.version) for s in written) == [("fp1", 1), ("fp2", 1)]
    got = {s.fingerprint: s for s in await storage.error_groups("p1")}
    assert set(got) == {"fp1", "fp2"}
    assert got["fp1"].first_seen == pytest.approx(T0)
    assert await storage.error_groups("p2") == []
    only = await storage.error_groups("p1", ["fp2", "nope"])
    assert [s.fingerprint for s in only] == ["fp2"]

    def resolve_it(held: dict[str, GroupState | None]) -> list[GroupState]:
        held_state = held["fp1"]
        assert held_state is not None
        assert held_state.version == 1
        return [resolve(held_state, T0 + 60, "ann")]

    (after,) = await storage.change_error_groups("p1", ["fp1"], resolve_it)
    assert after.version == 2
    (stored,) = await storage.error_groups("p1", ["fp1"])
    assert (stored.status, stored.changed_by, stored.version) == ("resolved", "ann", 2)
    assert stored.resolved_at == pytest.approx(T0 + 60)
    # A change that writes nothing leaves no trace, not even an empty group.
    assert await storage.change_error_groups("p1", ["fp9"], lambda held: []) == []
    assert {s.fingerprint for s in await storage.error_groups("p1")} == {"fp1", "fp2"}


async def test_concurrent_changes_to_one_group_lose_nothing(storage: Storage) -> None:
    lifecycle = Lifecycle(storage)
    batches = [[error(T0 + i * 10 + j) for j in range(5)] for i in range(8)]
    await asyncio.gather(*(lifecycle(batch) for batch in batches))
    (state,) = await storage.error_groups("p1")
    assert state.count == 40
    assert state.first_seen == pytest.approx(T0)
    assert state.last_seen == pytest.approx(T0 + 74)
    assert lifecycle.transitions["new"] == 1


async def test_purge_forgets_groups_not_seen_since_the_cutoff(storage: Storage) -> None:
    lifecycle = Lifecycle(storage)
    await lifecycle([error(T0, fp="old"), error(T0 + 1000, fp="recent")])
    await storage.purge(before={"error_groups": T0 + 500})
    assert [s.fingerprint for s in await storage.error_groups("p1")] == ["recent"]


async def test_a_regression_reaches_the_listeners_once(storage: Storage) -> None:
    lifecycle = Lifecycle(storage)
    heard: list[Transition] = []

    async def listener(t: Transition) -> None:
        heard.append(t)

    lifecycle.listen(listener)
    await lifecycle([error(T0), error(T0 + 1)])
    await storage.change_error_groups(
        "p1",
        ["fp1"],
        lambda held: [resolve(held["fp1"], T0 + 5, "ann")],  # type: ignore[arg-type]
    )
    await lifecycle([error(T0 + 10), error(T0 + 11)])
    assert [t.kind for t in heard] == ["new", "regression"]
    regression = heard[1].state
    assert (regression.status, regression.regressions, regression.count) == ("unresolved", 1, 4)


async def test_a_failing_listener_is_counted_and_the_others_still_hear(storage: Storage) -> None:
    lifecycle = Lifecycle(storage)
    heard: list[str] = []

    async def broken(t: Transition) -> None:
        raise RuntimeError("listener down")

    async def fine(t: Transition) -> None:
        heard.append(t.kind)

    lifecycle.listen(broken)
    lifecycle.listen(fine)
    await lifecycle([error(time.time())])
    assert heard == ["new"]
    assert lifecycle.listener_failures == 1
