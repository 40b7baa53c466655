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


Limit = tuple[str, str, int, int]
"""A rule's limit as its ``counters`` hold it: the parts of its counter's name around the key
(``limits``' naming, which Redis keeps), its window and its amount."""


class _Table:
    """One limit's counters: per key its count and when its window ends (floats in two
    dicts, not a [count, expires] list per key: a float is no object the garbage collector
    walks, and tens of thousands of keys made every collection longer), and the windows
    oldest first, to forget."""

    __slots__ = ("counts", "expires", "order")

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.expires: dict[str, float] = {}
        self.order: deque[tuple[float, str]] = deque()


class Counters:
    def __init__(self) -> None:
        # Per limit, not per counter name: the name is a string of some 80 characters to
        # join and hash each request, where the limit's tuple and the key hash at once.
        self._tables: dict[Limit, _Table] = {}

    def _table(self, limit: Limit) -> _Table:
        table = self._tables.get(limit)
        if table is None:
            table = self._tables[limit] = _Table()
        return table

    def spend(self, limits: Sequence[Limit], key: str, cost: int) -> tuple[int, bool, int, float]:
        """Spend ``cost`` of ``key`` against every limit (a rule's ``counters``), at once and
        without an await: the deciding limit's index, whether it allows, what remains, when
        it resets. The count is this request's own, so what remains is exact however many
        requests land at once. A refused request is taken back from every limit it was
        counted against, its own included: it spends nothing."""
        now = time.time()
        tables = self._tables
        best, left, resets = -1, 0.0, now
        for index, limit in enumerate(limits):
            table = tables.get(limit) or self._table(limit)
            counts = table.counts
            expires = table.expires.get(key)
            if expires is None or expires <= now:
                expires = table.expires[key] = now + limit[2]
                counts[key] = 0.0
                order = table.order
                order.append((expires, key))
                # Windows are only ever added here: forgetting expired ones as each is added
                # bounds the memory, and a request in a window it has counted before never
                # pays for it.
                if order[0][0] <= now:
                    _sweep(table, now)  # never the entry just added: it has not expired
            count = counts[key] = counts[key] + cost
            remaining = limit[3] - count
            if remaining < 0:
                for spent in limits[: index + 1]:
                    tables[spent].counts[key] -= cost  # spent nothing, this limit's own too
                return index, False, int(remaining) + cost, expires
            if best < 0 or remaining < left:
                best, left, resets = index, remaining, expires
        return best, True, int(left), resets

    def standing(self, limits: Sequence[Limit], key: str) -> list[tuple[int, float]]:
        """Per limit, what remains and when its window resets, spending nothing."""
        now = time.time()
        out = []
        for limit in limits:
            table = self._tables.get(limit)
            expires = None if table is None else table.expires.get(key)
            if table is None or expires is None or expires <= now:
                out.append((limit[3], now))
            else:
                out.append((max(0, limit[3] - int(table.counts[key])), expires))
        return out

    def forget(self, limits: Sequence[Limit], key: str) -> None:
        for limit in limits:
            table = self._tables.get(limit)
            if table is not None:
                table.counts.pop(key, None)
                table.expires.pop(key, None)

    def __len__(self) -> int:
        return sum(len(t.counts) for t in self._tables.values())


def _sweep(table: _Table, now: float) -> None:
    order = table.order
    for _ in range(SWEEP_PER_CALL):
        if not order or order[0][0] > now:
            return
        expires, key = order.popleft()
        if table.expires.get(key) == expires:  # not renewed since
            del table.counts[key], table.expires[key]
