"""One suite, every backend: what the Storage protocol promises (see conftest's ``storage``)."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import asdict

import pytest

from asgimon import (
    ApiCall,
    BuildEvent,
    DeploymentEvent,
    DomainEvent,
    ErrorEvent,
    Event,
    FunctionInvocation,
    RateLimitEvent,
    Storage,
    histogram,
)
from asgimon.ratelimit.overrides import Override
from asgimon.rollups import Rollup, Window, combine

T0 = float(1_790_000_000 // 86400 * 86400)  # a UTC day boundary, so bucket counts are exact


def one_of_each(ts: float, project: str = "p1") -> list[Event]:
    return [
        ApiCall(
            project_id=project,
            timestamp=ts,
            method="POST",
            endpoint="/items/{id}",
            status=201,
            duration_ms=12.5,
            ttfb_ms=3.25,
            total_ms=40.0,
            request_bytes=10,
            response_bytes=99,
            user_id="u-1",
            request_id="r-1",
        ),
        DeploymentEvent(
            project_id=project,
            timestamp=ts,
            deployment_id="dep-1",
            type="completed",
            status="success",
            duration_ms=61_000.0,
            framework="nextjs",
        ),
        BuildEvent(
            project_id=project,
            timestamp=ts,
            deployment_id="dep-1",
            phase="install",
            start_time=ts - 2.5,
            end_time=ts,
            status="failure",
            framework="nextjs",
            asset_count=12,
            total_size_bytes=2**40,
        ),
        FunctionInvocation(
            project_id=project,
            timestamp=ts,
            function_id="resize",
            deployment_id="dep-1",
            status="error",
            duration_ms=7.0,
            cold_start=True,
            memory_mb=128.0,
            error_type="TimeoutError",
            error_message="took too long",
        ),
        DomainEvent(
            project_id=project,
            timestamp=ts,
            domain="example.com",
            type="ssl_issued",
            expires_at=ts + 90 * 86400,
        ),
        ErrorEvent(
            project_id=project,
            timestamp=ts,
            error_type="KeyError",
            message="'x' — ünïcode ✓",
            stack='File "app.py", line 3, in f\n',
            fingerprint="fp-1",
            severity="critical",
            handled=False,
            endpoint="/items/{id}",
            method="GET",
            request_id="r-1",
            user_id="u-1",
            deployment_id="dep-1",
            context={"k": [1, 2, {"n": None}]},
        ),
    ]


async def test_every_kind_round_trips_every_field(storage: Storage) -> None:
    events = one_of_each(T0 + 30)
    result = await storage.write(events)
    assert (result.inserted, result.duplicates) == (len(events), 0)
    for ev in events:
        [back] = await storage.events(ev.kind, project_id="p1")
        assert type(back) is type(ev)
        got, want = asdict(back), asdict(ev)
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, abs=1e-6), key
            else:
                assert got[key] == value, key


async def test_writes_are_idempotent_on_project_and_id(storage: Storage) -> None:
    events = one_of_each(T0 + 30)
    await storage.write(events)
    before = await storage.rollups(Window("p1", "minute", T0, T0 + 86400))
    again = await storage.write(events)
    assert (again.inserted, again.duplicates) == (0, len(events))
    after = await storage.rollups(Window("p1", "minute", T0, T0 + 86400))
    assert [asdict(r) for r in after] == [asdict(r) for r in before]
    # The same id in another project is another event.
    other = one_of_each(T0 + 30, project="p2")
    for mine, theirs in zip(events, other, strict=True):
        theirs.id = mine.id
    assert (await storage.write(other)).inserted == len(other)


async def test_a_repeat_inside_one_batch_is_a_duplicate(storage: Storage) -> None:
    ev = DeploymentEvent(project_id="p1", timestamp=T0, deployment_id="d", type="started")
    result = await storage.write([ev, ev])
    assert (result.inserted, result.duplicates) == (1, 1)
    assert await storage.count("deployment") == 1


async def test_a_write_names_the_events_that_were_new(storage: Storage) -> None:
    # Only these reach the subscribers: a retried batch must not be seen twice.
    old = one_of_each(T0 + 30)
    await storage.write(old[:3])
    new = [ApiCall(project_id="p1", timestamp=T0 + 31, duration_ms=1.0) for _ in range(5)]
    batch = [new[0], *old, new[1], new[2], new[3], new[4], new[4]]
    result = await storage.write(batch)
    assert sorted(ev.id for ev in result.fresh) == sorted(ev.id for ev in [*old[3:], *new])
    assert len(result.fresh) == result.inserted
    assert all(any(ev is mine for mine in batch) for ev in result.fresh)


async def test_ranges_are_half_open_newest_first_and_limited(storage: Storage) -> None:
    events = [
        DomainEvent(project_id="p1", timestamp=T0 + i, domain=f"d{i}.com", type="added")
        for i in range(10)
    ]
    await storage.write(events)
    got = await storage.events("domain", project_id="p1", start=T0 + 2, end=T0 + 5)
    assert [e.domain for e in got] == ["d4.com", "d3.com", "d2.com"]  # type: ignore[attr-defined]
    assert len(await storage.events("domain", limit=4)) == 4
    assert await storage.count("domain", start=T0 + 5) == 5
    assert await storage.count("domain", project_id="nobody") == 0
    with pytest.raises(ValueError, match="unknown event kind"):
        await storage.count("nope")


async def test_rollups_sum_count_errors_and_extremes_at_each_resolution(storage: Storage) -> None:
    rng = random.Random(7)
    calls = [
        ApiCall(
            project_id="p1",
            timestamp=T0 + rng.uniform(0, 7200),
            endpoint="/a",
            status=rng.choice([200, 200, 200, 404, 500]),
            duration_ms=rng.lognormvariate(3, 1),
            total_ms=1.0,
        )
        for _ in range(3000)
    ]
    # Several batches, so rows are merged by the store and not only in one aggregation.
    for i in range(0, len(calls), 700):
        await storage.write(calls[i : i + 700])
    durations = sorted(c.duration_ms for c in calls)
    cases = [
        (resolution, series, rows_expected)
        for resolution, rows_expected in (("minute", 120), ("hour", 2), ("day", 1))
        # The endpoint's own series, and the project's total over every endpoint.
        for series in ("api:GET /a", "all:api")
    ]
    for resolution, series, rows_expected in cases:
        rows = await storage.rollups(Window("p1", resolution, T0, T0 + 86400), series)
        assert len(rows) == rows_expected
        assert all(r.series == series for r in rows)
        total = combine(rows)
        assert total.count == 3000
        assert total.error_count == sum(1 for c in calls if c.status >= 500)
        assert math.isclose(total.value_sum, sum(durations), rel_tol=1e-9)
        assert total.value_min == pytest.approx(durations[0])
        assert total.value_max == pytest.approx(durations[-1])
        for q in (0.5, 0.95, 0.99):
            truth = durations[math.floor(q * (len(durations) - 1))]
            est = total.quantile(q)
            assert est is not None
            assert abs(est - truth) <= 0.02 * truth


async def test_rollups_filter_by_series_prefix_literally(storage: Storage) -> None:
    await storage.write(
        [
            FunctionInvocation(project_id="p1", timestamp=T0, function_id="a_b", duration_ms=1.0),
            FunctionInvocation(project_id="p1", timestamp=T0, function_id="axb", duration_ms=1.0),
            FunctionInvocation(project_id="p1", timestamp=T0, function_id="a%", duration_ms=1.0),
        ]
    )

    async def series(prefix: str) -> list[str]:
        rows = await storage.rollups(Window("p1", "day", T0, T0 + 1), prefix)
        return [r.series for r in rows]

    assert await series("fn:a_") == ["fn:a_b"]
    assert await series("fn:a%") == ["fn:a%"]
    assert sorted(await series("fn:")) == ["fn:a%", "fn:a_b", "fn:axb"]


async def test_a_series_prefix_ends_where_the_prefix_ends(storage: Storage) -> None:
    # Neighbours of "fn:a:" in byte order and in a locale's order, where punctuation and
    # case weigh less than letters.
    ids = ["a", "a:", "a:b", "a:é", "a:\U0001f600", "a;", "a;b", "a9", "aB", "A:b", "a:\uffff"]
    await storage.write(
        [
            FunctionInvocation(project_id="p1", timestamp=T0, function_id=f, duration_ms=1.0)
            for f in ids
        ]
    )
    rows = await storage.rollups(Window("p1", "day", T0, T0 + 1), "fn:a:")
    inside = ["fn:a:", "fn:a:b", "fn:a:é", "fn:a:\U0001f600", "fn:a:\uffff"]
    assert sorted(r.series for r in rows) == sorted(inside)
    totals = await storage.series_totals(Window("p1", "day", T0, T0 + 1), ("fn:a;", "fn:a:"))
    assert sorted(t.series for t in totals) == sorted([*inside, "fn:a;", "fn:a;b"])

    # The last code point has no successor, and a surrogate is no character.
    edges = ["z\U0010ffff", "z\U0010ffffx", "{", "y\ud7ffq", "y\ue000"]
    await storage.write(
        [
            FunctionInvocation(project_id="p1", timestamp=T0, function_id=f, duration_ms=1.0)
            for f in edges
        ]
    )
    for prefix, expected in (
        ("fn:z\U0010ffff", ["fn:z\U0010ffff", "fn:z\U0010ffffx"]),
        ("fn:y\ud7ff", ["fn:y\ud7ffq"]),
    ):
        rows = await storage.rollups(Window("p1", "day", T0, T0 + 1), prefix)
        assert sorted(r.series for r in rows) == expected, prefix


async def test_no_prefix_at_all_reads_no_series(storage: Storage) -> None:
    await storage.write(one_of_each(T0))
    for read in (
        storage.rollups,
        storage.series_rollups,
        storage.series_totals,
        storage.bucket_totals,
    ):
        nothing = await read(Window("p1", "day", T0, T0 + 86400), ())
        everything = await read(Window("p1", "day", T0, T0 + 86400), ("",))
        assert (nothing, bool(everything)) == ([], True), read


async def test_totals_sum_each_window_in_one_call(storage: Storage) -> None:
    rng = random.Random(3)
    calls = [
        ApiCall(
            project_id="p1",
            timestamp=T0 + rng.uniform(0, 6 * 3600),
            endpoint=rng.choice(["/a", "/b_c"]),
            status=rng.choice([200, 503]),
            duration_ms=rng.uniform(1, 500),
            total_ms=1.0,
        )
        for _ in range(300)
    ]
    fns = [FunctionInvocation(project_id="p1", timestamp=T0 + 60, function_id="f", duration_ms=2)]
    await storage.write([*calls, *fns])
    windows = [(T0 + h * 1800, T0 + h * 1800 + 2700) for h in range(12)] + [(T0 - 600, T0)]
    for resolution in ("minute", "hour"):
        got = await storage.totals(
            project_id="p1", resolution=resolution, windows=windows, series="all:api"
        )
        assert len(got) == len(windows)
        width = 60 if resolution == "minute" else 3600
        for (lo, hi), total in zip(windows, got, strict=True):
            inside = [c for c in calls if lo <= c.timestamp // width * width < hi]
            assert total.count == len(inside)
            assert total.error_count == sum(c.status >= 500 for c in inside)
            assert total.value_count == len(inside)
            assert total.value_sum == pytest.approx(sum(c.duration_ms for c in inside))
    day = [(T0, T0 + 86400)]
    [functions] = await storage.totals(
        project_id="p1", resolution="day", windows=day, series="all:fn"
    )
    assert functions.count == len(fns)
    [one] = await storage.totals(
        project_id="p1", resolution="day", windows=day, series="api:GET /a"
    )
    assert one.count == sum(c.endpoint == "/a" for c in calls)
    assert (
        await storage.totals(project_id="p1", resolution="day", windows=[], series="all:api") == []
    )


async def test_series_totals_sum_each_series_over_a_range(storage: Storage) -> None:
    rng = random.Random(5)
    calls = [
        ApiCall(
            project_id="p1",
            timestamp=T0 + rng.uniform(0, 3 * 86400),
            endpoint=rng.choice(["/a", "/b"]),
            status=rng.choice([200, 500]),
            duration_ms=rng.uniform(1, 100),
            total_ms=1.0,
        )
        for _ in range(200)
    ]
    await storage.write(calls)
    got = await storage.series_totals(Window("p1", "hour", T0, T0 + 2 * 86400), "api:")
    assert [t.series for t in got] == ["api:GET /a", "api:GET /b"]
    for t in got:
        inside = [
            c for c in calls if f"api:GET {c.endpoint}" == t.series and c.timestamp < T0 + 2 * 86400
        ]
        assert (t.count, t.error_count, t.value_count) == (
            len(inside),
            sum(c.status >= 500 for c in inside),
            len(inside),
        )
        assert t.value_sum == pytest.approx(sum(c.duration_ms for c in inside))
        hours = [int(c.timestamp // 3600 * 3600) for c in inside]
        assert (t.first_bucket, t.last_bucket) == (min(hours), max(hours))
    both = await storage.series_totals(
        Window("p1", "day", T0, T0 + 3 * 86400), ("all:api", "api:GET /b")
    )
    assert [t.series for t in both] == ["all:api", "api:GET /b"]
    assert both[0].count == len(calls)


async def test_series_rollups_merge_each_series_packed_or_not(storage: Storage) -> None:
    rng = random.Random(5)

    def calls(n: int, start: float, span: float) -> list[ApiCall]:
        return [
            ApiCall(
                project_id="p1",
                timestamp=start + rng.uniform(0, span),
                endpoint=rng.choice(["/a", "/b", "/c"]),
                status=rng.choice([200, 200, 503]),
                duration_ms=rng.choice([0.0, rng.lognormvariate(3, 1.5)]),
                total_ms=1.0,
            )
            for _ in range(n)
        ]

    written = calls(300, T0, 3 * 86400)
    await storage.write(written)
    await storage.compact(before=T0 + 2 * 86400)  # the first day packed (SQL stores)
    late = calls(30, T0, 3600)  # unpacks some of the first day's rows again
    await storage.write(late)
    everything = written + late

    for resolution, width in (("hour", 3600), ("day", 86400)):
        got = await storage.series_rollups(Window("p1", resolution, T0, T0 + 3 * 86400), "api:")
        assert [r.series for r in got] == ["api:GET /a", "api:GET /b", "api:GET /c"]
        for r in got:
            mine = [c for c in everything if f"api:GET {c.endpoint}" == r.series]
            expected = Rollup("p1", r.series, resolution, 0)
            for c in mine:
                expected.add(c.duration_ms, c.status >= 500)
            assert r.bucket_start == min(int(c.timestamp // width * width) for c in mine)
            assert (r.count, r.error_count, r.value_count) == (
                expected.count,
                expected.error_count,
                expected.value_count,
            )
            assert r.value_sum == pytest.approx(expected.value_sum)
            assert (r.value_min, r.value_max) == (expected.value_min, expected.value_max)
            assert r.full_hist() == expected.hist
            qs = (0.0, 0.5, 0.95, 0.99, 1.0)
            assert r.quantiles(qs) == expected.quantiles(qs)
            assert r.count_at_most(20.0) == expected.count_at_most(20.0)

    total = await storage.series_rollups(
        Window("p1", "day", T0 + 86400, T0 + 3 * 86400), ("all:api",)
    )
    later = [c for c in everything if c.timestamp >= T0 + 86400]
    assert [(r.series, r.count) for r in total] == [("all:api", len(later))]
    assert await storage.series_rollups(Window("nobody", "day", T0, T0 + 3 * 86400)) == []


async def test_bucket_totals_sum_the_series_of_each_bucket(storage: Storage) -> None:
    rng = random.Random(8)
    calls = [
        ApiCall(
            project_id="p1",
            timestamp=T0 + rng.uniform(0, 3 * 86400),
            endpoint=rng.choice(["/a", "/b", "/c"]),
            method=rng.choice(["GET", "POST"]),
            status=rng.choice([200, 500]),
            duration_ms=rng.uniform(1, 100),
            total_ms=1.0,
        )
        for _ in range(300)
    ]
    await storage.write(calls)
    await storage.compact(before=T0 + 2 * 86400)

    def expected(prefixes: tuple[str, ...], width: int) -> list[tuple[int, int, int, int]]:
        sums: dict[int, list[int]] = {}
        for c in calls:
            series = f"api:{c.method} {c.endpoint}"
            if series.startswith(prefixes) and c.timestamp < T0 + 2 * 86400:
                acc = sums.setdefault(int(c.timestamp // width * width), [0, 0, 0])
                acc[0] += 1
                acc[1] += int(c.status >= 500)
                acc[2] += 1
        return [(b, acc[0], acc[1], acc[2]) for b, acc in sorted(sums.items())]

    for resolution, width in (("hour", 3600), ("day", 86400)):
        for prefixes in (("api:GET ",), ("api:GET /a", "api:POST /c"), ("api:",)):
            got = await storage.bucket_totals(
                Window("p1", resolution, T0, T0 + 2 * 86400), prefixes
            )
            assert all(r.series == "*" for r in got)
            assert [(r.bucket_start, r.count, r.error_count, r.value_count) for r in got] == (
                expected(prefixes, width)
            ), (resolution, prefixes)
            for r in got:
                inside = [
                    c.duration_ms
                    for c in calls
                    if f"api:{c.method} {c.endpoint}".startswith(prefixes)
                    and int(c.timestamp // width * width) == r.bucket_start
                ]
                assert r.value_sum == pytest.approx(sum(inside))


async def test_compaction_changes_no_figure_and_a_late_event_still_counts(
    storage: Storage,
) -> None:
    rng = random.Random(11)

    def calls(n: int, start: float, span: float) -> list[Event]:
        return [
            ApiCall(
                project_id="p1",
                timestamp=start + rng.uniform(0, span),
                endpoint=rng.choice(["/a", "/b"]),
                duration_ms=rng.choice([0.0, rng.lognormvariate(3, 1.5)]),
                total_ms=1.0,
            )
            for _ in range(n)
        ]

    written = calls(400, T0, 2 * 86400)
    await storage.write(written)

    async def snapshot(resolution: str) -> list[tuple[object, ...]]:
        rows = await storage.rollups(Window("p1", resolution, T0, T0 + 3 * 86400))
        return [
            (
                r.series,
                r.bucket_start,
                r.count,
                r.full_hist(),
                r.quantiles((0.0, 0.5, 0.95, 1.0)),
                r.count_at_most(20.0),
            )
            for r in rows
        ]

    before = {res: await snapshot(res) for res in ("hour", "day")}
    packed = await storage.compact(before=T0 + 3 * 86400)
    assert {res: await snapshot(res) for res in ("hour", "day")} == before
    assert await storage.compact(before=T0 + 3 * 86400) == 0  # nothing left to pack
    if packed:  # the SQL stores: every closed hour and day row was packed
        assert packed == len(before["hour"]) + len(before["day"])
        rows = await storage.rollups(Window("p1", "day", T0, T0 + 1))
        assert all(r.packed is not None and r.hist == {} for r in rows)

    late = calls(50, T0, 3600)
    await storage.write(late)
    day = await storage.rollups(Window("p1", "day", T0, T0 + 1), "api:")
    everything = written + late
    first_day = [e for e in everything if e.timestamp < T0 + 86400]
    assert sum(r.count for r in day) == len(first_day)
    merged = combine(day)
    assert (
        merged.full_hist()
        == combine(
            Rollup("p1", "x", "day", 0, hist=histogram.from_values([e.value() or 0.0]))
            for e in first_day
        ).full_hist()
    )
    await storage.compact(before=T0 + 3 * 86400)
    again = await storage.rollups(Window("p1", "day", T0, T0 + 1), "api:")
    assert combine(again).full_hist() == merged.full_hist()


async def test_only_completed_deployments_feed_the_deployment_rollups(storage: Storage) -> None:
    await storage.write(
        [
            DeploymentEvent(project_id="p1", timestamp=T0, deployment_id="d", type="started"),
            DeploymentEvent(
                project_id="p1",
                timestamp=T0 + 1,
                deployment_id="d",
                type="completed",
                status="failure",
                framework="vite",
            ),
        ]
    )
    [row] = await storage.rollups(Window("p1", "hour", T0, T0 + 3600), "deploy:")
    assert (row.series, row.count, row.error_count, row.value_count) == ("deploy:vite", 1, 1, 0)
    # The other steps count apart, so that a project with only those is still known.
    [step] = await storage.rollups(Window("p1", "hour", T0, T0 + 3600), "deploystep:")
    assert (step.series, step.count, step.error_count) == ("deploystep:started", 1, 0)
    assert await storage.projects() == ["p1"]


async def test_projects_and_health(storage: Storage) -> None:
    assert await storage.projects() == []
    await storage.write(one_of_each(T0, "b") + one_of_each(T0, "a"))
    assert await storage.projects() == ["a", "b"]
    assert (await storage.health())["ok"] is True


async def test_purge_deletes_only_what_is_older_than_each_cutoff(storage: Storage) -> None:
    old, new = T0 + 10, T0 + 2 * 86400 + 10
    await storage.write(one_of_each(old) + one_of_each(new) + one_of_each(old, "p2"))
    cutoff = T0 + 86400
    deleted = await storage.purge(
        before={
            "api_call": cutoff,
            "error": cutoff,
            "domain": T0,  # nothing is older than this
            "rollup:minute": cutoff,
            "rollup:hour": cutoff,
        },
        batch_size=1,  # many small batches must still delete everything they should
    )
    assert deleted["api_call"] == 2
    assert deleted["error"] == 2
    assert deleted["domain"] == 0
    assert deleted["rollup:minute"] > 0
    assert await storage.count("api_call") == 1
    assert await storage.count("error") == 1
    assert await storage.count("domain") == 3
    assert await storage.count("deployment") == 3
    for resolution in ("minute", "hour"):
        rows = await storage.rollups(Window("p1", resolution, 0, new + 86400))
        assert rows
        assert all(r.bucket_start >= cutoff for r in rows)
    days = await storage.rollups(Window("p1", "day", 0, new + 86400))
    assert {r.bucket_start for r in days} == {T0, T0 + 2 * 86400}


async def test_forget_user_erases_every_record_carrying_the_id(storage: Storage) -> None:
    await storage.write(one_of_each(T0) + one_of_each(T0 + 60, "p2"))
    other = ApiCall(project_id="p1", timestamp=T0, user_id="u-2", duration_ms=1.0, total_ms=1.0)
    await storage.write([other])
    deleted = await storage.forget_user("u-1")
    assert deleted["api_call"] == 2
    assert deleted["error"] == 2
    remaining = await storage.events("api_call")
    assert [c.user_id for c in remaining] == ["u-2"]  # type: ignore[attr-defined]
    assert await storage.count("error") == 0
    assert await storage.count("deployment") == 2
    assert await storage.forget_user("u-1") == {"api_call": 0, "error": 0}


async def test_each_period_of_a_job_is_claimed_once(storage: Storage) -> None:
    results = await asyncio.gather(*(storage.claim("purge", 3600, f"w{i}") for i in range(8)))
    assert sorted(results) == [False] * 7 + [True]
    assert await storage.claim("purge", 7200, "w1") is True
    assert await storage.claim("alerts", 3600, "w1") is True
    assert await storage.claim("purge", 7200, "w2") is False


async def test_ids_and_projects_with_separators_stay_apart(storage: Storage) -> None:
    a = DomainEvent(id="c", project_id="a:b", timestamp=T0, domain="one.com")
    b = DomainEvent(id="b:c", project_id="a", timestamp=T0, domain="two.com")
    sep = ApiCall(
        id="x", project_id="p\x1fq", timestamp=T0, user_id="u\x1fv", duration_ms=1.0, total_ms=1.0
    )
    result = await storage.write([a, b, sep])
    assert (result.inserted, result.duplicates) == (3, 0)
    assert await storage.count("domain", project_id="a:b") == 1
    assert await storage.count("domain", project_id="a") == 1
    assert await storage.forget_user("u\x1fv") == {"api_call": 1, "error": 0}
    assert await storage.count("api_call") == 0


async def test_rate_limit_refusals_are_listed_and_summed_per_rule(storage: Storage) -> None:
    refused = [
        RateLimitEvent(
            project_id="p1",
            timestamp=T0 + i,
            last_at=T0 + i + 0.5,
            key=f"k{i % 2}",
            rule="POST /pay",
            method="POST",
            path="/pay",
            limit=5,
            window_s=60,
            count=10 * (i + 1),
        )
        for i in range(3)
    ]
    shadow = RateLimitEvent(project_id="p1", timestamp=T0, key="k9", count=4, shadow=True)
    await storage.write([*refused, shadow])
    listed = await storage.events("ratelimit", project_id="p1", limit=10)
    assert sorted((e.key, e.count) for e in listed if isinstance(e, RateLimitEvent)) == [
        ("k0", 10),
        ("k0", 30),
        ("k1", 20),
        ("k9", 4),
    ]
    assert {asdict(e)["last_at"] for e in listed} >= {T0 + 0.5, T0 + 2.5}
    totals = await storage.series_totals(Window("p1", "hour", T0, T0 + 3600), "ratelimit:")
    assert [(t.series, t.count, t.value_sum) for t in totals] == [
        ("ratelimit:denied:POST /pay", 3, 60.0),
        ("ratelimit:shadow:default", 1, 4.0),
    ]


async def test_rate_limit_overrides_are_set_replaced_and_removed(storage: Storage) -> None:
    alice = Override(
        key="h-alice", subject="user:alice", rate="1000/minute", note="plan", created_at=T0
    )
    bot = Override(
        key="h-bot",
        subject="addr:203.0.113.7",
        rate="1/minute",
        created_at=T0 + 1,
        created_by="ops",
        expires_at=T0 + 3600,
    )
    await storage.set_rate_limit_override(alice)
    await storage.set_rate_limit_override(bot)
    assert await storage.rate_limit_overrides() == [alice, bot]
    raised = Override(key="h-alice", subject="user:alice", rate="5000/minute", created_at=T0 + 2)
    await storage.set_rate_limit_override(raised)
    assert sorted(await storage.rate_limit_overrides(), key=lambda o: o.key) == [raised, bot]
    assert await storage.remove_rate_limit_override("h-bot") is True
    assert await storage.remove_rate_limit_override("h-bot") is False
    assert await storage.rate_limit_overrides() == [raised]
