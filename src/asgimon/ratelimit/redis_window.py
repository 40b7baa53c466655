"""The fixed window in Redis in one round trip: every limit of a request spent, or none.

``limits``' Redis storage takes a round trip per call: an increment and a TTL read per limit,
four for the default limit with its burst, and as many again to take a refused request back.
Here one script does all of it atomically, on the keys ``limits`` itself uses
(``{prefix}:{item key}``), so its reads (usage) and clears (reset) see the same counters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

# KEYS: the counters; ARGV[1]: the cost; then each counter's window (s), then its limit.
# Answers {1, count1, ttl1, count2, ttl2…} when every limit allows it, else
# {0, i, count, ttl} for the first limit i that refuses it, every increment taken back.
_SPEND = """
local cost = tonumber(ARGV[1])
local n = #KEYS
local out = {1}
for i = 1, n do
  local count = redis.call('INCRBY', KEYS[i], cost)
  local ttl = redis.call('TTL', KEYS[i])
  if ttl < 0 then
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[1 + i]))
    ttl = tonumber(ARGV[1 + i])
  end
  if count > tonumber(ARGV[1 + n + i]) then
    for j = 1, i do redis.call('DECRBY', KEYS[j], cost) end
    return {0, i, count, ttl}
  end
  out[#out + 1] = count
  out[#out + 1] = ttl
end
return out
"""


class RedisScript:
    """A window's Lua script (``SCRIPT``), registered on the limiter's pool; its keys are
    ``limits``' own under ``prefix``."""

    SCRIPT = ""

    def __init__(self, pool: Any, prefix: str) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self._script = aioredis.Redis(connection_pool=pool).register_script(self.SCRIPT)

    async def spend(
        self, counters: Sequence[tuple[str, int, int]], cost: int
    ) -> tuple[int | None, list[tuple[int, float]]]:
        """``counters``: (item key, window s, limit) each. None and, per limit, what remains
        after the hit and when a request is next freed (an instant), when all allowed it;
        else the index of the one that refused it, and the same of it."""
        raise NotImplementedError


class RedisFixedWindow(RedisScript):
    SCRIPT = _SPEND

    async def spend(
        self, counters: Sequence[tuple[str, int, int]], cost: int
    ) -> tuple[int | None, list[tuple[int, float]]]:
        keys = [f"{self.prefix}:{key}" for key, _, _ in counters]
        args = [cost, *(w for _, w, _ in counters), *(limit for _, _, limit in counters)]
        answer = [int(v) for v in await self._script(keys=keys, args=args)]
        now = time.time()
        if answer[0] == 0:
            index, count, ttl = answer[1] - 1, answer[2], answer[3]
            # The refused request was counted, then taken back: what remains is without it.
            return index, [(counters[index][2] - count + cost, now + ttl)]
        return None, [
            (limit - answer[1 + 2 * i], now + answer[2 + 2 * i])
            for i, (_, _, limit) in enumerate(counters)
        ]
