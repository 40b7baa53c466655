"""Alert records and history in Redis.

Records of a kind live in one hash, a JSON document per id holding its version; a write is
one script that compares the held version and writes the next one, so of two workers that
read the same version exactly one succeeds. A project's history is a hash of entries by id
and a sorted set of their ids by time (entries are kept until the purge's cutoff, not by
the event window's TTL: a transition is worth keeping longer than the raw events).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from asgimon.alerts.records import HistoryEntry, Record
from asgimon.errors import StorageUnavailable

_PAGE = 500

# KEYS[1]: the kind's documents, KEYS[2]: their versions; ARGV: id, expected version (''
# for any), the document. Returns the version written, or -1 if the held one was not the
# expected one. The document is stored as given (cjson would turn [] into {} and round
# numbers to 14 digits).
_PUT = """
local version = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= version then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], version + 1)
return version + 1
"""

_DELETE = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _record(kind: str, record_id: str, raw: str, version: Any) -> Record:
    doc = json.loads(raw)
    return Record(kind, record_id, doc["project_id"], doc["body"], int(version), doc["updated_at"])


class Alerts:
    prefix: str

    def _redis(self) -> aioredis.Redis:
        raise NotImplementedError

    def _records_key(self, kind: str) -> str:
        return f"{self.prefix}:alerts:{kind}"

    def _versions_key(self, kind: str) -> str:
        return f"{self.prefix}:alerts:{kind}:v"

    def _history_keys(self, project_id: str) -> tuple[str, str]:
        return f"{self.prefix}:ah:{project_id}", f"{self.prefix}:ahz:{project_id}"

    async def alert_records(
        self, kind: str, *, project_id: str | None = None, ids: Sequence[str] | None = None
    ) -> list[Record]:
        key, versions = self._records_key(kind), self._versions_key(kind)
        r = self._redis()
        try:
            pairs: list[tuple[Any, Any]]
            if ids is None:
                pairs = list((await r.hgetall(key)).items())
            else:
                wanted = list(dict.fromkeys(ids))
                pairs = list(zip(wanted, await r.hmget(key, wanted), strict=True)) if wanted else []
            pairs = [(i, raw) for i, raw in pairs if raw is not None]
            held = await r.hmget(versions, [i for i, _ in pairs]) if pairs else []
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        found = [
            _record(kind, str(i), str(raw), v or 1) for (i, raw), v in zip(pairs, held, strict=True)
        ]
        if project_id is not None:
            found = [rec for rec in found if rec.project_id == project_id]
        found.sort(key=lambda rec: (rec.updated_at, rec.id))
        return found

    async def put_alert_record(self, record: Record, *, expect: int | None = None) -> Record | None:
        now = time.time()
        doc = _json({"project_id": record.project_id, "updated_at": now, "body": record.body})
        args = [record.id, "" if expect is None else str(expect), doc]
        try:
            keys = (self._records_key(record.kind), self._versions_key(record.kind))
            version = int(await self._redis().eval(_PUT, 2, *keys, *args))
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        if version < 0:
            return None
        return Record(record.kind, record.id, record.project_id, record.body, version, now)

    async def delete_alert_record(self, kind: str, record_id: str) -> bool:
        try:
            keys = (self._records_key(kind), self._versions_key(kind))
            gone = await self._redis().eval(_DELETE, 2, *keys, record_id)
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        return bool(gone)

    async def add_alert_history(self, entries: Sequence[HistoryEntry]) -> None:
        if not entries:
            return
        try:
            async with self._redis().pipeline(transaction=True) as pipe:
                for e in entries:
                    docs, times = self._history_keys(e.project_id)
                    doc = {"rule_id": e.rule_id, "at": e.at, "kind": e.kind, "body": e.body}
                    pipe.hsetnx(docs, e.id, _json(doc))
                    pipe.zadd(times, {e.id: e.at}, nx=True)
                await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc

    async def alert_history(
        self,
        project_id: str,
        *,
        rule_id: str | None = None,
        kinds: Sequence[str] | None = None,
        before: float | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]:
        docs, times = self._history_keys(project_id)
        r = self._redis()
        out: list[HistoryEntry] = []
        top: str = "+inf" if before is None else f"({before}"
        offset = 0
        try:
            while len(out) < limit:
                page: Any = await r.zrevrangebyscore(times, top, "-inf", start=offset, num=_PAGE)
                ids = [str(i) for i in page]
                if not ids:
                    break
                offset += len(ids)
                for i, raw in zip(ids, await r.hmget(docs, ids), strict=True):
                    if raw is None:
                        continue
                    doc = json.loads(raw)
                    if rule_id is not None and doc["rule_id"] != rule_id:
                        continue
                    if kinds is not None and doc["kind"] not in kinds:
                        continue
                    entry = HistoryEntry(
                        i, project_id, doc["rule_id"], doc["at"], doc["kind"], doc["body"]
                    )
                    out.append(entry)
        except (redis_errors.RedisError, OSError) as exc:
            raise StorageUnavailable(f"redis: {exc}") from exc
        out.sort(key=lambda e: (e.at, e.id), reverse=True)
        return out[:limit]

    async def _purge_alert_history(self, cutoff: float) -> int:
        r = self._redis()
        total = 0
        async for times in r.scan_iter(match=f"{self.prefix}:ahz:*", count=500):
            docs = f"{self.prefix}:ah:{times.rsplit(':ahz:', 1)[1]}"
            while True:
                ids = await r.zrangebyscore(times, "-inf", f"({cutoff}", start=0, num=_PAGE)
                if not ids:
                    break
                await r.hdel(docs, *ids)
                await r.zrem(times, *ids)
                total += len(ids)
        return total
