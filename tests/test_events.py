from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from asgimon import (
    BuildEvent,
    DeploymentEvent,
    DomainEvent,
    ErrorEvent,
    Event,
    FunctionInvocation,
    InvalidEventError,
)
from asgimon.rollups import Window
from asgimon.testing import memory_monitor, recorded

NOW = time.time()


def fields_of(exc: InvalidEventError) -> set[str]:
    return {e.field for e in exc.errors}


@pytest.mark.parametrize(
    "event",
    [
        DeploymentEvent(timestamp=NOW, deployment_id="d1", type="started"),
        DeploymentEvent(
            timestamp=NOW, deployment_id="d1", type="completed", status="failure", duration_ms=5.0
        ),
        BuildEvent(
            timestamp=NOW, deployment_id="d1", phase="install", start_time=NOW - 3, end_time=NOW
        ),
        FunctionInvocation(timestamp=NOW, function_id="f", duration_ms=3.5, cold_start=True),
        DomainEvent(
            timestamp=NOW, domain="example.com", type="ssl_expiring", expires_at=NOW + 86400
        ),
        ErrorEvent(timestamp=NOW, error_type="ValueError", fingerprint="abc", severity="critical"),
    ],
)
def test_good_events_pass(event: Event) -> None:
    event.validate()


@pytest.mark.parametrize(
    ("event", "bad"),
    [
        (DeploymentEvent(timestamp=NOW, deployment_id="", type="started"), {"deployment_id"}),
        (DeploymentEvent(timestamp=NOW, deployment_id="d", type="finished"), {"type"}),
        (DeploymentEvent(timestamp=NOW, deployment_id="d", type="completed"), {"status"}),
        (
            DeploymentEvent(timestamp=NOW, deployment_id="d", type="started", duration_ms=math.nan),
            {"duration_ms"},
        ),
        (
            DeploymentEvent(timestamp=NOW, deployment_id="d", type="started", duration_ms=-1.0),
            {"duration_ms"},
        ),
        (DeploymentEvent(timestamp=NOW, deployment_id="a\x00b", type="started"), {"deployment_id"}),
        (DeploymentEvent(timestamp=NOW, deployment_id="\ud800", type="started"), {"deployment_id"}),
        (
            DeploymentEvent(timestamp=NOW, deployment_id="d" * 500, type="started"),
            {"deployment_id"},
        ),
        (DeploymentEvent(timestamp=NOW + 86400, deployment_id="d", type="started"), {"timestamp"}),
        (
            DeploymentEvent(timestamp=NOW - 400 * 86400, deployment_id="d", type="started"),
            {"timestamp"},
        ),
        (DeploymentEvent(timestamp=math.inf, deployment_id="d", type="started"), {"timestamp"}),
        (DeploymentEvent(id="", timestamp=NOW, deployment_id="d", type="started"), {"id"}),
        (
            BuildEvent(
                timestamp=NOW, deployment_id="d", phase="compile", start_time=NOW, end_time=NOW
            ),
            {"phase"},
        ),
        (
            BuildEvent(
                timestamp=NOW, deployment_id="d", phase="build", start_time=NOW, end_time=NOW - 1
            ),
            {"end_time"},
        ),
        (
            BuildEvent(
                timestamp=NOW,
                deployment_id="d",
                start_time=NOW - 1,
                end_time=NOW,
                asset_count=1.5,  # type: ignore[arg-type]
            ),
            {"asset_count"},
        ),
        (
            FunctionInvocation(timestamp=NOW, function_id="f", duration_ms="fast"),  # type: ignore[arg-type]
            {"duration_ms"},
        ),
        (
            FunctionInvocation(timestamp=NOW, function_id="f", cold_start="yes"),  # type: ignore[arg-type]
            {"cold_start"},
        ),
        (FunctionInvocation(timestamp=NOW, function_id="f", status="ok"), {"status"}),
        (DomainEvent(timestamp=NOW, domain="x.com", type="expired"), {"type"}),
        (ErrorEvent(timestamp=NOW, fingerprint="f", severity="fatal"), {"severity"}),
        (
            ErrorEvent(timestamp=NOW, fingerprint="f", context="x"),  # type: ignore[arg-type]
            {"context"},
        ),
    ],
)
def test_bad_fields_are_named(event: Event, bad: set[str]) -> None:
    with pytest.raises(InvalidEventError) as info:
        event.validate()
    assert fields_of(info.value) == bad
    assert info.value.kind == event.kind


def test_every_bad_field_is_reported_at_once() -> None:
    ev = FunctionInvocation(
        timestamp=NOW,
        function_id="",
        status="boom",
        duration_ms=math.nan,
        memory_mb=-1,
    )
    with pytest.raises(InvalidEventError) as info:
        ev.validate()
    assert fields_of(info.value) == {"function_id", "status", "duration_ms", "memory_mb"}


async def test_a_rejected_event_stores_nothing_and_is_counted() -> None:
    monitor = memory_monitor()
    bad_calls: list[dict[str, Any]] = [
        {"deployment_id": "d", "type": "nope"},
        {"deployment_id": "d", "type": "completed"},
        {"deployment_id": "d", "type": "started", "timestamp": datetime(2020, 1, 1)},
        {"deployment_id": "d", "type": "started", "duration_ms": math.inf},
    ]
    async with monitor:
        for kwargs in bad_calls:
            with pytest.raises(InvalidEventError):
                await monitor.record_deployment_event(**kwargs)
        with pytest.raises(InvalidEventError, match="naive"):
            await monitor.record_domain_event("x.com", "added", timestamp=datetime(2026, 1, 1))
        with pytest.raises(InvalidEventError):
            await monitor.record_function_invocation("f", duration_ms=-5)
        with pytest.raises(InvalidEventError):
            await monitor.record_build_event("d", "build", start_time=NOW, end_time=NOW - 5)
        assert await recorded(monitor, "deployment") == []
        assert await recorded(monitor, "function") == []
        assert await recorded(monitor, "build") == []
        assert await recorded(monitor, "domain") == []
        rollups = await monitor.storage.rollups(Window("default", "minute", 0, NOW + 3600))
        assert rollups == []
    # Rejected before queueing: not counted in the ledger as recorded.
    assert monitor.stats().recorded == 0


async def test_aware_datetimes_and_epoch_seconds_are_both_accepted() -> None:
    monitor = memory_monitor()
    when = datetime.now(UTC)
    async with monitor:
        a = await monitor.record_domain_event("a.com", "added", timestamp=when)
        b = await monitor.record_domain_event("b.com", "added", timestamp=when.timestamp())
        assert a.timestamp == pytest.approx(b.timestamp)
        assert a.at == when
        stored = await recorded(monitor, "domain")
    assert sorted(e.domain for e in stored) == ["a.com", "b.com"]  # type: ignore[attr-defined]


async def test_the_same_event_id_is_stored_once() -> None:
    monitor = memory_monitor()
    async with monitor:
        for _ in range(3):
            await monitor.record_deployment_event("d1", "started", id="fixed-id", timestamp=NOW)
        stored = await recorded(monitor, "deployment")
    assert len(stored) == 1
    stats = monitor.stats()
    assert (stats.written, stats.duplicates) == (1, 2)


def test_huge_integers_are_refused_not_crashed_on() -> None:
    ev = FunctionInvocation(timestamp=NOW, function_id="f", duration_ms=10**400)
    with pytest.raises(InvalidEventError) as info:
        ev.validate()
    assert fields_of(info.value) == {"duration_ms"}


def test_error_context_must_be_small_plain_json() -> None:
    nested: dict[str, Any] = {}
    for _ in range(2000):
        nested = {"n": nested}
    for bad in (nested, {"f": math.nan}, {"o": object()}, {"big": "x" * 20_000}, {"z": "\x00"}):
        with pytest.raises(InvalidEventError) as info:
            ErrorEvent(timestamp=NOW, fingerprint="f", context=bad).validate()
        assert fields_of(info.value) == {"context"}


async def test_captured_context_is_made_safe_instead_of_losing_the_error() -> None:
    nested: dict[str, Any] = {}
    for _ in range(2000):
        nested = {"n": nested}
    monitor = memory_monitor()
    async with monitor:
        event = monitor.capture_exception(
            ValueError("v"),
            context={"deep": nested, "nan": math.nan, "obj": object(), "big": "x" * 5000},
        )
        assert event is not None
        [stored] = await recorded(monitor, "error")
    assert isinstance(stored, ErrorEvent)
    assert stored.context["nan"] == "nan"
    assert len(stored.context["big"]) == 1000
    assert stored.context["obj"].startswith("<object object")
    assert monitor.stats().dropped_total == 0
