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
        self._counts: dict[str, list[float]] = {}  # key -> [count, expires at]
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
        counts = self._counts
        spent: list[list[float]] = []
        best, left, resets = -1, 0, now
        for index, (head, tail, window, amount) in enumerate(limits):
            name = head + key + tail
            entry = counts.get(name)
            if entry is None or entry[1] <= now:
                entry = counts[name] = [0.0, now + window]
                self._order.setdefault(window, deque()).append((entry[1], name))
            entry[0] += cost
            order = self._order.get(window)
            if order and order[0][0] <= now:
                self._sweep(order, now)  # never the entry just counted: it has not expired
            remaining = amount - int(entry[0])
            if remaining < 0:
                entry[0] -= cost
                for taken in spent:
                    taken[0] -= cost
                return index, False, remaining + cost, entry[1]
            spent.append(entry)
            if best < 0 or remaining < left:
                best, left, resets = index, remaining, entry[1]
        return best, True, left, resets

    def standing(
        self, limits: Sequence[tuple[str, str, int, int]], key: str
    ) -> list[tuple[int, float]]:
        """Per limit, what remains and when its window resets, spending nothing."""
        now = time.time()
        out = []
        for head, tail, _, amount in limits:
            entry = self._counts.get(head + key + tail)
            if entry is None or entry[1] <= now:
                out.append((amount, now))
            else:
                out.append((max(0, amount - int(entry[0])), entry[1]))
        return out

    def forget(self, limits: Sequence[tuple[str, str, int, int]], key: str) -> None:
        for head, tail, _, _ in limits:
            self._counts.pop(head + key + tail, None)

    def _sweep(self, order: deque[tuple[float, str]], now: float) -> None:
        for _ in range(SWEEP_PER_CALL):
            if not order or order[0][0] > now:
                return
            expires, key = order.popleft()
            entry = self._counts.get(key)
            if entry is not None and entry[1] == expires:  # not renewed since
                del self._counts[key]

    def __len__(self) -> int:
        return len(self._counts)
