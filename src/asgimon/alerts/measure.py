"""What a window rule measures, from the rollups of its window.

Each rule type is one function from a rule and a :class:`Reader` to a
:class:`Measurement`. The reader is the only way in, so the live evaluation (over storage,
one read per project, window and series prefix, shared by every rule that asks the same)
and the preview (over history read once) run the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from asgimon import series
from asgimon.rollups import Rollup, Window, combine

from .rules import AlertRule

MIN_SPIKE_ERRORS = 5
"""Fewer errors than this in the window is no spike, whatever the previous window held."""
MINUTE_UP_TO_S = 2 * 86_400
"""Windows up to two days are read from minute rollups (kept 7 days), longer ones hourly."""


class Reader(Protocol):
    async def merged(self, window: Window, prefix: str) -> list[Rollup]:
        """Each series starting with ``prefix`` merged over the window, histograms included."""
        ...


@dataclass(slots=True)
class Measurement:
    value: float | None
    """None when there is nothing to judge (no calls in the window): never a breach."""
    breached: bool
    labels: dict[str, str] = field(default_factory=dict)


def span(rule: AlertRule, now: float, back: int = 0) -> Window:
    """The buckets a rule's window covers at ``now`` (``back`` spans earlier), at the
    resolution its length is read from: every bucket that overlaps ``[now - window, now]``,
    the one still filling included. An evaluation that runs just as a minute begins still
    sees the whole last ``window`` seconds, a one-minute rule included; a span is one bucket
    longer than the window, and the one before it (``back=1``) as long, so a spike compares
    like with like."""
    step = 60 if rule.window <= MINUTE_UP_TO_S else 3600
    start = int(now - rule.window) // step * step
    end = int(now) // step * step + step
    length = end - start
    return Window(
        rule.project_id,
        "minute" if step == 60 else "hour",
        start - back * length,
        end - back * length,
    )


def _stat(r: Rollup, statistic: str) -> float | None:
    if statistic == "avg":
        return r.avg
    return r.quantile(0.95 if statistic == "p95" else 0.99)


def _over(rule: AlertRule, value: float | None, **labels: str) -> Measurement:
    return Measurement(value, value is not None and value > rule.threshold, labels)


def _rate(r: Rollup) -> float | None:
    return 100.0 * r.error_count / r.count if r.count else None


async def _api(rule: AlertRule, reader: Reader, now: float) -> Rollup:
    endpoint, method = rule.filters.get("endpoint"), rule.filters.get("method")
    if endpoint is None and method is None:
        found = await reader.merged(span(rule, now), series.API_TOTAL)
        return combine(r for r in found if r.series == series.API_TOTAL)
    prefix = series.api(method, endpoint) if method and endpoint else series.API
    rows = await reader.merged(span(rule, now), prefix)
    mine = []
    for r in rows:
        m, e = series.api_parts(r.series)
        if (method is None or m == method) and (endpoint is None or e == endpoint):
            mine.append(r)
    return combine(mine)


async def _errors(rule: AlertRule, reader: Reader, now: float, back: int = 0) -> int:
    severity = rule.filters.get("severity")
    if severity is None:
        rows = await reader.merged(span(rule, now, back), series.ERROR_TOTAL)
        return sum(r.count for r in rows if r.series == series.ERROR_TOTAL)
    rows = await reader.merged(span(rule, now, back), f"{series.ERROR}{severity}:")
    return sum(r.count for r in rows)


async def error_count(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    return _over(rule, float(await _errors(rule, reader, now)))


async def error_spike(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    current = await _errors(rule, reader, now)
    previous = await _errors(rule, reader, now, back=1)
    ratio = current / max(previous, 1)
    breached = current >= MIN_SPIKE_ERRORS and ratio > rule.threshold
    return Measurement(ratio, breached, {"errors": str(current), "previous": str(previous)})


async def error_rate(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    return _over(rule, _rate(await _api(rule, reader, now)))


async def api_latency(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    return _over(rule, _stat(await _api(rule, reader, now), rule.statistic))


async def _functions(rule: AlertRule, reader: Reader, now: float) -> Rollup:
    function = rule.filters.get("function")
    wanted = series.FUNCTION_TOTAL if function is None else series.function(function)
    return combine(r for r in await reader.merged(span(rule, now), wanted) if r.series == wanted)


async def function_error_rate(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    return _over(rule, _rate(await _functions(rule, reader, now)))


async def slow_function(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    return _over(rule, _stat(await _functions(rule, reader, now), rule.statistic))


async def deployment_failure_rate(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    framework = rule.filters.get("framework")
    prefix = series.DEPLOY if framework is None else series.deploy(framework)
    rows = await reader.merged(span(rule, now), prefix)
    mine = [r for r in rows if framework is None or r.series == prefix]
    return _over(rule, _rate(combine(mine)))


async def _build_avg(rule: AlertRule, reader: Reader, now: float, back: int) -> float | None:
    framework = rule.filters.get("framework")
    rows = await reader.merged(span(rule, now, back), series.BUILD)
    mine = [r for r in rows if framework is None or series.build_parts(r.series)[1] == framework]
    return combine(mine).avg


async def build_slowdown(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    current = await _build_avg(rule, reader, now, 0)
    previous = await _build_avg(rule, reader, now, 1)
    if current is None or not previous:
        return Measurement(None, False)
    return _over(rule, current / previous)


async def memory(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    rows = await reader.merged(span(rule, now), series.system("memory", ""))
    worst: tuple[float, str] | None = None
    for r in rows:
        value = _stat(r, rule.statistic)
        if value is not None and (worst is None or value > worst[0]):
            worst = (value, series.system_parts(r.series)[1])
    if worst is None:
        return Measurement(None, False)
    return _over(rule, worst[0], process=worst[1])


async def rate_limit_denials(rule: AlertRule, reader: Reader, now: float) -> Measurement:
    name = rule.filters.get("rule")
    prefix = series.rate_limit(False, name or "")
    rows = await reader.merged(span(rule, now), prefix)
    return _over(rule, sum(r.value_sum for r in rows if name is None or r.series == prefix))


Measure = Callable[[AlertRule, Reader, float], Awaitable[Measurement]]

MEASURES: dict[str, Measure] = {
    "error_count": error_count,
    "error_rate": error_rate,
    "error_spike": error_spike,
    "deployment_failure_rate": deployment_failure_rate,
    "function_error_rate": function_error_rate,
    "slow_function": slow_function,
    "api_latency": api_latency,
    "build_slowdown": build_slowdown,
    "memory": memory,
    "rate_limit_denials": rate_limit_denials,
}


class StorageReader:
    """Reads through to storage once per window and kind of series (``api:``, ``fn:``,
    ``error:``, ``all:``…) per evaluation, whatever the rules' filters: every rule asking for
    one endpoint, function or severity in the same window shares the read."""

    def __init__(self, storage: object) -> None:
        self._storage = storage
        self._seen: dict[tuple[Window, str], list[Rollup]] = {}

    async def merged(self, window: Window, prefix: str) -> list[Rollup]:
        root = prefix.partition(":")[0] + ":"
        key = (window, root)
        found = self._seen.get(key)
        if found is None:
            read = self._storage.series_rollups  # type: ignore[attr-defined]
            found = self._seen[key] = await read(window, root)
        return [r for r in found if r.series.startswith(prefix)]

    @property
    def reads(self) -> int:
        return len(self._seen)
