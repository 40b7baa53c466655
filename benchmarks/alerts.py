"""Alert evaluation at ten million API calls, and an alert storm.

    .venv/bin/python benchmarks/query.py --reuse --backends sqlite --requests 1   # once
    .venv/bin/python benchmarks/alerts.py [--backends sqlite,postgresql] [--rules 1000]
        [--periods 20] [--storm-events 10000] [--profile PATH] [--md PATH]
    .venv/bin/python benchmarks/alerts.py --quick          # a small store of its own, seconds

Evaluation: the store ``query.py --reuse`` keeps (10,000,000 API calls and 1,000,000 other
events over 90 days, five projects; its SQLite file and PostgreSQL schema, found by the same
options with the same defaults). ``--rules`` rules over the five projects, in a fixed mix of
every window rule type (API latency avg/p95/p99 per endpoint and overall, error rate per
endpoint and overall, error count, error spike, function error rate, slow function,
deployment failure rate, build slowdown, rate-limit denials, memory) and some event rules,
windows of 5 to 60 minutes, a fifth of them pending for 2 or 5 minutes, each telling the
in-app channel (one target for all: past ``ALERTS_CHANNEL_RATE`` a minute a notification is
recorded as not sent). Each window rule's threshold is its own value at the first period
times 0.85 to 2.0, so some are over it and some cross back and forth as the windows move.
The rules are stored through ``engine.save``. Then ``engine.evaluate(now=...)`` runs once
per period, ``--periods`` periods 60 s apart ending at the last minute that holds API calls,
invocations and errors (the data ends when it was loaded; its other events an hour or two
before its API calls), after one untimed period (the first, which creates the states of
everything that fires). Two baselines run in the same rounds, the order of the three
rotating from round to round: one ``storage.series_rollups`` read of the busiest window (the
benchmarked project, 60 minutes of minute rollups, every endpoint's series) and
``evaluate()`` of one rule (an overall p95 latency over 5 minutes) by an engine whose store
holds only that rule. Every storage call of an evaluation is timed (``query.py --trace``'s
storage), a task sleeping 1 ms notes how late it wakes and how much CPU the loop's thread
spent meanwhile (the longest stretch the loop was held, and which storage call or full
garbage collection it fell in), and deliveries run as in production, beside the evaluation
(the benchmark waits for them between evaluations). Last, the windows of the last period
are read again once per kind of series (``api:`` instead of one read per endpoint): what a
coarser reader would cost. The rules, their states and the store's alert history are deleted
at the start and at the end.

Storm: a Monitor on a fresh SQLite file, ``--storm-rules`` critical-error rules (repeat
interval 3600 s, in-app channel) of one project, and ``--storm-events`` critical
``ErrorEvent`` s recorded through ``monitor.record`` within 60 s of fake time (the engine's
clock is the fake one), in ``--storm-batches`` batches (60: one per flush interval), each
flushed, then the subscribers let deliver. Figures: notifications per rule (at most one is
the goal), matches and held-back repeats per rule, the alert subscriber's time per batch
(``on_events``) and its storage calls, the flush's time, and ``evaluate()`` every 10 s of
fake time.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).parent))
import query
from query import (
    ENDPOINTS,
    FRAMEWORKS,
    FUNCTIONS,
    PROJECT,
    Call,
    Target,
    Trace,
    TracedSQLStorage,
    percentile,
    prefix_name,
    weighted_table,
)

from asgimon import Monitor, series
from asgimon.alerts.engine import AlertEngine
from asgimon.alerts.measure import MEASURES, StorageReader
from asgimon.alerts.records import DELIVERY, INAPP, RULE, STATE, HistoryEntry, Record
from asgimon.alerts.rules import AlertRule, parse_rule
from asgimon.events import ErrorEvent
from asgimon.plugins.inapp import InAppChannel
from asgimon.rollups import Rollup, Window
from asgimon.settings import Settings
from asgimon.storage import Storage
from asgimon.storage.sql import SQLStorage

TARGET_MS = 1000.0
STORM_TICK_MS = 50.0
PERIOD_S = 60
DAY = 86_400
ID_PREFIX = "alertbench-"
ONE_ID = ID_PREFIX + "one"
STORM_PROJECT = "storm"
WINDOWS = [(300, 0.35), (600, 0.15), (900, 0.2), (1800, 0.1), (3600, 0.2)]
RULE_PROJECTS = [("bench", 0.4), ("shop", 0.15), ("blog", 0.15), ("docs", 0.15), ("status", 0.15)]
# What the rules watch, and each one's share of them.
MIX = [
    ("api_latency:endpoint", 0.30),
    ("api_latency", 0.04),
    ("error_rate:endpoint", 0.20),
    ("error_rate", 0.03),
    ("error_count", 0.06),
    ("error_spike", 0.04),
    ("function_error_rate", 0.06),
    ("slow_function", 0.08),
    ("deployment_failure_rate", 0.04),
    ("build_slowdown", 0.03),
    ("rate_limit_denials", 0.02),
    ("memory", 0.02),
    ("event", 0.08),
]
EVENT_RULES = [
    "critical_error",
    "deployment_failure",
    "slow_deployment",
    "function_error",
    "ssl_certificate",
    "new_error_group",
    "error_regression",
]
QUICK = {"api_calls": 20_000, "domain_events": 4_000, "rules": 100, "periods": 3}
QUICK_STORM = {"storm_events": 1_000, "storm_batches": 10}


# -- the store, as the engine sees it ------------------------------------------------------


class AlertTracedStorage(TracedSQLStorage):
    """query.py's traced store, its alert reads and writes timed too, and each rollup read
    named by project, resolution, window length and prefix."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        super().__init__(url, schema=schema)
        self.reads: list[tuple[Window, str]] = []
        """Each rollup read's window and prefix, since last emptied."""

    async def series_rollups(
        self, window: Window, series_prefix: str | tuple[str, ...] = ""
    ) -> list[Rollup]:
        if isinstance(series_prefix, str):
            self.reads.append((window, series_prefix))
        minutes = int(window.end - window.start) // 60
        name = (
            f"series_rollups({window.project_id}, {window.resolution}, {minutes} min, "
            f"{prefix_name(series_prefix)})"
        )
        # SQLStorage's own read: TracedSQLStorage's would be a second, nested call.
        found: list[Rollup] = await self._timed(
            name, SQLStorage.series_rollups(self, window, series_prefix)
        )
        return found

    async def alert_records(
        self, kind: str, *, project_id: str | None = None, ids: Sequence[str] | None = None
    ) -> list[Record]:
        found: list[Record] = await self._timed(
            f"alert_records({kind})",
            super().alert_records(kind, project_id=project_id, ids=ids),
        )
        return found

    async def put_alert_record(self, record: Record, *, expect: int | None = None) -> Record | None:
        written: Record | None = await self._timed(
            f"put_alert_record({record.kind})", super().put_alert_record(record, expect=expect)
        )
        return written

    async def add_alert_history(self, entries: Sequence[HistoryEntry]) -> None:
        await self._timed("add_alert_history", super().add_alert_history(entries))


class RuleView:
    """The store with only some of its rules: two engines over one store, one judging a
    single rule (the baseline: the store is asked for that one rule only), the other the
    rest, in the same rounds."""

    def __init__(self, storage: SQLStorage, *, only: str | None = None) -> None:
        self._storage = storage
        self._only = only

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    async def alert_records(
        self, kind: str, *, project_id: str | None = None, ids: Sequence[str] | None = None
    ) -> list[Record]:
        if kind != RULE:
            return await self._storage.alert_records(kind, project_id=project_id, ids=ids)
        if self._only is not None:
            return await self._storage.alert_records(kind, ids=[self._only])
        found = await self._storage.alert_records(kind, project_id=project_id, ids=ids)
        return [r for r in found if r.id.startswith(ID_PREFIX) and r.id != ONE_ID]


class LoopHold:
    """A task sleeping 1 ms at a time. The most it woke late is the longest stretch the loop
    was held (wall clock: a busy machine's preemption is in it too); the most CPU the loop's
    thread spent in one such stretch is the work that held it, whatever else ran."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.worst = 0.0
        self.worst_cpu = 0.0
        self.worst_cpu_span = (0.0, 0.0)
        """When (perf_counter) the stretch with the most CPU began and ended."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def reset(self) -> None:
        self.worst = self.worst_cpu = 0.0
        self.worst_cpu_span = (0.0, 0.0)

    @property
    def worst_ms(self) -> float:
        return self.worst * 1000

    @property
    def worst_cpu_ms(self) -> float:
        return self.worst_cpu * 1000

    async def _run(self) -> None:
        interval = self.interval
        clock, cpu = time.perf_counter, time.thread_time
        while True:
            t, c = clock(), cpu()
            await asyncio.sleep(interval)
            woke = clock()
            late, spent = woke - t - interval, cpu() - c
            if late > self.worst:
                self.worst = late
            if spent > self.worst_cpu:
                self.worst_cpu, self.worst_cpu_span = spent, (t, woke)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})


class Collections:
    """When each full (generation 2) garbage collection ran, while installed."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.spans.append((self._began, time.perf_counter()))


COLLECTIONS = Collections()


async def clear_alerts(storage: SQLStorage) -> None:
    """The benchmark's rules and states gone, and the store's alert history (a benchmark
    store holds no other)."""
    for kind in (RULE, STATE):
        for r in await storage.alert_records(kind):
            if r.id.startswith(ID_PREFIX):
                await storage.delete_alert_record(kind, r.id)
    await storage.purge(before={"alert_history": time.time() + DAY})


async def data_end(storage: SQLStorage) -> float:
    """The end of the last minute holding API calls, function invocations and errors of the
    benchmarked project (query.py's other events end an hour or two before its API calls)."""
    wall = time.time()
    window = Window(PROJECT, "minute", wall - 8 * DAY, wall + 3600)
    ends = []
    for total in (series.API_TOTAL, series.FUNCTION_TOTAL, series.ERROR_TOTAL):
        rows = await storage.rollups(window, total)
        if not rows:
            raise SystemExit(
                f"no minute rollups of {total} in {PROJECT!r} in the last week: load the store "
                "again with benchmarks/query.py --reuse (minute rollups are kept a week)"
            )
        ends.append(max(r.bucket_start for r in rows) + 60)
    return float(min(ends))


# -- the rules -----------------------------------------------------------------------------


def rule_doc(kind: str, project: str, window: int, rng: random.Random) -> dict[str, Any]:
    """One rule of the mix, as the API would receive it (placeholder threshold)."""
    filters: dict[str, str] = {}
    statistic = "avg"
    rule_type = kind.split(":")[0]
    if kind.endswith(":endpoint"):
        method, route = rng.choice(ENDPOINTS)[:2]
        filters = (
            {"method": method, "endpoint": route} if rng.random() < 0.8 else {"endpoint": route}
        )
    if rule_type in ("api_latency", "slow_function", "memory"):
        statistic = rng.choice(["avg", "p95", "p95", "p99"])
    if rule_type in ("error_count", "error_spike") and rng.random() < 0.4:
        filters = {"severity": rng.choice(["critical", "high", "medium"])}
    if rule_type in ("function_error_rate", "slow_function") and rng.random() < 0.8:
        filters = {"function": rng.choice(FUNCTIONS)[0]}
    if rule_type in ("deployment_failure_rate", "build_slowdown") and rng.random() < 0.5:
        filters = {"framework": rng.choice(FRAMEWORKS)[0]}
    if rule_type == "rate_limit_denials" and rng.random() < 0.5:
        filters = {"rule": "api-default"}
    doc: dict[str, Any] = {
        "projectId": project,
        "name": f"{kind} {window // 60} min",
        "window": window,
        "repeatInterval": rng.choice([600, 3600, 3600, 4 * 3600]),
        "channels": [{"type": "inapp"}],
        "filters": filters,
        "statistic": statistic,
    }
    if kind == "event":
        doc["type"] = rng.choice(EVENT_RULES)
        doc["statistic"] = "avg"
        if doc["type"] == "slow_deployment":
            doc["threshold"] = 300_000
    else:
        doc["type"] = rule_type
        doc["pendingFor"] = rng.choice([0, 0, 0, 0, 0, 0, 0, 0, 120, 300])
    return doc


def parsed(doc: dict[str, Any], channels: dict[str, InAppChannel]) -> AlertRule:
    rule, problems = parse_rule(doc, channels)
    if rule is None:
        raise SystemExit(f"a benchmark rule is refused: {doc} {problems}")
    return rule


def make_rules(n: int, seed: int, channels: dict[str, InAppChannel]) -> list[AlertRule]:
    rng = random.Random(seed)
    kinds = weighted_table(rng, MIX, n)
    projects = weighted_table(rng, RULE_PROJECTS, n)
    windows = weighted_table(rng, WINDOWS, n)
    rules = []
    for i, (kind, project, window) in enumerate(zip(kinds, projects, windows, strict=True)):
        rule = parsed(rule_doc(kind, project, window, rng), channels)
        rule.id = f"{ID_PREFIX}{i:05d}"
        rules.append(rule)
    return rules


def one_rule(channels: dict[str, InAppChannel]) -> AlertRule:
    doc = {"projectId": PROJECT, "name": "p95 latency", "type": "api_latency", "window": 300}
    rule = parsed({**doc, "statistic": "p95", "channels": [{"type": "inapp"}]}, channels)
    rule.id, rule.threshold = ONE_ID, 10_000.0
    return rule


async def calibrate(rules: list[AlertRule], storage: SQLStorage, now: float, seed: int) -> None:
    """Each window rule's threshold: its own value now times 0.85 to 2 (some fire)."""
    rng = random.Random(seed + 1)
    reader = StorageReader(storage)
    for rule in rules:
        if rule.is_event_rule:
            continue
        m = await MEASURES[rule.type](rule, reader, now)
        factor = rng.uniform(0.85, 2.0)
        if m.value is not None and m.value > 0:
            rule.threshold = round(m.value * factor, 3)


# -- evaluation ----------------------------------------------------------------------------


@dataclass
class Sample:
    ms: float
    held_ms: float
    held_cpu_ms: float
    changed: int
    calls: list[Call] = field(default_factory=list)
    held_span: tuple[float, float] = (0.0, 0.0)
    """When the stretch with the most CPU on the loop's thread began and ended."""
    gcs: list[tuple[float, float]] = field(default_factory=list)
    """The full garbage collections that ran during it."""
    reads: list[tuple[Window, str]] = field(default_factory=list)

    def of(self, prefix: str) -> list[Call]:
        return [c for c in self.calls if c.name.startswith(prefix)]


def family(prefix: str) -> str:
    """The prefix of the kind of series a prefix selects some of (``api:GET /`` → ``api:``)."""
    for base in (series.API, series.ERROR, series.FUNCTION, series.DEPLOY):
        if prefix.startswith(base):
            return base
    denied = series.rate_limit(False, "")
    return denied if prefix.startswith(denied) else prefix


async def family_reads(storage: SQLStorage, reads: list[tuple[Window, str]]) -> Sample:
    """The reads an evaluation would make if each window's series were read once per kind
    (``api:`` instead of one read per endpoint), timed one after the other."""
    wanted = sorted({(w, family(p)) for w, p in reads}, key=lambda r: (repr(r[0]), r[1]))
    t = time.perf_counter()
    for window, prefix in wanted:
        await SQLStorage.series_rollups(storage, window, prefix)
    return Sample((time.perf_counter() - t) * 1000, 0.0, 0.0, len(wanted))


def part_of(call: Call) -> str:
    """A storage call's kind: rollup reads by what their prefix selects."""
    if not call.name.startswith("series_rollups("):
        return call.name
    prefix = call.name.removesuffix(")").split(", ", 3)[3]
    for base, one in (
        (series.API, "api:{method endpoint}"),
        (series.ERROR, "error:{severity}:"),
        (series.FUNCTION, "fn:{function}"),
        (series.DEPLOY, "deploy:{framework}"),
        (series.rate_limit(False, ""), "ratelimit:denied:{rule}"),
    ):
        if prefix.startswith(base) and prefix != base:
            return f"series_rollups({one})"
    return f"series_rollups({prefix})"


async def timed_evaluate(
    engine: AlertEngine, storage: AlertTracedStorage, hold: LoopHold, now: float
) -> Sample:
    storage.trace = trace = Trace()
    storage.reads = []
    hold.reset()
    collected = len(COLLECTIONS.spans)
    t = time.perf_counter()
    result = await engine.evaluate(now=now)
    ms = (time.perf_counter() - t) * 1000
    sample = Sample(ms, hold.worst_ms, hold.worst_cpu_ms, result["changed"], list(trace.calls))
    sample.held_span = hold.worst_cpu_span
    sample.gcs = COLLECTIONS.spans[collected:]
    sample.reads = storage.reads
    # Deliveries run beside the evaluation (their writes are in its calls when they
    # overlapped); the next one starts with none left.
    await engine.outbox.settled(30.0)
    return sample


async def timed_read(storage: SQLStorage, window: Window, hold: LoopHold) -> Sample:
    hold.reset()
    t = time.perf_counter()
    found = await SQLStorage.series_rollups(storage, window, series.API)
    ms = (time.perf_counter() - t) * 1000
    return Sample(ms, hold.worst_ms, hold.worst_cpu_ms, len(found))  # "changed": series read


async def evaluation(t: Target, args: argparse.Namespace) -> dict[str, Any]:
    storage = AlertTracedStorage(t.url, schema=t.schema)
    await storage.start()
    hold = LoopHold()
    hold.start()
    try:
        await clear_alerts(storage)
        end = await data_end(storage)
        first = end - args.periods * PERIOD_S - 1  # the last period's now: the last minute
        settings = Settings()
        full_channels = {"inapp": InAppChannel()}
        one_channels = {"inapp": InAppChannel()}
        full = AlertEngine(settings, cast(Storage, RuleView(storage)), channels=full_channels)
        one = AlertEngine(
            settings, cast(Storage, RuleView(storage, only=ONE_ID)), channels=one_channels
        )
        rules = make_rules(args.rules, args.seed, full_channels)
        await calibrate(rules, storage, first, args.seed)
        saved_at = time.perf_counter()
        for rule in [*rules, one_rule(one_channels)]:
            if await full.save(rule) is None:
                raise RuntimeError(f"rule {rule.id} was not stored")
        save_s = time.perf_counter() - saved_at
        await full.start()
        await one.start()
        read: list[Sample] = []
        single: list[Sample] = []
        many: list[Sample] = []
        first_period: Sample | None = None
        gc.collect()
        for rnd in range(args.periods + 1):  # round 0 is untimed
            now = first + rnd * PERIOD_S
            edge = (int(now) // 60 + 1) * 60  # as a rule's window ends: the minute holding now
            busiest = Window(PROJECT, "minute", edge - 3600, edge)
            order = ["read", "one", "full"]
            for what in order[rnd % 3 :] + order[: rnd % 3]:
                if what == "read":
                    s = await timed_read(storage, busiest, hold)
                    into = read
                elif what == "one":
                    s = await timed_evaluate(one, storage, hold, now)
                    into = single
                else:
                    s = await timed_evaluate(full, storage, hold, now)
                    into = many
                    if not rnd:
                        first_period = s
                if rnd:
                    into.append(s)
            if rnd:
                print(
                    f"  {t.backend} period {rnd}: {many[-1].ms:7.1f} ms, 1 rule "
                    f"{single[-1].ms:5.1f} ms, one read {read[-1].ms:5.1f} ms; loop held "
                    f"{many[-1].held_cpu_ms:.1f} ms on CPU, in {blame(many[-1])}; 1 rule: "
                    f"{single[-1].held_cpu_ms:.1f} ms, in {blame(single[-1])}",
                    file=sys.stderr,
                )
        assert first_period is not None
        # What a coarser reader would cost, over the last period's windows, same store.
        coarse = [await family_reads(storage, many[-1].reads) for _ in range(5)]
        states = await storage.alert_records(STATE)
        firing = sum(
            1 for r in states if r.id.startswith(ID_PREFIX) and r.body["status"] == "firing"
        )
        profile = None
        if args.profile:
            profile = await profiled(full, storage, hold, first + args.periods * PERIOD_S)
        counts = dict(full.counts)
        await full.aclose(5.0)
        await one.aclose(5.0)
    finally:
        try:
            await clear_alerts(storage)
        finally:
            await hold.aclose()
            await storage.close()
    by_type: dict[str, int] = {}
    for rule in rules:
        by_type[rule.type] = by_type.get(rule.type, 0) + 1
    return {
        "backend": t.backend,
        "data_end": end,
        "rules": len(rules),
        "rule_types": by_type,
        "save_s": save_s,
        "read": read,
        "one": single,
        "full": many,
        "first": first_period,
        "coarse": coarse,
        "firing_at_end": firing,
        "counts": counts,
        "profile": profile,
    }


async def profiled(
    engine: AlertEngine, storage: AlertTracedStorage, hold: LoopHold, now: float
) -> str:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="enabled")
    profiler.start()
    await timed_evaluate(engine, storage, hold, now)
    profiler.stop()
    return str(profiler.output_text(unicode=False, color=False, show_all=False))


# -- the storm -----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


async def storm(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="asgimon-alert-storm-"))
    try:
        return await storm_on(tmp / "storm.db", args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def storm_on(path: Path, args: argparse.Namespace) -> dict[str, Any]:
    storage = AlertTracedStorage(f"sqlite:///{path}")
    monitor = Monitor(
        storage=storage,
        api_rate_limit=None,
        email_alerts_enabled=False,
        webhook_alerts_enabled=False,
        alerts_interval=3600.0,
        project_id=STORM_PROJECT,
    )
    engine = monitor.alerts
    assert engine is not None
    seconds = 60.0
    clock = FakeClock(time.time() - seconds - 1)  # the storm ends now: no event is future
    engine.clock = clock
    hold = LoopHold()
    on_events: list[float] = []
    flushes: list[float] = []
    settles: list[float] = []
    ticks: list[Sample] = []
    holds: list[tuple[float, float]] = []  # per batch: wall, on CPU
    calls: list[list[Call]] = []  # the alert subscriber's storage calls, per batch
    try:
        await monitor.start()
        # Only the storm's own ticks: the scheduler would evaluate on the wall clock.
        await monitor.scheduler.stop()
        rules = []
        for i in range(args.storm_rules):
            doc = {
                "projectId": STORM_PROJECT,
                "name": f"critical errors {i}",
                "type": "critical_error",
                "repeatInterval": 3600,
                "window": 3600,
                "channels": [{"type": "inapp"}],
            }
            rule, problems = parse_rule(doc, engine.channels)
            assert rule is not None, problems
            saved = await engine.save(rule)
            assert saved is not None
            rules.append(saved)
        # The Monitor's own subscriber, timed where the fan-out calls it (a private door:
        # the subscription is the Monitor's).
        sub = monitor.recorder.sinks._subs["alerts"]
        sink = sub.sink

        async def timed(events: Sequence[Any]) -> object:
            storage.trace = trace = Trace()
            t = time.perf_counter()
            try:
                return await sink(events)
            finally:
                on_events.append((time.perf_counter() - t) * 1000)
                calls.append(list(trace.calls))

        sub.sink = timed
        hold.start()
        gc.collect()
        batches = args.storm_batches
        step = seconds / args.storm_events
        next_tick = clock.at + 10
        n = 0
        for b in range(batches):
            hold.reset()
            # The events spread evenly over the batches, all of them: 10,000 in 60.
            for _ in range((b + 1) * args.storm_events // batches - n):
                n += 1
                monitor.record(
                    ErrorEvent(
                        id=f"storm-{n:06d}",
                        project_id=STORM_PROJECT,
                        timestamp=clock.at,
                        error_type="RuntimeError",
                        message=f"RuntimeError: upstream down ({n % 20})",
                        fingerprint=f"{n % 20:016x}",
                        severity="critical",
                        endpoint="/api/checkout",
                        method="POST",
                    )
                )
                clock.at += step
            t = time.perf_counter()
            await monitor.recorder.flush()
            flushes.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            if not await monitor.recorder.sinks.settled(30.0):
                raise RuntimeError("the subscribers did not keep up within 30 s")
            settles.append((time.perf_counter() - t) * 1000)
            if clock.at >= next_tick:
                next_tick += 10
                t = time.perf_counter()
                result = await engine.evaluate(now=clock.at)
                ticks.append(
                    Sample(
                        (time.perf_counter() - t) * 1000,
                        hold.worst_ms,
                        hold.worst_cpu_ms,
                        result["changed"],
                    )
                )
            holds.append((hold.worst_ms, hold.worst_cpu_ms))
        await engine.outbox.settled(30.0)
        states = await engine.states([r.id for r in rules])
        per_rule = []
        for r in rules:
            # One delivery record per notification handed to the rule's one channel, sent or
            # not (past ALERTS_CHANNEL_RATE a minute per target: "not sent").
            sent = await storage.alert_history(STORM_PROJECT, rule_id=r.id, kinds=[DELIVERY])
            inapp = await storage.alert_history(STORM_PROJECT, rule_id=r.id, kinds=[INAPP])
            s = states[r.id]
            per_rule.append(
                {
                    "notifications": len(sent),
                    "shown": len(inapp),
                    "matches": s.matches,
                    "suppressed": s.suppressed,
                    "told_suppressed": sum(int(e.body.get("suppressed", 0)) for e in inapp),
                    "status": s.status,
                }
            )
        stats = monitor.recorder.stats()
        sinks = monitor.recorder.sinks.report()
    finally:
        await hold.aclose()
        await monitor.stop()
    return {
        "events": n,
        "batches": batches,
        "rules": len(rules),
        "per_rule": per_rule,
        "on_events_ms": on_events,
        "on_events_calls": calls,
        "flush_ms": flushes,
        "settle_ms": settles,
        "ticks": ticks,
        "held_ms": holds,
        "written": stats.written,
        "dropped": sum(stats.dropped.values()) + sum(int(s["dropped"]) for s in sinks.values()),
        "notifications": engine.counts["notifications"],
    }


# -- output --------------------------------------------------------------------------------


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def p95(values: Sequence[float]) -> float:
    return percentile(list(values), 0.95) if values else 0.0


def writes(s: Sample) -> int:
    return len(s.of("put_alert_record"))


def blame(s: Sample) -> str:
    """The storage call the loop's longest stretch on CPU fell in, most of it."""
    lo, hi = s.held_span
    best, name = 0.0, "between storage calls"
    for c in s.calls:
        overlap = min(hi, c.end) - max(lo, c.start)
        if overlap > best:
            best, name = overlap, c.name
    for a, b in s.gcs:
        if min(hi, b) - max(lo, a) > (hi - lo) / 2:
            return f"a full garbage collection ({(b - a) * 1000:.1f} ms) during {name}"
    return name


def held(samples: list[Sample]) -> str:
    """The longest hold of the loop over the samples, wall (on CPU)."""
    wall = max(s.held_ms for s in samples)
    return f"{wall:.1f} ({max(s.held_cpu_ms for s in samples):.1f})"


def row_of(backend: str, what: str, samples: list[Sample], base: float) -> str:
    ms = [s.ms for s in samples]
    reads = [len(s.of("series_rollups")) for s in samples]
    rows = [sum(c.rows for c in s.of("series_rollups")) for s in samples]
    other = [len(s.calls) - r for s, r in zip(samples, reads, strict=True)]
    return (
        f"| {backend} | {what} | {med(ms):.1f} | {p95(ms):.1f} | {med(ms) / base:.1f} | "
        f"{held(samples)} | {med(reads):g} | {med(rows):,.0f} | "
        f"{med([writes(s) for s in samples]):g} | {med(other):g} |"
    )


def render_md(env: dict[str, Any], evals: list[dict[str, Any]], st: dict[str, Any] | None) -> str:
    lines = [
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, loop {env['loop']}; "
        f"asgimon {env['asgimon']}, SQLite {env['sqlite']}, PostgreSQL {env['postgresql']}; "
        f"source {env['source']}; {env['date']}; load average (1 min) {env['load_before']:.1f} "
        f"before, {env['load_after']:.1f} after.",
        "",
    ]
    for ev in evals:
        end = datetime.fromtimestamp(ev["data_end"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        types = ", ".join(f"{k} {v}" for k, v in sorted(ev["rule_types"].items()))
        lines.append(
            f"{ev['backend']}: {env['store'][ev['backend']]}; {ev['rules']:,} rules over "
            f"{len(RULE_PROJECTS)} projects ({types}), stored in {ev['save_s']:.1f} s; "
            f"{len(ev['full'])} periods of {PERIOD_S} s ending {end} after one untimed; "
            f"{ev['firing_at_end']} firing at the end."
        )
    if evals:
        lines += ["", *evaluation_table(evals)]
    for ev in evals:
        lines += ["", verdict(ev), "", *parts_table(ev)]
    if st is not None:
        lines += ["", *storm_table(st)]
    return "\n".join(lines) + "\n"


def evaluation_table(evals: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| backend | measured | median ms | p95 ms | x one read | loop held, longest ms (on CPU) "
        "| series_rollups reads | rollup rows read | state writes | other storage calls |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ev in evals:
        b, read = ev["backend"], ev["read"]
        base = med([s.ms for s in read])
        n_series = med([float(s.changed) for s in read])
        lines.append(
            f"| {b} | one `series_rollups` read: {PROJECT}, 60 min, `api:` ({n_series:.0f} "
            f"series) | {base:.1f} | {p95([s.ms for s in read]):.1f} | 1.0 | "
            f"{held(read)} | 1 | | | |"
        )
        lines.append(row_of(b, "`evaluate()`, 1 rule", ev["one"], base))
        lines.append(row_of(b, f"`evaluate()`, {ev['rules']:,} rules", ev["full"], base))
        lines.append(row_of(b, "the untimed first period (no states yet)", [ev["first"]], base))
    return lines


def verdict(ev: dict[str, Any]) -> str:
    full = med([s.ms for s in ev["full"]])
    one = med([s.ms for s in ev["one"]])
    base = med([s.ms for s in ev["read"]])
    per_rule = (full - one) / max(1, ev["rules"] - 1)
    under = "under" if p95([s.ms for s in ev["full"]]) < TARGET_MS else "**over**"
    worst = max(ev["full"], key=lambda s: s.held_cpu_ms)
    rollup_ms = med([sum(c.total_ms for c in s.of("series_rollups")) for s in ev["full"]])
    return (
        f"{ev['backend']}: {ev['rules']:,} rules take {full / one:.0f} times one rule and "
        f"{full / base:.1f} times the busiest read; {per_rule * 1000:.0f} µs per rule beyond "
        f"the first; p95 {under} the {TARGET_MS:.0f} ms target. The loop's longest stretch "
        f"on CPU ({worst.held_cpu_ms:.1f} ms) was in {blame(worst)}. A full garbage "
        f"collection ran in {collected(ev['full'])} evaluations of every rule and in "
        f"{collected(ev['one'])} of one rule. The same windows read once per kind of series "
        f"(`api:` for every endpoint, `fn:`, `error:`, `deploy:`, `ratelimit:denied:`): "
        f"{ev['coarse'][0].changed} reads instead of "
        f"{med([len(s.of('series_rollups')) for s in ev['full']]):g}, "
        f"{med([s.ms for s in ev['coarse']]):.0f} ms one after the other (median of 5) against "
        f"{rollup_ms:.0f} ms in the evaluation's rollup reads."
    )


def collected(samples: list[Sample]) -> str:
    spans = [b - a for s in samples for a, b in s.gcs]
    n = sum(1 for s in samples if s.gcs)
    longest = f" (longest {max(spans) * 1000:.0f} ms)" if spans else ""
    return f"{n} of the {len(samples)}{longest}"


def parts_table(ev: dict[str, Any]) -> list[str]:
    """Each kind of storage call's count, rows and time per period (medians)."""
    lines = [
        f"Where an evaluation of {ev['rules']:,} rules spends its time on {ev['backend']} "
        "(medians per period; calls of deliveries running beside it included):",
        "",
        "| part | calls | rows | ms | share |",
        "|---|---:|---:|---:|---:|",
    ]
    per_period: list[dict[str, tuple[int, int, float]]] = []
    for s in ev["full"]:
        got: dict[str, tuple[int, int, float]] = {}
        for c in s.calls:
            n, rows, ms = got.get(part_of(c), (0, 0, 0.0))
            got[part_of(c)] = (n + 1, rows + c.rows, ms + c.total_ms)
        per_period.append(got)
    names = {name for got in per_period for name in got}
    empty = (0, 0, 0.0)
    whole = med([s.ms for s in ev["full"]])
    summary = []
    for name in names:
        vals = [got.get(name, empty) for got in per_period]
        m_calls, m_rows, m_ms = (med([float(v[i]) for v in vals]) for i in range(3))
        summary.append((m_ms, name, m_calls, m_rows))
    for m_ms, name, m_calls, m_rows in sorted(summary, reverse=True):
        lines.append(f"| {name} | {m_calls:g} | {m_rows:,.0f} | {m_ms:.1f} | {m_ms / whole:.0%} |")
    outside = med([s.ms - query.busy_ms(s.calls) for s in ev["full"]])
    lines.append(f"| (outside storage calls) | | | {outside:.1f} | {outside / whole:.0%} |")
    lines.append(f"| (whole evaluation) | | | {whole:.1f} | 100% |")
    return lines


def storm_table(st: dict[str, Any]) -> list[str]:
    pr = st["per_rule"]
    ticks = [s.ms for s in st["ticks"]]
    ev_ms, flush_ms = st["on_events_ms"], st["flush_ms"]

    def spread(key: str) -> str:
        lo, hi = min(r[key] for r in pr), max(r[key] for r in pr)
        return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"

    names = sorted({c.name for batch in st["on_events_calls"] for c in batch})
    per_batch = ", ".join(
        f"{med([sum(1 for c in b if c.name == n) for b in st['on_events_calls']]):g} {n}"
        for n in names
    )
    store_ms = med([sum(c.total_ms for c in b) for b in st["on_events_calls"]])
    return [
        f"Storm: {st['events']:,} critical errors in 60 s of fake time, {st['batches']} "
        f"batches, {st['rules']} critical-error rules (repeat interval 3600 s, in-app), "
        "a Monitor on a fresh SQLite file:",
        "",
        "| notifications per rule (max) | shown in-app | matches per rule "
        "| held back: in the notification + since (state) "
        "| on_events per batch median / p95 / max ms | flush per batch median / p95 ms "
        "| evaluate() every 10 s median / max ms | loop held, longest ms (on CPU) | dropped "
        f"| at most 1 notification, < {STORM_TICK_MS:g} ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {max(r['notifications'] for r in pr)} | {sum(r['shown'] for r in pr)} of "
        f"{len(pr)} | {spread('matches')} | {spread('told_suppressed')} + "
        f"{spread('suppressed')} | {med(ev_ms):.1f} / {p95(ev_ms):.1f} / {max(ev_ms):.1f} | "
        f"{med(flush_ms):.1f} / {p95(flush_ms):.1f} | "
        f"{med(ticks):.1f} / {max(ticks, default=0.0):.1f} | "
        f"{max(h[0] for h in st['held_ms']):.1f} ({max(h[1] for h in st['held_ms']):.1f}) | "
        f"{st['dropped']} | {'yes' if storm_ok(st) else '**no**'} |",
        "",
        f"The alert subscriber's storage calls per batch (medians): {per_batch}; "
        f"{store_ms:.1f} ms in them of its {med(ev_ms):.1f} ms.",
    ]


def storm_ok(st: dict[str, Any]) -> bool:
    told = max(int(r["notifications"]) for r in st["per_rule"]) <= 1
    slowest = max([*st["on_events_ms"], *(s.ms for s in st["ticks"])])
    return told and float(slowest) < STORM_TICK_MS


# -- running -------------------------------------------------------------------------------


async def open_store(backend: str, args: argparse.Namespace) -> tuple[Target, str]:
    """The store to evaluate over: query.py's kept one, or with --quick a small one."""
    t = query.target_of(backend, args)
    if args.quick:
        await query.drop(t, args)
        await query.create(t)
        loaded = await query.load(t, args)
        return t, f"{loaded['api_calls']:,} API calls + {loaded['domain_events']:,} other events"
    marker = await query.read_marker(t, args)
    if marker is None or not await query.opens(t):
        raise SystemExit(
            f"{backend}: no store loaded by benchmarks/query.py; run "
            f"benchmarks/query.py --reuse --backends {backend} --requests 1 first"
        )
    ld = marker["load"]
    return t, (
        f"{ld['api_calls']:,} API calls + {ld['domain_events']:,} other events "
        f"(query.py --reuse, loaded {marker['at']})"
    )


async def amain(args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loop": loop_name,
        "asgimon": version("asgimon"),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": await query.pg_version(args.pg_url) if "postgresql" in args.backends else "—",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": query.source_revision(),
        "store": {},
        "load_before": os.getloadavg()[0],
    }
    evals = []
    for backend in args.backends:
        t, described = await open_store(backend, args)
        env["store"][backend] = described
        try:
            evals.append(await evaluation(t, args))
        finally:
            if args.quick:
                await query.drop(t, args)
    st = None
    if args.storm_events:
        print("storm", file=sys.stderr)
        st = await storm(args)
    env["load_after"] = os.getloadavg()[0]
    return {"env": env, "evals": evals, "storm": st}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--backends", type=query.csv, default=["sqlite"], help="comma-separated")
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--periods", type=int, default=20, help="timed periods, 60 s apart")
    ap.add_argument("--storm-events", type=int, default=10_000, help="0: no storm")
    ap.add_argument("--storm-rules", type=int, default=10)
    ap.add_argument("--storm-batches", type=int, default=60, help="one per flush interval")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a small store of its own, seconds")
    # query.py's options and defaults: its store is found where it keeps it.
    ap.add_argument("--sqlite-path", type=Path, default=Path("/tmp/asgimon-bench-query.db"))
    ap.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-schema", default="asgimon_bench")
    ap.add_argument("--profile", type=Path, help="pyinstrument text of one more evaluation")
    ap.add_argument("--md", type=Path, help="also write the markdown tables here")
    args = ap.parse_args(argv)
    for b in args.backends:
        if b not in query.BACKENDS:
            raise SystemExit(f"unknown backend {b!r}: choose from {', '.join(query.BACKENDS)}")
    if args.quick:
        tmp = Path(tempfile.mkdtemp(prefix="asgimon-alerts-quick-"))
        args.sqlite_path = tmp / "quick.db"
        args.pg_schema += "_alerts_quick"
        args.seed, args.batch = 1, query.BATCH
        for name, value in {**QUICK, **QUICK_STORM}.items():
            if getattr(args, name, None) == ap.get_default(name):  # what was not asked for
                setattr(args, name, value)
    loop, loop_name = query.new_loop()
    print(f"event loop: {loop_name}", file=sys.stderr)
    gc.callbacks.append(COLLECTIONS)
    try:
        result = loop.run_until_complete(amain(args, loop_name))
    finally:
        gc.callbacks.remove(COLLECTIONS)
        loop.close()
        if args.quick:
            shutil.rmtree(args.sqlite_path.parent, ignore_errors=True)
    for ev in result["evals"]:
        if ev["profile"] is not None:
            Path(f"{args.profile}.{ev['backend']}.txt").write_text(ev["profile"])
    md = render_md(result["env"], result["evals"], result["storm"])
    print(md)
    if args.md:
        args.md.write_text(md)


if __name__ == "__main__":
    main()
