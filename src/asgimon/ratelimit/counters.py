"""Fixed-window counters in process memory, for the host app's limiter.

``limits``' own async memory storage expires keys by sweeping all of them every 10 ms on the
event loop: with 20,000 clients that sweep held the loop for most of its time (+320 µs a
request measured, ``benchmarks/ratelimit.py``). Here a counter expires lazily, when its key
is next counted, and a bounded sweep of the oldest windows runs with each count, so the cost
of a request does not grow with the number of keys. :meth:`Counters.spend` decides a
request without an await; :meth:`Counters.standing` and :meth:`Counters.forget` serve the
administration's usage and reset.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

SWEEP_PER_CALL = 4  # expired windows forgotten per count, at most: memory stays bounded


class Counters:
    def __init__(self) -> None:
        # Floats in two dicts, not a [count, expires] list per key: a float is no object the
        # garbage collector walks, and tens of thousands of keys made every collection longer.
        self._counts: dict[str, float] = {}
        self._expires: dict[str, float] = {}
        # Per window length, (expires at, key) oldest first: a long window at the head of one
        # queue must not keep the short ones behind it from being forgotten.
        self._order: dict[int, deque[tuple[float, str]]] = {}

    def spend(
        self, limits: Sequence[tuple[str, str, int, int]], key: str, cost: int
    ) -> tuple[int, bool, int, float]:
        """Spend ``cost`` of ``key`` against every limit (a rule's ``counters``: the parts of
        the counter's name around the key, the window, the amount), at once and without an
        await: the deciding limit's index, whether it allows, what remains, when it resets.
        The count is this request's own, so what remains is exact however many requests land
        at once. A refused request is taken back from every limit it was counted against, its
        own included: it spends nothing."""
        now = time.time()
        counts, expiries = self._counts, self._expires
        spent: list[str] = []
        best, left, resets = -1, 0, now
        for index, (head, tail, window, amount) in enumerate(limits):
            name = head + key + tail
            expires = expiries.get(name)
            if expires is None or expires <= now:
                expires = expiries[name] = now + window
                counts[name] = 0.0
                self._order.setdefault(window, deque()).append((expires, name))
            count = counts[name] = counts[name] + cost
            order = self._order.get(window)
            if order and order[0][0] <= now:
                self._sweep(order, now)  # never the entry just counted: it has not expired
            remaining = amount - int(count)
            if remaining < 0:
                for taken in (*spent, name):
                    counts[taken] -= cost
                return index, False, remaining + cost, expires
            spent.append(name)
            if best < 0 or remaining < left:
                best, left, resets = index, remaining, expires
        return best, True, left, resets

    def standing(
        self, limits: Sequence[tuple[str, str, int, int]], key: str
    ) -> list[tuple[int, float]]:
        """Per limit, what remains and when its window resets, spending nothing."""
        now = time.time()
        out = []
        for head, tail, _, amount in limits:
            name = head + key + tail
            expires = self._expires.get(name)
            if expires is None or expires <= now:
                out.append((amount, now))
            else:
                out.append((max(0, amount - int(self._counts[name])), expires))
        return out

    def forget(self, limits: Sequence[tuple[str, str, int, int]], key: str) -> None:
        for head, tail, _, _ in limits:
            self._counts.pop(head + key + tail, None)
            self._expires.pop(head + key + tail, None)

    def _sweep(self, order: deque[tuple[float, str]], now: float) -> None:
        for _ in range(SWEEP_PER_CALL):
            if not order or order[0][0] > now:
                return
            expires, key = order.popleft()
            if self._expires.get(key) == expires:  # not renewed since
                del self._counts[key], self._expires[key]

    def __len__(self) -> int:
        return len(self._counts)
