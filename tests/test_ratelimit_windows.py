"""The sliding window counter and the moving window in memory decide as ``limits`` does.

Each test drives one of asgimon's in-memory windows and ``limits``' own strategy on its
memory storage through the same requests at the same (fake) instants and compares every
answer: allowed or not, and what remains.
"""

from __future__ import annotations

import gc
import random

import pytest
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.aio.strategies import RateLimiter as LimitsStrategy

from asgimon.ratelimit.counters import Counters
from asgimon.ratelimit.policy import Rule, default_rule
from asgimon.ratelimit.windows import SWEEP_PER_CALL, MovingWindows, SlidingCounters

PEERS: dict[str, tuple[type[SlidingCounters | MovingWindows], type[LimitsStrategy]]] = {
    "sliding-window-counter": (SlidingCounters, SlidingWindowCounterRateLimiter),
    "moving-window": (MovingWindows, MovingWindowRateLimiter),
}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1_000_000.0]
    for where in (
        "asgimon.ratelimit.windows.time.time",
        "limits.aio.storage.memory.time.time",
        "limits.aio.strategies.time.time",
    ):
        monkeypatch.setattr(where, lambda: now[0])
    return now


@pytest.mark.parametrize("strategy", list(PEERS))
async def test_every_answer_is_the_one_limits_gives(strategy: str, clock: list[float]) -> None:
    ours_class, theirs_class = PEERS[strategy]
    ours, theirs = ours_class(), theirs_class(MemoryStorage())
    item = parse("10 per 6 seconds")
    rule = Rule("default", (item,))
    rng = random.Random(7)
    refused = 0
    for step in range(600):
        # Never twice the same span apart: at a window's very edge limits' own answers differ.
        clock[0] += rng.choice((0.0, rng.uniform(0, 0.4), rng.uniform(0, 3)))
        key, cost = rng.choice(("a", "b")), rng.choice((1, 1, 1, 2, 3))
        _, allowed, left, _ = ours.spend(rule.counters, key, cost)
        expected = await theirs.hit(item, "default", key, cost=cost)
        stats = await theirs.get_window_stats(item, "default", key)
        assert (allowed, left) == (expected, stats.remaining), (step, key, cost)
        assert ours.standing(rule.counters, key)[0][0] == stats.remaining
        refused += not allowed
    assert 100 < refused < 500, refused  # both answers were met often


@pytest.mark.parametrize("strategy", list(PEERS))
def test_a_rules_limits_are_spent_together_or_not_at_all(strategy: str, clock: list[float]) -> None:
    windows = PEERS[strategy][0]()
    rule = default_rule(3, 60, 1)  # 4 a minute, 6 in two minutes
    answers = [windows.spend(rule.counters, "k", 1) for _ in range(5)]
    assert [(index, allowed, left) for index, allowed, left, _ in answers] == [
        (0, True, 3),
        (0, True, 2),
        (0, True, 1),
        (0, True, 0),
        (0, False, 0),
    ]
    # The refusal spent nothing of the two-minute limit either: 6 - 4 left there.
    assert [left for left, _ in windows.standing(rule.counters, "k")] == [0, 2]
    assert windows.spend(rule.counters, "k", 99)[1:3] == (False, 0)  # a cost above any limit
    windows.forget(rule.counters, "k")
    assert [left for left, _ in windows.standing(rule.counters, "k")] == [4, 6]


def test_the_moving_window_frees_each_request_a_window_after_it(clock: list[float]) -> None:
    windows = MovingWindows()
    rule = Rule("r", (parse("3 per 10 seconds"),))
    times = []
    for _ in range(3):
        times.append(clock[0])
        assert windows.spend(rule.counters, "k", 1)[1]
        clock[0] += 2
    _, allowed, left, resets = windows.spend(rule.counters, "k", 1)
    assert (allowed, left, resets) == (False, 0, times[0] + 10)
    clock[0] = times[0] + 10.01  # the first has left the window, the others have not
    assert windows.spend(rule.counters, "k", 1)[1:3] == (True, 0)
    assert not windows.spend(rule.counters, "k", 1)[1]


def test_the_sliding_window_weighs_the_last_window_by_what_is_left_of_it(
    clock: list[float],
) -> None:
    windows = SlidingCounters()
    rule = Rule("r", (parse("10 per 60 seconds"),))
    clock[0] = 60 * 1000.0  # the start of a window
    for _ in range(10):
        assert windows.spend(rule.counters, "k", 1)[1]
    assert not windows.spend(rule.counters, "k", 1)[1]
    # A quarter into the next window the last ten weigh 7.5, counted down to 7: 3 more fit.
    clock[0] += 60 + 15
    answers = [windows.spend(rule.counters, "k", 1)[1:3] for _ in range(4)]
    assert answers == [(True, 2), (True, 1), (True, 0), (False, 0)]
    clock[0] += 45  # the next window's start: the ten are two windows old, the three weigh 3
    assert [left for left, _ in windows.standing(rule.counters, "k")] == [7]


@pytest.mark.parametrize("strategy", list(PEERS))
def test_idle_keys_are_forgotten_a_few_per_count(strategy: str, clock: list[float]) -> None:
    windows = PEERS[strategy][0]()
    rule = Rule("r", (parse("5 per 10 seconds"),))
    for i in range(200):
        windows.spend(rule.counters, f"k{i}", 1)
    assert len(windows) == 200
    clock[0] += 25  # every key idle for over two windows
    for i in range(30):
        windows.spend(rule.counters, f"new{i}", 1)
    # Each count forgets a few idle keys, never a live one.
    assert len(windows) == 200 - 30 * SWEEP_PER_CALL + 30
    for i in range(30, 60):
        windows.spend(rule.counters, f"new{i}", 1)
    assert len(windows) == 60
    assert [windows.standing(rule.counters, f"new{i}")[0][0] for i in range(60)] == [4] * 60


@pytest.mark.parametrize("make", [Counters, SlidingCounters])
def test_a_key_counted_leaves_nothing_for_the_garbage_collector_to_walk(
    make: type[Counters | SlidingCounters],
) -> None:
    # Tens of thousands of clients' counters would otherwise lengthen every full collection.
    windows = make()
    rule = default_rule(100, 60, 10)
    windows.spend(rule.counters, "warm", 1)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(5000):
        windows.spend(rule.counters, f"client-{i}", 1)
    gc.collect()
    assert len(windows) >= 5000
    assert len(gc.get_objects()) - before < 50
