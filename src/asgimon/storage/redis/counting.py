"""A counted batch's rollups on Redis: its marker set once, its deltas added to the hashes.

One script call, so the marker and the deltas go in together; a retried batch finds its
marker and adds nothing (see :mod:`asgimon.pipeline.counted`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from asgimon._slices import Slicer
from asgimon.pipeline.counted import MARKER_TTL_S, Counted
from asgimon.rollups import RESOLUTIONS, Rollup

from .members import _JSON
from .script import PRELUDE, SEP

# ARGV: prefix, ttl, now, marker key, marker ttl; a JSON array [hashes, projects] with
#   hash  {key, index key, bucket, {field names}, {deltas}, {kinds}}   kinds as in PRELUDE
COUNT = (
    PRELUDE
    + """
if not call("SET", ARGV[4], "1", "NX", "EX", ARGV[5]) then return 0 end
local meta = cjson.decode(ARGV[6])
for _, h in ipairs(meta[1]) do
  local names, deltas, kinds = h[4], h[5], h[6]
  local vals, ks = {}, {}
  for i = 1, #names do vals[names[i]], ks[names[i]] = deltas[i], kinds[i] end
  merge_hash(h[1], h[2], h[3], names, vals, ks)
end
local projects, pk = {}, p .. ":projects"
for _, project in ipairs(meta[2]) do
  projects[#projects + 1] = now
  projects[#projects + 1] = project
end
call("ZADD", pk, unpack(projects))
call("EXPIRE", pk, ttl)
return 1
"""
)

_Fields = dict[str, list[Any]]  # field -> [value, kind]


async def count_args(prefix: str, ttl: int, counted: Counted) -> list[Any]:
    """The script's arguments: each minute's deltas added into its minute, hour and day.

    In slices: a batch over a hundred endpoints is thousands of fields."""
    hashes: dict[tuple[str, str, int], _Fields] = {}
    slicer = Slicer()
    await slicer.each(lambda run: _add_fields(hashes, run), counted.minutes)
    meta = [
        [
            [
                f"{prefix}:ru:{project}:{resolution}:{bucket}",
                f"{prefix}:rui:{project}:{resolution}",
                str(bucket),
                list(fields),
                [v for v, _ in fields.values()],
                [k for _, k in fields.values()],
            ]
            for (project, resolution, bucket), fields in hashes.items()
        ],
        sorted({r.project_id for r in counted.minutes}),
    ]
    marker = f"{prefix}:batch:{counted.marker}"
    encoded = _JSON.encode(meta)
    slicer.mark()
    return [prefix, ttl, time.time(), marker, min(ttl, MARKER_TTL_S), encoded]


def _add_fields(hashes: dict[tuple[str, str, int], _Fields], minutes: Sequence[Rollup]) -> None:
    for r in minutes:
        pre = f"{r.series}{SEP}"
        fields: list[tuple[str, float, int]] = [(pre + "c", r.count, 0)]
        if r.error_count:
            fields.append((pre + "e", r.error_count, 0))
        if r.value_count:
            assert r.value_min is not None
            assert r.value_max is not None
            fields += [
                (pre + "n", r.value_count, 0),
                (pre + "s", r.value_sum, 0),
                (pre + "lo", r.value_min, 1),
                (pre + "hi", r.value_max, 2),
            ]
            fields += [(f"{pre}b{k}", n, 0) for k, n in r.full_hist().items()]
        for resolution, width in RESOLUTIONS.items():
            bucket = r.bucket_start // width * width
            into = hashes.setdefault((r.project_id, resolution, bucket), {})
            for name, value, kind in fields:
                held = into.get(name)
                if held is None:
                    into[name] = [value, kind]
                elif kind == 0:
                    held[0] += value
                elif (kind == 1 and value < held[0]) or (kind == 2 and value > held[0]):
                    held[0] = value
