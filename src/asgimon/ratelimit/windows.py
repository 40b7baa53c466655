"""The sliding window counter and the moving window in process memory, for the host's limiter.

``limits``' async memory storage starts a sweep of every key after each count (and, for the
moving window, a thread hop per key): +130 µs a request with one client and +4.5 ms with
10,000 measured on the sliding window counter. These count as ``limits`` does, so a rule
means the same in memory and in Redis, but decide a request in one call without an await,
forget a key lazily when it is next counted and sweep a bounded number of idle keys with
each count (as :class:`~asgimon.ratelimit.counters.Counters` does for the fixed window).

Both spend a rule's limits all at once or not at all: :meth:`spend` tests every limit,
then counts against every one, with nothing in between that could interleave.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence

SWEEP_PER_CALL = 4  # idle keys forgotten per count, at most: memory stays bounded
Limits = Sequence[tuple[str, str, int, int]]  # a rule's counters: head, tail, window, amount
Spent = tuple[int, bool, int, float]  # the deciding limit, allowed, remaining, resets at


class SlidingCounters:
    """A count per window, and the previous window's weighted by how much of it is still
    within one window of now: ``previous * (1 - elapsed / window) + current``."""

    def __init__(self) -> None:
        # Per key and window number: floats, which the garbage collector never walks.
        self._counts: dict[str, float] = {}
        self._expires: dict[str, float] = {}
        self._order: dict[int, deque[tuple[float, str]]] = {}  # per window, oldest first

    def spend(self, limits: Limits, key: str, cost: int) -> Spent:
        now = time.time()
        looked = []
        for index, (head, tail, window, amount) in enumerate(limits):
            current_name, bucket, previous, current, weight = self._look(
                head + key + tail, window, now
            )
            weighted = previous * weight + current
            if math.floor(weighted) + cost > amount:
                left = max(0, amount - math.floor(weighted))
                return index, False, left, now + _reset_in(previous, current, weight, window)
            looked.append((current_name, bucket, window, amount, previous, current, weight))
        best, left, resets = -1, 0, now
        for index, (name, bucket, window, amount, previous, current, weight) in enumerate(looked):
            if name not in self._expires:
                # Kept through the next window too, where it is the previous one.
                expires = self._expires[name] = (bucket + 2) * window
                self._counts[name] = 0.0
                self._order.setdefault(window, deque()).append((expires, name))
            self._counts[name] += cost
            current += cost
            remaining = max(0, amount - math.floor(previous * weight + current))
            if best < 0 or remaining < left:
                best, left = index, remaining
                resets = now + _reset_in(previous, current, weight, window)
            self._sweep(self._order[window], now)
        return best, True, left, resets

    def standing(self, limits: Limits, key: str) -> list[tuple[int, float]]:
        """Per limit, what remains and when a request is freed, spending nothing."""
        now = time.time()
        out = []
        for head, tail, window, amount in limits:
            _, _, previous, current, weight = self._look(head + key + tail, window, now)
            remaining = max(0, amount - math.floor(previous * weight + current))
            out.append((remaining, now + _reset_in(previous, current, weight, window)))
        return out

    def forget(self, limits: Limits, key: str) -> None:
        now = time.time()
        for head, tail, window, _ in limits:
            bucket = int(now // window)
            for b in (bucket - 1, bucket):
                self._counts.pop(f"{head}{key}{tail}/{b}", None)
                self._expires.pop(f"{head}{key}{tail}/{b}", None)

    def _look(self, name: str, window: int, now: float) -> tuple[str, int, float, float, float]:
        """The current window's counter and number, the previous and current counts, and
        the share of the previous window still within one window of now."""
        bucket = int(now // window)
        current_name = f"{name}/{bucket}"
        previous = self._count(f"{name}/{bucket - 1}", now)
        weight = 1 - (now % window) / window
        return current_name, bucket, previous, self._count(current_name, now), weight

    def _count(self, name: str, now: float) -> float:
        expires = self._expires.get(name)
        return self._counts[name] if expires is not None and expires > now else 0.0

    def _sweep(self, order: deque[tuple[float, str]], now: float) -> None:
        for _ in range(SWEEP_PER_CALL):
            if not order or order[0][0] > now:
                return
            expires, name = order.popleft()
            if self._expires.get(name) == expires:
                del self._counts[name], self._expires[name]

    def __len__(self) -> int:
        return len(self._counts)


def _reset_in(previous: float, current: float, weight: float, window: int) -> float:
    """Seconds until the weighted count next drops by one, as ``limits`` reckons it."""
    if not (previous or current):
        return 0.0
    left_of_window = weight * window
    reset_in = left_of_window if current else math.inf
    if previous:
        reset_in = min(reset_in, left_of_window % (window / previous))
    return reset_in


class MovingWindows:
    """Every request's time (and cost) within the last window: a request is allowed when
    what those cost, and its own cost, is at most the limit."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[tuple[float, int]]] = {}
        self._spent: dict[str, int] = {}
        # Each key once: when its last hit leaves its window, the key, the window.
        self._order: deque[tuple[float, str, int]] = deque()

    def spend(self, limits: Limits, key: str, cost: int) -> Spent:
        now = time.time()
        names = []
        for index, (head, tail, window, amount) in enumerate(limits):
            name = head + key + tail
            spent = self._expire(name, now - window)
            if spent + cost > amount:  # a cost above the limit is refused with no hit held
                held = self._hits.get(name)
                return index, False, max(0, amount - spent), held[0][0] + window if held else now
            names.append(name)
        best, left, resets = -1, 0, now
        for index, (name, (_, _, window, amount)) in enumerate(zip(names, limits, strict=True)):
            hits = self._hits.get(name)
            if hits is None:
                hits = self._hits[name] = deque()
                self._spent[name] = 0
                self._order.append((now + window, name, window))
            hits.append((now, cost))
            spent = self._spent[name] = self._spent[name] + cost
            if best < 0 or amount - spent < left:
                best, left, resets = index, amount - spent, hits[0][0] + window
        self._sweep(now)
        return best, True, left, resets

    def standing(self, limits: Limits, key: str) -> list[tuple[int, float]]:
        now = time.time()
        out = []
        for head, tail, window, amount in limits:
            name = head + key + tail
            spent = self._expire(name, now - window)
            hits = self._hits.get(name)
            out.append((max(0, amount - spent), hits[0][0] + window if hits else now))
        return out

    def forget(self, limits: Limits, key: str) -> None:
        for head, tail, _, _ in limits:
            self._hits.pop(head + key + tail, None)
            self._spent.pop(head + key + tail, None)

    def _expire(self, name: str, cutoff: float) -> int:
        """What the key spent after ``cutoff``, older hits dropped."""
        hits = self._hits.get(name)
        if hits is None:
            return 0
        spent = self._spent[name]
        while hits and hits[0][0] <= cutoff:
            spent -= hits.popleft()[1]
        self._spent[name] = spent
        return spent

    def _sweep(self, now: float) -> None:
        """Forget keys whose last hit is a window old; a key hit since goes to the back."""
        order = self._order
        for _ in range(SWEEP_PER_CALL):
            if not order or order[0][0] > now:
                return
            _, name, window = order.popleft()
            hits = self._hits.get(name)
            if hits is None:
                continue  # forgotten by a reset: counted afresh, queued afresh
            if hits and hits[-1][0] + window > now:
                order.append((hits[-1][0] + window, name, window))
            else:
                self._hits.pop(name, None)
                self._spent.pop(name, None)

    def __len__(self) -> int:
        return len(self._hits)
