"""The Redis store: a real-time window of events and rollups (24 h by default).

Every key expires on its own (``EXPIRE`` from the time it was written), so Redis never
needs purging to stay bounded. A batch is written by one Lua script per thousand events, each
atomic and idempotent: an event id already seen (``SET NX``) adds nothing, neither to the
event lists nor to the rollups. The script sums the rollups of the new events per series and
bucket, then reads and writes each rollup hash once.

Layout, under a key prefix (``asgimon`` by default)::

    {p}:seen:{len}:{project}:{id}       the idempotency marker (all that is kept of an API
                                        call that sampling left out)
    {p}:ev:{kind}:{project}:{hour}      ZSET of events (score: timestamp, member: JSON)
    {p}:evi:{kind}:{project}            ZSET of the hours that have events
    {p}:ru:{project}:{res}:{bucket}     HASH of rollup fields, "{series}\\x1f{field}"
    {p}:rui:{project}:{res}             ZSET of the buckets that have rollups
    {p}:usr:{user}                      SET of [kind, key, member] of a user's events (erasure)
    {p}:projects                        ZSET of projects (score: last write)
    {p}:claim:{job}:{period}            a periodic job's claim

What a caller gets beyond the window: nothing. Queries over older ranges answer with what
is left (empty lists, zero counts), never an error. Keys are not hash-tagged: one Redis
server (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

from .script import SEP
from .store import RedisStorage

__all__ = ["SEP", "RedisStorage"]
