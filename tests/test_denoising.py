"""Total-variation denoising of noisy ordered counts, and its use on the DP one-way marginals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tabsynth.privacy.denoising import SURE_WEIGHTS, runs, sure_tv_denoise, tv_denoise
from tabsynth.privacy.marginals import functional_map, measure_marginals, pooled_one_way, public_prior, smoothed

ADULT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "adult" / "train.parquet"


def assert_tv_optimal(values: np.ndarray, fit: np.ndarray, weight: float) -> None:
    """The optimality conditions of min ½‖y − x‖² + w·Σ|x[i+1] − x[i]| (a convex problem, so they
    certify the minimum): the residual's running sums z end at 0, stay within ±w, and equal −w
    where x rises and +w where it falls."""
    running = np.cumsum(values - fit)
    scale = 1e-8 * (1.0 + np.abs(values).sum())
    assert abs(running[-1]) <= scale
    inner, steps = running[:-1], np.diff(fit)
    assert np.all(np.abs(inner) <= weight + scale)
    np.testing.assert_allclose(inner[steps > 1e-12], -weight, atol=scale)
    np.testing.assert_allclose(inner[steps < -1e-12], weight, atol=scale)


def test_tv_denoising_gives_the_minimiser_of_its_objective() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 60))
        values = rng.normal(0, 10, n) + 100.0 * (rng.random(n) < 0.1)
        weight = float(rng.choice([0.01, 1.0, 5.0, 50.0, 1e4]))
        assert_tv_optimal(values, tv_denoise(values, weight), weight)


def test_tv_denoising_keeps_the_total_and_a_zero_weight_keeps_the_values() -> None:
    values = np.array([3.0, -1.0, 7.0, 7.5, 0.0, 40.0])
    assert tv_denoise(values, 2.0).sum() == pytest.approx(values.sum())
    np.testing.assert_array_equal(tv_denoise(values, 0.0), values)
    np.testing.assert_allclose(tv_denoise(values, 1e6), values.mean())  # one run: the mean
    np.testing.assert_allclose(tv_denoise(values + 1e12, 1e17), values.mean() + 1e12)  # no cancellation


def test_tv_denoising_refuses_a_negative_weight_and_values_that_are_not_finite() -> None:
    with pytest.raises(ValueError, match="weight"):
        tv_denoise(np.ones(3), -1.0)
    with pytest.raises(ValueError, match="finite"):
        tv_denoise(np.array([1.0, np.nan, 2.0]), 1.0)
    with pytest.raises(ValueError, match="one-dimensional"):
        tv_denoise(np.ones((2, 2)), 1.0)


def test_runs_counts_runs_of_equal_neighbours() -> None:
    assert runs(np.array([1.0, 1.0, 2.0, 2.0, 1.0])) == 3
    assert runs(np.array([5.0])) == 1


def test_sure_flattens_noise_on_a_flat_histogram_and_keeps_a_clean_step() -> None:
    rng = np.random.default_rng(1)
    flat = np.full(80, 50.0)
    noisy = flat + rng.normal(0, 20.0, 80)
    fit, weight = sure_tv_denoise(noisy, 20.0)
    assert weight > 0 and np.abs(fit - flat).sum() < 0.3 * np.abs(noisy - flat).sum()
    step = np.r_[np.full(20, 10.0), np.full(20, 5_000.0)] + rng.normal(0, 1.0, 40)
    fit, _ = sure_tv_denoise(step, 1.0)
    assert np.abs(fit - step).max() < 5.0  # the jump of 4,990 stays: no weight can buy it back


def test_sure_leaves_counts_the_noise_hardly_touches_as_they_are() -> None:
    rng = np.random.default_rng(2)
    counts = rng.integers(1_000, 20_000, 16).astype(float)  # a nominal code: neighbours unrelated
    fit, weight = sure_tv_denoise(counts + rng.normal(0, 5.0, 16), 5.0)
    assert weight == SURE_WEIGHTS[0]


def test_sure_shares_one_weight_across_rows_of_a_common_noise() -> None:
    rng = np.random.default_rng(3)
    rows = np.full((3, 40), 30.0) + rng.normal(0, 10.0, (3, 40))
    fit, weight = sure_tv_denoise(rows, 10.0)
    assert fit.shape == rows.shape and weight > 0
    for row, fitted in zip(rows, fit):
        assert_tv_optimal(row, fitted, weight * 10.0)


def ordered_release(seed: int, counts: np.ndarray, rho: float):
    """A release of one ordered marginal (the counts) beside a three-value category, with their pair."""
    rng = np.random.default_rng(seed)
    cells = np.repeat(np.arange(len(counts)), counts.astype(int))
    other = rng.integers(0, 3, len(cells))
    return measure_marginals([np.stack([cells, other], 1)], [len(counts), 3], [(0, 1)], rho, rng,
                             coarsen=[False, False], missing=[False, False], ordered=[True, False])


@pytest.mark.skipif(not ADULT.exists(), reason="shared datasets not available")
def test_smoothing_takes_noise_out_of_adults_ages_and_leaves_a_category_alone() -> None:
    ages = pd.read_parquet(ADULT, columns=["age"])["age"].to_numpy()
    exact = np.bincount(ages - 17, minlength=74).astype(float)
    raw_error = smoothed_error = 0.0
    for seed in range(8):
        measured = pooled_one_way(ordered_release(seed, exact, 0.002))
        release = smoothed(measured, ordered=[True, False], missing=[False, False], codes=[True, False])
        np.testing.assert_array_equal(release.one_way[1], measured.one_way[1])
        assert release.smoothing[1] == 0.0
        raw_error += float(np.abs(measured.one_way[0] - exact).sum())
        smoothed_error += float(np.abs(release.one_way[0] - exact).sum())
    assert smoothed_error < 0.9 * raw_error  # 0.80 measured


def test_smoothing_takes_most_of_the_false_mass_out_of_an_empty_range_end() -> None:
    # A discovered range past the data: the last 30 of 60 values hold no rows.
    exact = np.r_[np.full(30, 400.0), np.zeros(30)]
    false_mass = lambda counts: float(np.clip(counts[30:], 0.0, None).sum())  # noqa: E731
    raw = after = 0.0
    for seed in range(8):
        measured = pooled_one_way(ordered_release(seed, exact, 0.002))
        raw += false_mass(measured.one_way[0])
        release = smoothed(measured, ordered=[True, False], missing=[False, False], codes=[True, False])
        after += false_mass(release.one_way[0])
    assert after < 0.7 * raw  # 0.49 measured


def test_smoothing_keeps_a_missing_cell_apart() -> None:
    rng = np.random.default_rng(5)
    cells = np.stack([np.r_[rng.integers(0, 20, 900), np.full(100, 20)], rng.integers(0, 2, 1000)], 1)
    measured = measure_marginals([cells], [21, 2], [], 0.001, rng)
    release = smoothed(measured, ordered=[True, False], missing=[True, False], codes=[True, False])
    assert release.smoothing[0] > 0
    assert release.one_way[0][-1] == measured.one_way[0][-1]
    assert release.one_way[0][:-1].sum() == pytest.approx(measured.one_way[0][:-1].sum())


def test_smoothing_is_refused_once_the_counts_are_shrunk_towards_a_public_table() -> None:
    measured = ordered_release(6, np.full(10, 100.0), 0.01)
    public = np.stack([np.arange(10).repeat(10), np.zeros(100, dtype=np.int64)], 1)
    with pytest.raises(ValueError, match="raw release"):
        smoothed(public_prior(measured, public), ordered=[True, False], missing=[False, False], codes=[True, False])


def test_a_pair_is_smoothed_along_an_ordered_marginal_it_holds_at_full_resolution() -> None:
    cells = age_profiles(7)  # a smooth profile of ages for each of two groups
    exact = np.bincount(cells[:, 0] * 2 + cells[:, 1], minlength=180).astype(float)
    raw_error = smoothed_error = 0.0
    for seed in range(6):
        measured = pooled_one_way(measure_marginals([cells], [90, 2], [(0, 1)], 0.002, np.random.default_rng(seed),
                                                    coarsen=[False, False], missing=[False, False],
                                                    ordered=[True, False]))
        release = smoothed(measured, ordered=[True, False], missing=[False, False], codes=[True, False])
        assert release.pair_smoothing[0] > 0
        before, after = (np.asarray(r.two_way[0]).reshape(90, 2) for r in (measured, release))
        np.testing.assert_allclose(after.sum(0), before.sum(0))  # each group's total as released
        raw_error += float(np.abs(before.ravel() - exact).sum())
        smoothed_error += float(np.abs(after.ravel() - exact).sum())
    assert smoothed_error < 0.7 * raw_error  # 0.51 measured


def test_a_pair_without_an_ordered_marginal_at_full_resolution_is_left_as_released() -> None:
    rng = np.random.default_rng(8)
    cells = np.stack([rng.integers(0, 90, 3_000), rng.integers(0, 4, 3_000), rng.integers(0, 5, 3_000)], 1)
    measured = pooled_one_way(measure_marginals([cells], [90, 4, 5], [(0, 1), (1, 2)], 0.002, rng,
                                                coarsen=[True, False, False], missing=[False] * 3,
                                                ordered=[True, False, False]))
    release = smoothed(measured, ordered=[True, False, False], missing=[False] * 3, codes=[True, False, False])
    for after, before in zip(release.two_way, measured.two_way, strict=True):
        np.testing.assert_array_equal(after, before)  # (0, 1) holds marginal 0 in runs; (1, 2) is unordered
    assert release.pair_smoothing == (0.0, 0.0)


def age_profiles(seed: int) -> np.ndarray:
    """Rows of (age of 0-89, a group of two whose share grows with age)."""
    rng = np.random.default_rng(seed)
    ages = rng.normal(45, 12, 6_000).clip(0, 89).astype(int)
    return np.stack([ages, (rng.random(6_000) < 0.3 + 0.004 * ages).astype(int)], 1)


def test_a_pair_is_smoothed_along_a_code_only() -> None:
    # The synthesizer flags binary codes; a number's segments are not: against a strongly dependent
    # number each row is a narrow peak over segments of unequal widths.
    measured = pooled_one_way(measure_marginals([age_profiles(9)], [90, 2], [(0, 1)], 0.002, np.random.default_rng(9),
                                                coarsen=[False, False], missing=[False, False],
                                                ordered=[True, False]))
    as_code = smoothed(measured, ordered=[True, False], missing=[False, False], codes=[True, False])
    as_segments = smoothed(measured, ordered=[True, False], missing=[False, False], codes=[False, False])
    assert as_code.pair_smoothing[0] > 0 and not np.array_equal(as_code.two_way[0], measured.two_way[0])
    np.testing.assert_array_equal(as_segments.two_way[0], measured.two_way[0])
    assert as_segments.pair_smoothing == (0.0,)


def test_a_pair_the_release_shows_a_function_is_left_for_the_function_to_be_found() -> None:
    rng = np.random.default_rng(10)
    code = rng.integers(0, 74, 20_000)
    measured = pooled_one_way(measure_marginals([np.stack([code, code % 3], 1)], [74, 3], [(0, 1)], 0.01, rng,
                                                coarsen=[False, False], missing=[False, False],
                                                ordered=[True, False]))
    assert functional_map(measured, 0, 1) is not None  # the release shows the label a function of the code
    release = smoothed(measured, ordered=[True, False], missing=[False, False], codes=[True, False])
    np.testing.assert_array_equal(release.two_way[0], measured.two_way[0])
    assert functional_map(release, 0, 1) is not None
