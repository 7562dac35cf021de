"""Marginal calibration: the encoder's marginal cells, raking and resampling."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tabsynth import CategoricalColumn, ContinuousColumn, Encoder, IntegerColumn, Schema
from tabsynth.sampling import rake, systematic_resample, target_distributions


def schema() -> Schema:
    return Schema((
        CategoricalColumn("c", nullable=True, categories=("a", "b", "c")),
        IntegerColumn("small", lower=0, upper=4),
        ContinuousColumn("gain", lower=0.0, upper=100.0, knots=(0.0, 0.0, 0.0, 50.0, 100.0)),
    ))


def test_marginal_cells_come_from_the_schema_with_a_cell_for_missing() -> None:
    encoder = Encoder(schema())
    frame = pd.DataFrame({"c": ["a", None, "c"], "small": [0, 4, 2], "gain": [0.0, 10.0, 90.0]})
    codes, sizes, names = encoder.marginal_cells(encoder.encode_compact(frame))
    assert names == ["c", "small", "gain"]
    assert sizes == [4, 5, 3]  # 3 categories + missing; 5 integers; point mass at 0 + two segments
    assert codes.tolist() == [[0, 0, 0], [3, 4, 1], [2, 2, 2]]


def test_raking_matches_reachable_target_marginals() -> None:
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, 3, 20_000), rng.integers(0, 2, 20_000)])
    targets = [np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.8])]
    weights = rake(codes, targets, iterations=30)
    for j, target in enumerate(targets):
        achieved = np.bincount(codes[:, j], weights=weights) / weights.sum()
        np.testing.assert_allclose(achieved, target, atol=1e-3)


def test_raking_ignores_cells_the_pool_never_reached() -> None:
    codes = np.array([[0], [0], [1], [1]])
    weights = rake(codes, [np.array([0.25, 0.25, 0.5])])
    np.testing.assert_allclose(weights, 1.0)


def test_target_distributions_drop_negative_noisy_counts() -> None:
    (target,) = target_distributions([np.array([30.0, -5.0, 10.0])])
    np.testing.assert_allclose(target, [0.75, 0.0, 0.25])


def test_systematic_resampling_follows_the_weights() -> None:
    weights = np.array([1.0, 3.0, 0.0, 4.0])
    index = systematic_resample(weights, 8000, np.random.default_rng(1))
    np.testing.assert_allclose(np.bincount(index, minlength=4) / 8000, [0.125, 0.375, 0.0, 0.5], atol=1e-3)


def test_calibrated_sampling_matches_the_dp_marginal_better_than_raw_sampling() -> None:
    from tabsynth import Synthesizer
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], p=[0.7, 0.2, 0.1], size=4000)})
    frame["colour"] = frame["colour"].astype("str")
    declared = Schema((CategoricalColumn("colour", categories=("red", "green", "blue")),))
    # The generator does not learn from the marginals here (marginal_weight=0, no marginal steps): raking alone.
    fast = dict(steps=2, batch_size=256, generator_hidden=(8,), discriminator_hidden=(8,), noise_dim=4, seed=0,
                marginal_weight=0.0, marginal_steps=0)
    raw = Synthesizer(**fast, marginal_fraction=0.0).fit(frame, epsilon=2.0, schema=declared)
    calibrated = Synthesizer(**fast, marginal_fraction=0.4).fit(frame, epsilon=2.0, schema=declared)
    truth = frame["colour"].value_counts(normalize=True)

    def tvd(synth: Synthesizer) -> float:
        shares = synth.sample(4000, seed=3)["colour"].value_counts(normalize=True)
        return 0.5 * float(shares.reindex(truth.index, fill_value=0).sub(truth).abs().sum())

    assert tvd(calibrated) < 0.05 < tvd(raw)


def test_a_small_sample_repeats_no_generator_row() -> None:
    # Calibration resamples at least 1,024 generator rows: from 1.25 n, a heavily weighted row came out twice.
    from tabsynth import Synthesizer
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], p=[0.7, 0.2, 0.1], size=4000),
                          "x": rng.normal(size=4000)})
    synth = Synthesizer(epochs=0.5, marginal_steps=50, seed=0).fit(frame, epsilon=2.0)
    assert not any(synth.sample(8, seed=seed).duplicated().any() for seed in range(20))
