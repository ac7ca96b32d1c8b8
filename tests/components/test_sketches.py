"""Profile summaries at scale: exact moments on offset columns, quantiles within the KLL
bound, a histogram over the whole range, heavy hitters within the Misra-Gries bound."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from components.data.quality import Profile
from components.data.sketches import EXACT_VALUES, Distribution, HeavyHitters, Moments

BATCH = 1 << 20


@pytest.fixture(scope="module")
def offset_column() -> np.ndarray:
    """50M values with a large offset: where sum(x^2) - n mean^2 loses every digit."""
    rng = np.random.default_rng(16)
    return rng.normal(1e9, 3.0, 50_000_000)


@pytest.mark.slow
def test_std_and_quantiles_of_50m_offset_values(offset_column: np.ndarray) -> None:
    moments, distribution = Moments(), Distribution()
    for start in range(0, offset_column.size, BATCH):
        chunk = offset_column[start : start + BATCH]
        moments.add(chunk)
        distribution.add(chunk)
    assert moments.n == offset_column.size
    assert moments.std == pytest.approx(float(np.std(offset_column)), rel=1e-9)
    assert moments.mean == pytest.approx(float(np.mean(offset_column)), rel=1e-12)
    naive = np.sqrt(max(np.mean(offset_column**2) - np.mean(offset_column) ** 2, 0.0))
    assert abs(naive - 3.0) > 0.1  # what the old formula reported (cancellation)
    assert not distribution.exact and 0 < distribution.rank_error < 0.02
    ranks = [0.01, 0.25, 0.5, 0.75, 0.99]
    ordered = np.sort(offset_column[::50])  # 1M evenly strided values: ranks to ~1e-3
    for rank, value in zip(ranks, distribution.quantiles(ranks), strict=True):
        observed = np.searchsorted(ordered, value) / ordered.size
        assert abs(observed - rank) <= distribution.rank_error + 2e-3


def test_small_streams_are_exact_and_the_histogram_spans_every_batch() -> None:
    distribution = Distribution()
    distribution.add(np.zeros(100))  # the first batch holds only zeros
    distribution.add(np.arange(1.0, 101.0))  # later values far outside it
    assert distribution.exact
    edges, counts = distribution.histogram(*distribution.quantiles([0.0, 1.0]), 10)
    assert (edges[0], edges[-1]) == (0.0, 100.0)
    assert sum(counts) == 200 and counts[0] == 109  # the zeros and 1..9: nothing piles up
    assert distribution.quantiles([0.5]) == [
        float(np.quantile(np.r_[np.zeros(100), np.arange(1.0, 101.0)], 0.5))
    ]
    big = Distribution()
    big.add(np.arange(EXACT_VALUES + 10, dtype=np.float64))
    assert not big.exact
    edges, counts = big.histogram(0.0, EXACT_VALUES + 9.0, 4)
    assert sum(counts) == EXACT_VALUES + 10
    for count in counts:  # uniform: each bin within the rank error of a quarter
        assert abs(count / (EXACT_VALUES + 10) - 0.25) <= 2 * big.rank_error


def test_heavy_hitters_keep_counting_past_high_cardinality() -> None:
    hitters = HeavyHitters(capacity=64)
    rng = np.random.default_rng(3)
    truth: dict[str, int] = {}
    for _ in range(20):
        # 10,000 one-off ids per batch, and a few frequent values whose counts keep growing
        rare = [f"id-{rng.integers(1 << 40)}" for _ in range(10_000)]
        frequent = ["a"] * 900 + ["b"] * 600 + ["c"] * 300
        for value in frequent:
            truth[value] = truth.get(value, 0) + 1
        hitters.add(pa.array(rare + frequent))
    top = dict(hitters.top(3))
    assert list(top) == ["a", "b", "c"]
    for value, estimate in top.items():
        assert truth[value] - hitters.error <= estimate <= truth[value]
    assert hitters.error <= 20 * 11_800 // 65
    assert not hitters.distinct_exact


def test_profile_reports_the_bounds() -> None:
    profile = Profile([])
    for start in range(0, 800_000, 50_000):
        values = np.arange(start, start + 50_000, dtype=np.float64) + 1e12
        values[7] = np.inf  # not finite: left out of moments and distribution
        profile.update(pa.record_batch({"x": values, "k": pa.array(["u", "v"] * 25_000)}))
    x = profile.to_dict()["columns"]["x"]
    finite = np.concatenate(
        [np.delete(np.arange(s, s + 50_000.0), 7) for s in range(0, 800_000, 50_000)]
    )
    assert x["std"] == pytest.approx(float(np.std(finite)), rel=1e-12)
    assert x["sampled_every"] == 8 and x["exact"] is False and 0 < x["rank_error"] < 0.02
    assert sum(x["histogram"]["counts"]) == 16 * len(range(0, 49_999, 8))  # 1 in 8 per batch
    k = profile.to_dict()["columns"]["k"]
    assert (k["distinct"], k["top"], k["top_error"]) == (2, [["u", 400_000], ["v", 400_000]], 0)
