"""Percentiles read from the log-bucket histogram are within 2 % of the exact ones."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from asgimon import histogram
from asgimon.rollups import Rollup, aggregate

QS = (0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)

latencies = st.floats(min_value=0.0, max_value=3_600_000.0, allow_nan=False, allow_infinity=False)
samples = st.lists(latencies, min_size=1, max_size=2000)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def close(estimate: float | None, truth: float) -> bool:
    assert estimate is not None
    if truth <= histogram.MIN_VALUE:
        return estimate <= histogram.MIN_VALUE
    return abs(estimate - truth) <= 0.02 * truth


@given(samples)
@settings(max_examples=300, deadline=None)
def test_every_percentile_is_within_two_percent(values: list[float]) -> None:
    hist = histogram.from_values(values)
    for q, est in zip(QS, histogram.quantiles(hist, QS), strict=True):
        assert close(est, exact(values, q)), (q, est, exact(values, q))


@given(st.lists(samples, min_size=2, max_size=6))
@settings(max_examples=150, deadline=None)
def test_merged_histograms_answer_like_one_over_all_values(parts: list[list[float]]) -> None:
    merged = histogram.merged(histogram.from_values(p) for p in parts)
    everything = [v for p in parts for v in p]
    assert merged == histogram.from_values(everything)
    for q in (0.5, 0.95, 0.99):
        assert close(histogram.quantile(merged, q), exact(everything, q))


@given(samples)
@settings(max_examples=100, deadline=None)
def test_the_text_form_round_trips(values: list[float]) -> None:
    hist = histogram.from_values(values)
    assert histogram.loads(histogram.dumps(hist)) == hist


def test_empty_histograms_have_no_percentiles() -> None:
    assert histogram.quantiles({}, (0.5, 0.99)) == [None, None]
    assert histogram.loads("") == {}


def test_apdex_counts_use_bin_accuracy() -> None:
    hist = histogram.from_values([10.0, 100.0, 500.0, 2000.0])
    assert histogram.count_at_most(hist, 100.0) == 2
    assert histogram.count_at_most(hist, 400.0) == 2
    assert histogram.count_at_most(hist, 2000.0) == 4


@given(
    st.lists(st.tuples(st.integers(0, 7200), latencies, st.booleans()), min_size=1, max_size=300)
)
@settings(max_examples=100, deadline=None)
def test_rollups_add_up_at_every_resolution(rows: list[tuple[int, float, bool]]) -> None:
    from asgimon import ApiCall

    events = [
        ApiCall(
            timestamp=1_700_000_000 + offset,
            duration_ms=ms,
            total_ms=ms,
            status=500 if err else 200,
        )
        for offset, ms, err in rows
    ]
    deltas = aggregate(events)
    for resolution in ("minute", "hour", "day"):
        # The endpoint's series (the project's all:api total holds the same again).
        level = [r for r in deltas if r.resolution == resolution and r.series.startswith("api:")]
        total = Rollup("*", "*", resolution, 0)
        for r in level:
            total.merge(r)
        assert total.count == len(rows)
        assert total.error_count == sum(1 for _, _, err in rows if err)
        assert math.isclose(
            total.value_sum, sum(ms for _, ms, _ in rows), rel_tol=1e-9, abs_tol=1e-6
        )
        assert total.value_max == max(ms for _, ms, _ in rows)
        assert close(total.quantile(0.95), exact([ms for _, ms, _ in rows], 0.95))


@given(st.lists(samples, min_size=1, max_size=6), st.lists(latencies, max_size=50))
@settings(max_examples=200, deadline=None)
def test_packed_histograms_read_exactly_like_dicts(
    parts: list[list[float]], loose: list[float]
) -> None:
    """Closed buckets are read packed: merging and reading them must change nothing at all."""
    hists = [histogram.from_values(p) for p in parts]
    packed = histogram.Packed()
    for h in hists:
        packed.add(histogram.Packed.from_bytes(histogram.Packed.from_hist(h).to_bytes()))
    merged = histogram.merged(hists)
    assert packed.to_hist() == merged
    assert packed.quantiles(QS) == histogram.quantiles(merged, QS)
    for threshold in (0.0, 0.5, 20.0, 500.0, 2000.0, 1e9):
        assert packed.count_at_most(threshold) == histogram.count_at_most(merged, threshold)
    # A rollup holding both a packed part and a dict part (a closed and an open bucket).
    mixed = Rollup("p", "s", "day", 0, hist=histogram.from_values(loose), packed=packed.copy())
    whole = histogram.merged([merged, histogram.from_values(loose)])
    assert mixed.full_hist() == whole
    assert mixed.quantiles(QS) == histogram.quantiles(whole, QS)
    assert mixed.count_at_most(500.0) == histogram.count_at_most(whole, 500.0)
