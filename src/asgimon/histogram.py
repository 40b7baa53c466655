"""A mergeable log-bucket histogram of durations, in milliseconds.

A value ``v > 0`` falls in bin ``i = ceil(log(v) / log(GAMMA))``, the interval
``(GAMMA**(i-1), GAMMA**i]``, and is read back as the point of that interval with the least
relative error, ``2 * GAMMA**i / (GAMMA + 1)``. With ``GAMMA = 1.02`` every value, and so every
percentile, is read back within 1 % of the truth (the product promises 2 %). Values at or
below ``MIN_VALUE`` share one bin that reads back as 0. Bins are plain ``{index: count}``
dicts, so histograms from many workers merge by adding counts.

The percentile of rank ``q`` is the value at sorted position ``floor(q * (n - 1))``, the
definition the tests compare against.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

GAMMA = 1.02
RELATIVE_ACCURACY = (GAMMA - 1) / (GAMMA + 1)
MIN_VALUE = 1e-4
ZERO_BIN = -(2**20)
_LOG_GAMMA = math.log(GAMMA)
_log = math.log
_ceil = math.ceil

Histogram = dict[int, int]


def bin_index(value: float) -> int:
    """The bin a value falls in."""
    if value <= MIN_VALUE:
        return ZERO_BIN
    return _ceil(_log(value) / _LOG_GAMMA)


def bin_value(index: int) -> float:
    """The value a bin reads back as."""
    if index == ZERO_BIN:
        return 0.0
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def from_values(values: Iterable[float]) -> Histogram:
    hist: Histogram = {}
    for v in values:
        i = bin_index(v)
        hist[i] = hist.get(i, 0) + 1
    return hist


def merge_into(target: Histogram, other: Mapping[int, int]) -> None:
    for i, c in other.items():
        target[i] = target.get(i, 0) + c


def merged(histograms: Iterable[Mapping[int, int]]) -> Histogram:
    out: Histogram = {}
    for h in histograms:
        merge_into(out, h)
    return out


def quantiles(hist: Mapping[int, int], qs: Iterable[float]) -> list[float | None]:
    """Percentiles for each ``q`` in ``[0, 1]``; ``None`` for an empty histogram."""
    wanted = list(qs)
    n = sum(hist.values())
    if n == 0:
        return [None] * len(wanted)
    bins = sorted(hist.items())
    out: list[float | None] = []
    for q in wanted:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q!r} is outside [0, 1]")
        rank = math.floor(q * (n - 1))
        seen = 0
        for index, count in bins:
            seen += count
            if seen > rank:
                out.append(bin_value(index))
                break
    return out


def quantile(hist: Mapping[int, int], q: float) -> float | None:
    return quantiles(hist, (q,))[0]


def count_at_most(hist: Mapping[int, int], threshold: float) -> int:
    """How many values were at most ``threshold`` (to bin accuracy); used for Apdex."""
    limit = bin_index(threshold)
    return sum(c for i, c in hist.items() if i <= limit)


def dumps(hist: Mapping[int, int]) -> str:
    """Compact JSON text, the form the SQL backends store and merge in SQL."""
    return json.dumps({str(i): c for i, c in hist.items()}, separators=(",", ":"))


def loads(text: str | bytes | None) -> Histogram:
    if not text:
        return {}
    raw = json.loads(text)
    return {int(i): int(c) for i, c in raw.items()}
