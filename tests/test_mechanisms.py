"""Specifications for tabsynth.privacy.mechanisms."""

import decimal
import math

import numpy as np
import pytest

from dp_accounting.pld import privacy_loss_distribution
from scipy.stats import norm

from tabsynth.privacy import (
    default_numeric_candidates,
    discrete_laplace_count,
    dp_histogram_threshold,
    dp_quantiles,
    histogram_threshold,
)
from tabsynth.privacy.mechanisms import (
    GAUSSIAN_HISTOGRAMS,
    LAPLACE_HISTOGRAMS,
    CountNoise,
    gaussian_delta,
    gaussian_noise_std,
    histogram_quantiles,
    plan_category_release,
)


def test_discrete_laplace_count_is_an_integer_with_the_laplace_law_of_its_scale():
    rng = np.random.default_rng(0)
    counts = np.array([discrete_laplace_count(100, 0.5, rng) for _ in range(40_000)])
    assert counts.dtype.kind == "i"
    noise = counts - 100
    assert abs(noise.mean()) < 0.1
    for k in (0, 1, 3):  # P(k) = (1 - r) / (1 + r) r^|k|, r = e^-epsilon
        r = math.exp(-0.5)
        assert np.mean(noise == k) == pytest.approx((1 - r) / (1 + r) * r**k, rel=0.06)
        assert np.mean(noise == -k) == pytest.approx((1 - r) / (1 + r) * r**k, rel=0.06)


def test_discrete_laplace_counts_of_neighbouring_tables_differ_in_probability_by_at_most_e_epsilon():
    # Every output has the same support under n and n + 1, at likelihood ratios within e^epsilon.
    epsilon, rng = 1.0, np.random.default_rng(1)
    a = np.array([discrete_laplace_count(50, epsilon, rng) for _ in range(100_000)])
    b = np.array([discrete_laplace_count(51, epsilon, rng) for _ in range(100_000)])
    for value in range(48, 54):
        ratio = np.mean(a == value) / np.mean(b == value)
        assert math.exp(-epsilon) * 0.9 <= ratio <= math.exp(epsilon) * 1.1


def test_discrete_laplace_count_refuses_an_epsilon_whose_noise_no_integer_holds():
    # numpy caps geometric draws at 2**63 - 1: at epsilon 1e-20 both draws hit the cap and cancel.
    with pytest.raises(ValueError, match="too small for a count"):
        discrete_laplace_count(10, 1e-20, np.random.default_rng(0))


def test_discrete_laplace_count_validates_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="true_count"):
        discrete_laplace_count(-1, 1.0, rng)
    with pytest.raises(ValueError, match="epsilon"):
        discrete_laplace_count(3, 0.0, rng)
    with pytest.raises(ValueError, match="rng"):
        discrete_laplace_count(3, 1.0, np.random.RandomState(0))


def test_histogram_threshold_formula():
    assert histogram_threshold(1.0, 1e-6) == pytest.approx(1 + math.log(1 / 2e-6))
    # the differing row's singleton value survives with probability exactly delta
    eps, delta = 0.5, 1e-3
    assert 0.5 * math.exp(-eps * (histogram_threshold(eps, delta) - 1)) == pytest.approx(delta)


def _data():
    return np.array(["common"] * 500 + ["rare"] + ["mid"] * 40 + [None] * 30, dtype=object)


def test_histogram_releases_popular_values_but_not_a_singleton():
    values = _data()
    released_rare = released_common = 0
    for seed in range(200):
        out = dp_histogram_threshold(values, 1.0, 1e-6, np.random.default_rng(seed))
        released_rare += "rare" in out
        released_common += "common" in out
    assert released_rare == 0
    assert released_common == 200


def test_histogram_singleton_release_rate_matches_delta():
    # delta = 0.05 makes the (otherwise invisible) failure probability measurable: P = delta exactly.
    values = np.array(["x"] * 100 + ["rare"], dtype=object)
    rng = np.random.default_rng(1)
    hits = sum("rare" in dp_histogram_threshold(values, 1.0, 0.05, rng) for _ in range(4000))
    assert hits / 4000 == pytest.approx(0.05, abs=0.012)


def test_histogram_excludes_nulls_and_sorts_by_noisy_count():
    values = np.array(["a"] * 300 + ["b"] * 200 + [None] * 400 + [float("nan")] * 400, dtype=object)
    out = dp_histogram_threshold(values, 1.0, 1e-6, np.random.default_rng(0))
    assert list(out) == ["a", "b"]
    assert out["a"] == pytest.approx(300, abs=20) and out["b"] == pytest.approx(200, abs=20)


@pytest.mark.parametrize("first", [True, 1.0, np.int8(1), decimal.Decimal(1), None])
def test_a_released_values_type_does_not_depend_on_which_equal_value_comes_first(first: object) -> None:
    # pandas merges 1, 1.0 and True and keeps the first: one row put first decided the released type.
    values = np.array([first] + [1] * 500 + ["a"] * 500, dtype=object)
    out = dp_histogram_threshold(values, 1.0, 1e-6, np.random.default_rng(0))
    assert out.keys() == {1, "a"} and type(next(k for k in out if k == 1)) is int


def test_equal_values_of_different_types_that_both_clear_the_threshold_are_released_as_the_more_frequent():
    values = np.array([True] * 300 + [1] * 600, dtype=object)
    out = dp_histogram_threshold(values, 1.0, 1e-6, np.random.default_rng(0))
    assert list(out) == [1] and type(next(iter(out))) is int and out[1] == pytest.approx(600, abs=20)


@pytest.mark.parametrize("dtype", [np.float64, object])
def test_negative_zero_is_counted_as_zero(dtype: type) -> None:
    out = dp_histogram_threshold(np.array([-0.0] + [0.0] * 500, dtype=dtype), 1.0, 1e-6, np.random.default_rng(0))
    assert [math.copysign(1.0, value) for value in out] == [1.0]


def test_histogram_min_count_only_raises_the_threshold():
    values = np.array([1] * 50 + [2] * 500)
    out = dp_histogram_threshold(values, 1.0, 1e-6, np.random.default_rng(0), min_count=100)
    assert out.keys() == {2} and type(next(iter(out))) is int
    low = dp_histogram_threshold(values, 1.0, 1e-6, np.random.default_rng(0), min_count=-5)
    assert low.keys() == {1, 2}


def test_histogram_is_reproducible_with_a_seed():
    a = dp_histogram_threshold(_data(), 0.3, 1e-5, np.random.default_rng(7))
    b = dp_histogram_threshold(_data(), 0.3, 1e-5, np.random.default_rng(7))
    assert a == b


def test_histogram_validates_delta():
    with pytest.raises(ValueError, match="delta"):
        dp_histogram_threshold(_data(), 1.0, 0.0, np.random.default_rng(0))


def test_quartiles_of_a_normal_sample_are_accurate():
    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, size=5000)
    cand = default_numeric_candidates(integer=False)
    got = dp_quantiles(x, [0.25, 0.5, 0.75], 1.0, cand, np.random.default_rng(1))
    np.testing.assert_allclose(got, np.quantile(x, [0.25, 0.5, 0.75]), atol=2.5)


def test_an_extreme_outlier_does_not_drag_the_top_quantile():
    rng = np.random.default_rng(0)
    x = np.append(rng.normal(50, 10, size=5000), 1e9)
    got = dp_quantiles(x, [0.99], 1.0, default_numeric_candidates(False), np.random.default_rng(2))
    assert got[0] < 100


def test_quantiles_are_monotone_and_in_input_order():
    x = np.random.default_rng(0).exponential(3.0, size=300)
    q = [0.9, 0.1, 0.5, 0.5, 0.2]
    got = dp_quantiles(x, q, 0.2, default_numeric_candidates(False), np.random.default_rng(3))
    order = np.argsort(q, kind="stable")
    assert np.all(np.diff(got[order]) >= 0)


def test_quantiles_are_reproducible_with_a_seed():
    x = np.random.default_rng(0).normal(size=1000)
    cand = default_numeric_candidates(False)
    a = dp_quantiles(x, [0.1, 0.9], 0.5, cand, np.random.default_rng(5))
    b = dp_quantiles(x, [0.1, 0.9], 0.5, cand, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_quantile_sampling_follows_the_exponential_mechanism():
    # 3 candidates, data [0, 0, 5]: #{x < c} = 0, 2, 3 for c = -1, 1, 10; median utility -|below - 1.5|.
    x, cand = np.array([0.0, 0.0, 5.0]), np.array([-1.0, 1.0, 10.0])
    rng = np.random.default_rng(0)
    draws = np.array([dp_quantiles(x, [0.5], 2.0, cand, rng)[0] for _ in range(20_000)])
    weights = np.exp(2.0 * np.array([-1.5, -0.5, -1.5]) / (2 * 0.5))
    freq = [np.mean(draws == c) for c in cand]
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.015)


def test_quantiles_reject_nan_and_unsorted_candidates():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="NaN"):
        dp_quantiles(np.array([1.0, np.nan]), [0.5], 1.0, np.arange(5.0), rng)
    with pytest.raises(ValueError, match="candidates"):
        dp_quantiles(np.array([1.0]), [0.5], 1.0, np.array([3.0, 1.0]), rng)
    with pytest.raises(ValueError, match="quantiles"):
        dp_quantiles(np.array([1.0]), [1.5], 1.0, np.arange(5.0), rng)


def test_default_candidates_span_both_signs_and_many_magnitudes():
    grid = default_numeric_candidates(integer=False)
    assert np.all(np.diff(grid) > 0) and 0.0 in grid
    assert grid[0] <= -1e12 and grid[-1] >= 1e12
    assert np.min(np.abs(grid[grid != 0])) <= 1e-3
    assert np.max(np.diff(np.log10(grid[grid > 0]))) <= 1 / 32


def test_integer_candidates_are_integers_including_all_small_ones():
    grid = default_numeric_candidates(integer=True)
    assert np.all(grid == np.round(grid)) and np.all(np.diff(grid) > 0)
    assert set(range(-1000, 1001)) <= set(grid.astype(int).tolist())
    assert grid[-1] >= 1e12


@pytest.mark.parametrize("epsilon, delta, sensitivity", [(0.18, 2e-6, 3.0), (1.0, 1e-5, 1.0), (0.02, 1e-7, 1.0)])
def test_gaussian_noise_std_is_the_least_that_meets_delta_by_an_independent_accountant(epsilon, delta, sensitivity):
    std = gaussian_noise_std(epsilon, delta, sensitivity)
    pld = privacy_loss_distribution.from_gaussian_mechanism(std, sensitivity=sensitivity,
                                                             value_discretization_interval=1e-5)
    assert pld.get_delta_for_epsilon(epsilon) <= delta * 1.001  # Google's dp-accounting, pessimistic PLD
    assert pld.get_delta_for_epsilon(epsilon) >= delta * 0.98  # and not looser than needed
    smaller = privacy_loss_distribution.from_gaussian_mechanism(0.99 * std, sensitivity=sensitivity,
                                                                 value_discretization_interval=1e-5)
    assert smaller.get_delta_for_epsilon(epsilon) > delta


def test_gaussian_delta_is_monotone_in_noise_and_never_negative():
    deltas = [gaussian_delta(0.5, std) for std in (0.5, 1.0, 2.0, 8.0, 1e4)]
    assert all(a > b for a, b in zip(deltas, deltas[1:])) and deltas[-1] >= 0.0


def test_many_categorical_columns_release_through_one_gaussian_with_a_lower_threshold():
    # Adult at epsilon 1: 9 categorical columns share 0.18 and delta 3e-6 of the discovery budget
    gaussian = plan_category_release(0.18, 3e-6, 9)
    laplace_threshold = histogram_threshold(0.18 / 9, 3e-6 / 9)
    assert gaussian.mechanism == GAUSSIAN_HISTOGRAMS
    assert gaussian.threshold < 0.5 * laplace_threshold
    # its delta: the Gaussian's own curve plus, per column, the chance a value held by one row clears the threshold
    spent = (gaussian_delta(0.18, gaussian.noise, math.sqrt(9))
             + 9 * float(norm.sf((gaussian.threshold - 1.0) / gaussian.noise)))
    assert spent <= 3e-6 * (1 + 1e-9)


def test_a_single_categorical_column_keeps_the_laplace_histogram():
    release = plan_category_release(0.02, 3e-7, 1)
    assert release.mechanism == LAPLACE_HISTOGRAMS
    assert release.threshold == pytest.approx(histogram_threshold(0.02, 3e-7))
    assert release.noise == pytest.approx(1 / 0.02)


def test_gaussian_release_keeps_values_above_the_threshold_and_never_a_singleton():
    release = plan_category_release(0.18, 3e-6, 9)
    common = int(release.threshold + 6 * release.noise)
    values = np.array(["common"] * common + ["rare"] + ["edge"] * int(round(release.threshold)), dtype=object)
    draws = [release.release(values, np.random.default_rng(seed)) for seed in range(400)]
    assert all("common" in d and "rare" not in d for d in draws)
    assert 0.4 < np.mean(["edge" in d for d in draws]) < 0.6  # a count at the threshold: half the time
    noisy = np.array([d["common"] for d in draws]) - common
    assert noisy.std() == pytest.approx(release.noise, rel=0.1)


def test_category_release_validates_its_arguments():
    with pytest.raises(ValueError, match="columns"):
        plan_category_release(1.0, 1e-6, 0)
    with pytest.raises(ValueError, match="epsilon"):
        plan_category_release(0.0, 1e-6, 3)
    with pytest.raises(ValueError, match="delta"):
        gaussian_noise_std(1.0, 0.0)


def test_category_release_plans_at_extreme_budgets_without_overflow():
    assert plan_category_release(3000.0, 1e-5, 9).threshold < 2.0  # a value held by two rows is kept
    assert plan_category_release(1e-4, 1e-9, 9).threshold > 1e5


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_count_noise_sum_thresholds_are_the_exact_tails_of_sums_of_its_draws(kind: str):
    # An independent computation: Monte Carlo sums of the noise exceed each threshold with the stated probability.
    noise = CountNoise(kind, 2.0)
    rng = np.random.default_rng(0)
    # 200 terms: a sum of Laplace draws whose Gamma densities peak far from 0 (once out of quad's reach).
    for terms, failure, draws in [(1, 0.05, 400_000), (2, 0.002, 400_000), (4, 0.01, 400_000), (16, 0.001, 400_000),
                                  (200, 0.05, 40_000)]:
        sums = noise.sample(rng, draws * terms).reshape(draws, terms).sum(1)
        assert (sums >= noise.sum_threshold(terms, failure)).mean() == pytest.approx(failure, rel=0.15)


def test_count_noise_draws_have_the_std_of_their_kind_and_bad_parameters_are_rejected():
    rng = np.random.default_rng(1)
    for noise, std in ((CountNoise.laplace(0.5), 2.0 * math.sqrt(2.0)), (CountNoise("gaussian", 3.0), 3.0)):
        assert noise.sample(rng, 200_000).std() == pytest.approx(std, rel=0.02)
    with pytest.raises(ValueError, match="kind"):
        CountNoise("cauchy", 1.0)
    with pytest.raises(ValueError, match="scale"):
        CountNoise("gaussian", 0.0)
    with pytest.raises(ValueError, match="epsilon"):
        CountNoise.laplace(-1.0)


def _rank_error(x: np.ndarray, got: np.ndarray, levels: np.ndarray) -> float:
    return float(np.mean(np.abs(np.searchsorted(np.sort(x), got) / len(x) - levels)))


def test_histogram_quantiles_stay_accurate_where_many_exponential_mechanisms_fail():
    x = np.random.default_rng(0).lognormal(12, 0.5, size=30_000)  # fnlwgt-like
    levels, edges = np.linspace(0, 1, 17)[1:-1], np.linspace(20_000, 600_000, 33)
    cand = np.linspace(20_000, 600_000, 257)
    hist = [_rank_error(x, histogram_quantiles(x, levels, 0.005, edges, np.random.default_rng(s)), levels)
            for s in range(5)]
    expo = [_rank_error(x, dp_quantiles(x, levels, 0.005, cand, np.random.default_rng(s)), levels) for s in range(5)]
    assert np.mean(hist) < 0.03 < 0.1 < np.mean(expo)


def test_histogram_quantiles_follow_the_noiseless_cdf_at_large_epsilon():
    x = np.random.default_rng(1).uniform(0, 100, size=10_000)
    got = histogram_quantiles(x, [0.25, 0.5, 0.75], 1e6, np.linspace(0, 100, 101), np.random.default_rng(0))
    np.testing.assert_allclose(got, np.quantile(x, [0.25, 0.5, 0.75]), atol=0.5)


def test_histogram_quantiles_keep_an_integer_point_mass_at_its_value():
    x = np.concatenate([np.zeros(9_000), np.random.default_rng(2).integers(1, 1000, 1_000)])
    edges = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    got = histogram_quantiles(x, [0.1, 0.5, 0.85, 0.95], 1.0, edges, np.random.default_rng(0), integer=True)
    assert got[:3].tolist() == [0.0, 0.0, 0.0] and got[3] > 1


def test_histogram_quantiles_of_noise_alone_stay_sorted_inside_the_edges():
    for seed in range(20):
        got = histogram_quantiles(np.array([]), [0.1, 0.5, 0.9], 1.0, np.array([0.0, 4.0, 8.0]),
                                  np.random.default_rng(seed))
        assert np.all(np.diff(got) >= 0) and 0.0 <= got[0] and got[-1] <= 8.0


def test_histogram_quantiles_reject_bad_edges_and_nan():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="edges"):
        histogram_quantiles(np.array([1.0]), [0.5], 1.0, np.array([3.0, 1.0]), rng)
    with pytest.raises(ValueError, match="NaN"):
        histogram_quantiles(np.array([np.nan]), [0.5], 1.0, np.arange(5.0), rng)
