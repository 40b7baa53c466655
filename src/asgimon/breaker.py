"""A circuit breaker for optional remote helpers (a Redis cache, a rate limiter's counters).

After ``threshold`` consecutive failures the breaker opens and calls are skipped; it lets
one call through again after ``base`` seconds, doubling the wait after each failed trial up
to ``max_wait``, and closes on the first success. A dependency that hangs then costs its
timeout a handful of times, not on every request.
"""

from __future__ import annotations

import time


class CircuitBreaker:
    def __init__(self, threshold: int = 5, base: float = 1.0, max_wait: float = 60.0) -> None:
        self.threshold = threshold
        self.base = base
        self.max_wait = max_wait
        self.failures = 0  # consecutive
        self.opened = 0  # times opened in a row, for the backoff
        self._retry_at = 0.0
        self._trial = False

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold

    def allow(self) -> bool:
        """Whether to try the call now (always while closed; one trial when the wait is up)."""
        if not self.is_open:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        # Half-open: this one call may go; the next waits for its outcome's verdict.
        self._retry_at = now + self._wait()
        self._trial = True
        return True

    def success(self) -> None:
        self.failures = 0
        self.opened = 0
        self._trial = False

    def failure(self) -> None:
        was_open = self.is_open
        self.failures += 1
        if not self.is_open:
            return
        if not was_open:
            self.opened = 1
        elif self._trial:
            self.opened += 1  # the trial failed: wait longer
        else:
            # A call let in before the breaker opened, failing late (many were in flight at
            # once): no new verdict, or eight such would stretch the wait to 64 s at once.
            return
        self._trial = False
        self._retry_at = time.monotonic() + self._wait()

    def _wait(self) -> float:
        return min(self.max_wait, self.base * 2.0 ** max(0, self.opened - 1))
