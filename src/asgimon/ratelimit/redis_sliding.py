"""The sliding window counter in Redis in one round trip: every limit of a request spent, or
none.

``limits`` tests each limit, then hits each, then reads each one's window back: six round
trips for the default limit with its burst, and a request racing between the tests and the
hits may be counted against one limit and refused by the other. Here one script does it all
atomically, counting as ``limits``' own script does and on the keys it uses
(``{prefix}:{{item key}}`` for the current window, ``…/-1`` for the previous one), so its
reads (usage) and clears (reset) see the same counters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from .redis_window import RedisScript

# KEYS: per limit its previous window's counter, then its current one's. ARGV[1]: the cost;
# then per limit its amount and its window (s). Each limit is read (the current window
# shifted to the previous one once it is over, as limits does), and all must allow the cost
# before any is counted. Answers {1, p1, pt1, c1, ct1, p2…} (counts, TTLs in ms, after the
# hit) when all allow it, else {0, i, p, pt, c, ct} for the first limit i that refuses it.
_SPEND = """
local cost = tonumber(ARGV[1])
local n = #KEYS / 2
local seen = {}
for i = 1, n do
  local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[2 * i])
  local expiry = tonumber(ARGV[2 * i + 1]) * 1000
  local ttl = tonumber(redis.call('PTTL', current))
  if ttl > 0 and ttl < expiry then
    redis.call('RENAME', current, previous)
    redis.call('SET', current, 0, 'PX', ttl + expiry)
  end
  local p = tonumber(redis.call('GET', previous)) or 0
  local pt = math.max(0, tonumber(redis.call('PTTL', previous)) or 0)
  local c = tonumber(redis.call('GET', current)) or 0
  local ct = math.max(0, tonumber(redis.call('PTTL', current)) or 0)
  if cost > limit or math.floor(p * pt / expiry) + c + cost > limit then
    return {0, i, p, pt, c, ct}
  end
  seen[i] = {p, pt}
end
local out = {1}
for i = 1, n do
  local current = KEYS[2 * i]
  local expiry = tonumber(ARGV[2 * i + 1]) * 1000
  local c = cost
  if redis.call('EXISTS', current) == 1 then
    c = redis.call('INCRBY', current, cost)
  else
    redis.call('SET', current, cost, 'PX', expiry * 2)
  end
  out[#out + 1] = seen[i][1]
  out[#out + 1] = seen[i][2]
  out[#out + 1] = c
  out[#out + 1] = redis.call('PTTL', current)
end
return out
"""


class RedisSlidingWindow(RedisScript):
    SCRIPT = _SPEND

    async def spend(
        self, counters: Sequence[tuple[str, int, int]], cost: int
    ) -> tuple[int | None, list[tuple[int, float]]]:
        keys: list[str] = []
        for key, _, _ in counters:
            current = f"{self.prefix}:{{{key}}}"
            keys += (f"{current}/-1", current)
        args: list[int] = [cost]
        for _, window, limit in counters:
            args += (limit, window)
        answer = [int(v) for v in await self._script(keys=keys, args=args)]
        if answer[0] == 0:
            index = answer[1] - 1
            _, window, limit = counters[index]
            return index, [_standing(limit, window, answer[2:6])]
        return None, [
            _standing(limit, window, answer[1 + 4 * i : 5 + 4 * i])
            for i, (_, window, limit) in enumerate(counters)
        ]


def _standing(amount: int, window_s: int, raw: Sequence[int]) -> tuple[int, float]:
    """What remains of a limit and when a request is freed, as ``limits``' sliding window
    counter reckons them from the same figures (counts, and TTLs in ms)."""
    previous, current = raw[0], raw[2]
    previous_ttl, current_ttl = max(0, raw[1]) / 1000, max(0, raw[3]) / 1000
    remaining = max(0, amount - math.floor(previous * previous_ttl / window_s + current))
    now = time.time()
    if not (previous or current):
        return remaining, now
    previous_in = previous_ttl % (window_s / previous) if previous else math.inf
    current_in = current_ttl % window_s if current else math.inf
    return remaining, now + min(previous_in, current_in)
