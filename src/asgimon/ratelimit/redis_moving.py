"""The moving window in Redis in one round trip: every limit of a request spent, or none.

As ``limits`` keeps it, on its keys (``{prefix}:{item key}``): a list per key of each
request's time, newest first, trimmed to the limit. ``limits``' calls take a test, a hit and
a read per limit; here one script tests every limit, then pushes the request's times onto
each, then reads back what each window holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .redis_window import RedisScript

# KEYS: each limit's list. ARGV[1]: now (s); ARGV[2]: the cost; then per limit its amount
# and its window (s). A limit refuses when the entry ``amount - cost`` places back is
# within its window (its edge included, as limits has it). Answers {1, count1, oldest1,
# count2, oldest2…} (what each window holds after the hit, and its oldest time) when all
# allow it, else {0, i, count, oldest} for the first limit i that refuses it. Times go out
# as strings: Redis would truncate a Lua number to an integer.
_SPEND = """
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local function held(key, limit, expiry)
  local low, high, found = 0, limit - 1, nil
  while low <= high do
    local mid = math.floor((low + high) / 2)
    local t = tonumber(redis.call('LINDEX', key, mid))
    if t and t >= now - expiry then
      found = mid
      low = mid + 1
    else
      high = mid - 1
    end
  end
  if not found then return {0, tostring(now)} end
  return {found + 1, redis.call('LINDEX', key, found)}
end
for i = 1, #KEYS do
  local limit = tonumber(ARGV[1 + 2 * i])
  local expiry = tonumber(ARGV[2 + 2 * i])
  local entry = cost <= limit and redis.call('LINDEX', KEYS[i], limit - cost)
  if cost > limit or (entry and tonumber(entry) >= now - expiry) then
    local h = held(KEYS[i], limit, expiry)
    return {0, i, h[1], h[2]}
  end
end
local out = {1}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[1 + 2 * i])
  local expiry = tonumber(ARGV[2 + 2 * i])
  for _ = 1, cost do redis.call('LPUSH', KEYS[i], ARGV[1]) end
  redis.call('LTRIM', KEYS[i], 0, limit - 1)
  redis.call('EXPIRE', KEYS[i], expiry)
  local h = held(KEYS[i], limit, expiry)
  out[#out + 1] = h[1]
  out[#out + 1] = h[2]
end
return out
"""


class RedisMovingWindow(RedisScript):
    SCRIPT = _SPEND

    async def spend(
        self, counters: Sequence[tuple[str, int, int]], cost: int
    ) -> tuple[int | None, list[tuple[int, float]]]:
        keys = [f"{self.prefix}:{key}" for key, _, _ in counters]
        args: list[float] = [time.time(), cost]
        for _, window, limit in counters:
            args += (limit, window)
        answer = await self._script(keys=keys, args=args)
        if int(answer[0]) == 0:
            index = int(answer[1]) - 1
            _, window, limit = counters[index]
            return index, [_standing(limit, window, answer[2:4])]
        return None, [
            _standing(limit, window, answer[1 + 2 * i : 3 + 2 * i])
            for i, (_, window, limit) in enumerate(counters)
        ]


def _standing(amount: int, window_s: int, raw: Sequence[Any]) -> tuple[int, float]:
    """What remains (the requests the window holds, taken from the limit), and when the
    oldest of them leaves it."""
    return amount - int(raw[0]), float(raw[1]) + window_s
