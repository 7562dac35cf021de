"""DP marginals: which are measured, the Gaussian mechanism's noise and accounting, and the generator's
differentiable estimate of them (soft cells) that the marginal loss compares with the measurements."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from opacus.accountants import PRVAccountant, RDPAccountant

from tabsynth import (BooleanColumn, CategoricalColumn, ContinuousColumn, Encoder, GeoPointColumn, IntegerColumn,
                      Schema)
from tabsynth.geo import BoundingBox
from tabsynth.encoding import CellSpec
from tabsynth.models import OutputHeads, SoftCells
from tabsynth.privacy.accounting import RDP_ORDERS, calibrate_noise_multiplier, compute_epsilon, zcdp_budget
from tabsynth.encoding import NUMBER_CELLS
from tabsynth.privacy.marginals import (MAX_PAIR_CELLS, PAIR_RESOLUTION, MarginalMeasurements, choose_pairs, count_chunks,
                                        coarse_resolution, fine_pair_cells,
                                        measure_marginals, noisy_dependence, pair_counts, pair_groups,
                                        pair_size_bounds, pooled_one_way, public_prior, with_public_pairs)
from tabsynth.training import (MARGINAL_NOISE_REF, SQUARED_WEIGHT, MarginalLoss, _GatheredGram, _GramWorkspace,
                               marginal_learning_rate, marginal_step_count)


def mixed_schema() -> Schema:
    return Schema((
        CategoricalColumn("c", nullable=True, categories=("a", "b", "c")),
        IntegerColumn("small", lower=0, upper=4),
        ContinuousColumn("gain", lower=0.0, upper=100.0, knots=(0.0, 0.0, 0.0, 50.0, 100.0)),
        BooleanColumn("flag"),
        GeoPointColumn("place", lat="lat", lon="lon", region=BoundingBox(30.0, 40.0, -120.0, -110.0)),
    ))


def mixed_frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "c": pd.Series(rng.choice(["a", "b", "c", None], size=n), dtype=object),
        "small": rng.integers(0, 5, size=n),
        "gain": np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0, 100, size=n)),
        "flag": rng.random(n) < 0.3,
        "lat": rng.uniform(30, 40, size=n), "lon": rng.uniform(-120, -110, size=n),
    })


def raw_specs(encoder: Encoder) -> tuple[OutputHeads, tuple[CellSpec, ...]]:
    """The generator heads of ``encoder``'s layout and its marginal cells located in their raw outputs."""
    heads = OutputHeads(encoder.layout)
    return heads, heads.raw_cell_specs(encoder.cell_specs)


def hard_raw(encoder: Encoder, frame: pd.DataFrame) -> torch.Tensor:
    """Generator outputs (pre-activation) whose draws are, almost surely, the rows of ``frame``."""
    heads = OutputHeads(encoder.layout)
    dense = encoder.encode(frame)
    raw = torch.full((len(frame), heads.raw_dim), -30.0)
    for span in encoder.layout:
        block = dense[:, span.start:span.end]
        if span.start in heads.code_starts:  # logits: the code's value near-certain
            values = (block @ 2.0 ** torch.arange(span.width)).long()
            raw[torch.arange(len(frame)), heads.dense_to_raw[span.start] + values] = 30.0
        elif span.role != "place":
            start = heads.dense_to_raw[span.start]
            raw[:, start:start + span.width] = (torch.atanh(block.clamp(-0.999999, 0.999999)) if span.activation == "tanh"
                                                else block * 60.0 - 30.0)  # logits: one-hot and bits near-certain
    return raw


def test_soft_cells_of_certain_outputs_are_the_encoders_marginal_cells() -> None:
    encoder = Encoder(mixed_schema())
    frame = mixed_frame()
    cells, sizes, names = encoder.marginal_cells(encoder.encode_compact(frame))
    probs = SoftCells(raw_specs(encoder)[1])(hard_raw(encoder, frame))
    assert [spec.name for spec in encoder.cell_specs] == names
    assert [p.shape[1] for p in probs] == sizes == [spec.size for spec in encoder.cell_specs]
    for j, p in enumerate(probs):
        torch.testing.assert_close(p.sum(1), torch.ones(len(frame)))
        if encoder.cell_specs[j].kind != "unit":  # a number near a cell edge is split softly between two cells
            assert (p.argmax(1).numpy() == cells[:, j]).all(), names[j]
    # Numbers: most rows sit well inside their cell.
    unit = [j for j, spec in enumerate(encoder.cell_specs) if spec.kind == "unit"]
    assert all((probs[j].argmax(1).numpy() == cells[:, j]).mean() > 0.85 for j in unit)


def test_the_marginal_loss_is_zero_for_the_exact_table_and_positive_for_another() -> None:
    encoder = Encoder(mixed_schema())
    frame = mixed_frame(n=400)
    cells, sizes, _ = encoder.marginal_cells(encoder.encode_compact(frame))
    discrete = [j for j, spec in enumerate(encoder.cell_specs) if spec.kind != "unit"]
    pairs = [(a, b) for a in discrete for b in discrete if a < b]
    one, two = count_chunks([cells], sizes, pairs)
    exact = MarginalMeasurements(tuple(sizes), tuple(c.astype(float) for c in one), tuple(pairs),
                                 tuple(c.astype(float) for c in two), 0.0, 0.0, 1.0, ungrouped(sizes))
    loss = MarginalLoss(raw_specs(encoder)[1], exact, "cpu")
    same = loss(hard_raw(encoder, frame))
    other = loss(hard_raw(encoder, mixed_frame(n=400, seed=1)))
    # Only the soft binning of the numbers' one-way marginals keeps the exact table's loss above 0.
    assert float(same) < 0.05 < float(other)


def test_pair_counts_index_cells_row_major() -> None:
    cells = np.array([[0, 2], [1, 0], [1, 2], [1, 2]])
    (counts,) = pair_counts(cells, [2, 3], [(0, 1)])
    assert counts.tolist() == [0, 0, 1, 1, 0, 2]


def test_every_small_pair_is_measured_when_few_qualify() -> None:
    sizes = [3, 4, MAX_PAIR_CELLS // 2, 2]
    assert choose_pairs(sizes, max_pairs=100) == [(0, 1), (0, 3), (1, 3), (2, 3)]  # (0, 2), (1, 2) are too large


def test_past_the_pair_cap_the_smallest_pairs_or_the_publicly_most_dependent_are_measured() -> None:
    sizes = [2, 3, 4, 5]
    assert choose_pairs(sizes, max_pairs=2) == [(0, 1), (0, 2)]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 3000)
    public = np.column_stack([rng.integers(0, 2, 3000), rng.integers(0, 3, 3000), a, np.minimum(a, 4)])
    assert choose_pairs(sizes, max_pairs=1, public_cells=public) == [(2, 3)]


def test_measured_noise_realises_rho_and_rho_is_the_budget_of_a_gaussian_mechanism() -> None:
    cells = np.zeros((2000, 3), dtype=np.int64)
    sizes, pairs, rho = [2, 3, 4], [(0, 1), (0, 2), (1, 2)], 0.05
    measured = measure_marginals([cells[:1000], cells[1000:]], sizes, pairs, rho, np.random.default_rng(0))
    achieved = len(sizes) / (2 * measured.one_way_std**2) + len(pairs) / (2 * measured.two_way_std**2)
    assert math.isclose(achieved, rho, rel_tol=1e-12)
    assert abs(measured.one_way[0][0] - 2000) < 6 * measured.one_way_std  # both chunks were counted
    assert measured.two_way[0].shape == (6,)


def test_the_released_counts_carry_noise_of_the_stated_std() -> None:
    sizes, pairs = [400, 500], [(0, 1)]
    cells = np.zeros((10, 2), dtype=np.int64)  # every cell but the first of each marginal is truly 0
    measured = measure_marginals([cells], sizes, pairs, 0.02, np.random.default_rng(1))
    assert np.std(measured.one_way[0][1:]) == pytest.approx(measured.one_way_std, rel=0.1)
    assert np.std(measured.one_way[1][1:]) == pytest.approx(measured.one_way_std, rel=0.1)
    assert np.std(measured.two_way[0][1:]) == pytest.approx(measured.two_way_std, rel=0.02)
    z = calibrate_noise_multiplier(1.0, 1e-5, 1.0, 1)
    assert math.isclose(zcdp_budget(1.0, 1e-5), 1 / (2 * z**2))


def test_the_released_counts_lie_on_a_power_of_two_grid_finer_than_a_64th_of_their_noise() -> None:
    # The low-order bits of a floating-point Gaussian sample can tell which count it came from.
    measured = measure_marginals([np.zeros((10, 2), dtype=np.int64)], [400, 500], [(0, 1)], 0.02,
                                 np.random.default_rng(1))
    for counts, std in ((measured.one_way[0], measured.one_way_std), (measured.two_way[0], measured.two_way_std)):
        grid = 2.0 ** math.floor(math.log2(std / 64))
        assert np.array_equal(counts / grid, np.round(counts / grid)) and grid > std / 128


@pytest.mark.parametrize(("rho", "coarse"), [(0.0005, True), (10.0, False)])
def test_a_pair_too_large_for_its_noise_is_measured_over_runs_of_its_ordered_marginal(rho: float,
                                                                                      coarse: bool) -> None:
    # An age-like code of 74 values by 16 categories: 1,184 cells of 25 rows on average. Noisy, most
    # cells would hold more noise than rows; the age side is then cut into PAIR_RESOLUTION runs.
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 74, 30_000), rng.integers(0, 16, 30_000)])
    measured = measure_marginals([cells], [74, 16], [(0, 1)], rho, rng, coarsen=[False, False],
                                 ordered=[True, False])
    assert measured.coarse == (coarse,)
    assert measured.two_way[0].shape == ((PAIR_RESOLUTION if coarse else 74) * 16,)
    assert measured.fine_cells == fine_pair_cells(measured.two_way_std, measured.total)
    assert (measured.fine_cells < 74 * 16) == coarse


def test_a_noisier_coarse_pair_cuts_its_ordered_marginal_into_fewer_runs() -> None:
    # Noise std near 190 per pair cell on 30,000 rows: about 120 cells may be fine, so the 74-value code
    # enters its coarse pair in about sqrt(120) runs, not PAIR_RESOLUTION.
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 74, 30_000), rng.integers(0, 16, 30_000)])
    measured = measure_marginals([cells], [74, 16], [(0, 1)], 2e-5, rng, coarsen=[False, False],
                                 ordered=[True, False])
    runs = coarse_resolution(measured.fine_cells)
    assert measured.coarse == (True,) and runs == math.isqrt(measured.fine_cells) < PAIR_RESOLUTION
    assert measured.two_way[0].shape == (runs * 16,)
    assert measured.details()["coarse_two_way_resolution"] == runs


def test_an_ordered_marginal_of_few_values_keeps_them_in_a_noisy_coarse_pair() -> None:
    # A 16-value code (years of education) by 16 categories, measured coarse: merging the code's values
    # would blur the pairs that tie it to its label, so only marginals of more than PAIR_RESOLUTION merge.
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 16, 30_000), rng.integers(0, 16, 30_000)])
    measured = measure_marginals([cells], [16, 16], [(0, 1)], 2e-5, rng, coarsen=[False, False],
                                 ordered=[True, False])
    assert measured.fine_cells < 16 * 16 and coarse_resolution(measured.fine_cells) < 16
    assert measured.two_way[0].shape == (16 * 16,)


def test_a_merged_pairs_categories_keep_pair_resolution_runs_however_noisy_the_release() -> None:
    # Two categoricals of 300 values: too large even coarse, so measured with light categories merged
    # by mass, into PAIR_RESOLUTION runs each; the fewer runs of a noisy release are for numbers.
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 300, 30_000), rng.integers(0, 300, 30_000)])
    measured = measure_marginals([cells], [300, 300], [(0, 1)], 2e-5, rng, ordered=[False, False],
                                 unordered=[True, True])
    assert measured.merged == (True,) and measured.coarse_resolution < PAIR_RESOLUTION
    assert measured.two_way[0].shape == (PAIR_RESOLUTION * PAIR_RESOLUTION,)


@pytest.mark.parametrize(("fine_cells", "runs"), [(0, 4), (15, 4), (121, 11), (399, 19), (450, 20), (4096, 20)])
def test_the_coarse_resolution_is_the_square_root_of_the_fine_cells_within_its_bounds(fine_cells: int,
                                                                                      runs: int) -> None:
    assert coarse_resolution(fine_cells) == runs


def two_years(rows: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cells of a public and a private year of (education-like, occupation-like) columns, dependent;
    the private year's first column has ``shift`` of its rows moved to other values."""
    rng = np.random.default_rng(seed)
    def year(moved: float) -> np.ndarray:
        a = np.minimum(rng.geometric(0.15, rows) - 1, 15)
        a = np.where(rng.random(rows) < moved, rng.integers(0, 16, rows), a)
        b = np.where(rng.random(rows) < 0.6, a % 12, rng.integers(0, 12, rows))
        return np.column_stack([a, b])
    return year(0.0), year(shift)


def distance_to(exact: np.ndarray, counts: np.ndarray) -> float:
    clipped = np.clip(counts, 0, None)
    return 0.5 * float(np.abs(clipped / clipped.sum() - exact / exact.sum()).sum())


def test_a_missing_cell_within_three_noise_stds_of_zero_marks_its_column_null_free() -> None:
    # Columns 0 and 1 end in a missing cell: 0 holds no nulls, 1 holds a fifth; column 2 has no missing cell.
    rng = np.random.default_rng(2)
    n = 20_000
    cells = np.stack([rng.integers(0, 3, n), np.where(rng.random(n) < 0.2, 3, rng.integers(0, 3, n)),
                      rng.integers(0, 3, n)], 1)
    measured = measure_marginals([cells], [4, 4, 3], [], 0.01, np.random.default_rng(3))
    assert measured.one_way_std > 5
    assert measured.null_free([True, True, False]) == (0,)
    assert measured.null_free([False, True, False]) == ()


def test_without_nulls_zeroes_a_marginals_missing_cell_one_way_and_in_its_pairs() -> None:
    rng = np.random.default_rng(4)
    cells = np.stack([rng.integers(0, 3, 500), rng.integers(0, 4, 500)], 1)  # marginal 0: 2 values + missing
    measured = measure_marginals([cells], [3, 4], [(0, 1), (1, 0)], 0.01, np.random.default_rng(5))
    cleared = measured.without_nulls([0])
    assert cleared.one_way[0][-1] == 0 and np.array_equal(cleared.one_way[0][:-1], measured.one_way[0][:-1])
    assert np.array_equal(cleared.one_way[1], measured.one_way[1])
    first, second = cleared.two_way[0].reshape(3, 4), cleared.two_way[1].reshape(4, 3)
    assert not first[-1].any() and not second[:, -1].any()
    np.testing.assert_array_equal(first[:-1], measured.two_way[0].reshape(3, 4)[:-1])


def generalised_least_squares_one_way(measured: MarginalMeasurements, j: int) -> np.ndarray:
    """Marginal ``j``'s one-way counts estimated from its own counts and its pairs' margins by a dense
    weighted least-squares solve: each measurement a block of design rows, weighted by 1 / its std."""
    size = measured.sizes[j]
    design, observed = [np.eye(size) / measured.one_way_std], [measured.one_way[j] / measured.one_way_std]
    for m, pair in enumerate(measured.pairs):
        if j not in pair:
            continue
        rows, columns = measured.pair_axes(m)
        joint = measured.two_way[m].reshape(int(rows.max()) + 1, int(columns.max()) + 1)
        groups, margin, others = (rows, joint.sum(1), joint.shape[1]) if pair[0] == j else (columns, joint.sum(0), joint.shape[0])
        std = measured.two_way_std * math.sqrt(others)
        design.append((groups[None, :] == np.arange(len(margin))[:, None]) / std)
        observed.append(margin / std)
    return np.linalg.lstsq(np.vstack(design), np.concatenate(observed), rcond=None)[0]


def test_pooling_estimates_each_one_way_marginal_by_least_squares_from_its_counts_and_its_pairs_margins() -> None:
    rng = np.random.default_rng(20)
    cells = np.stack([rng.integers(0, 30, 800), rng.integers(0, 3, 800), rng.integers(0, 25, 800)], 1)
    sizes = [30, 3, 25]  # marginal 0 enters pairs as runs of cells; 2 too, in the pairs measured coarse
    measured = measure_marginals([cells], sizes, [(0, 1), (0, 2), (1, 2)], 0.001, np.random.default_rng(21),
                                 coarsen=[True, False, False], missing=[False] * 3, ordered=[True, False, True])
    assert any(measured.coarse) and not all(measured.coarse)  # margins over both kinds of groups
    pooled = pooled_one_way(measured)
    for j in range(3):
        np.testing.assert_allclose(pooled.one_way[j], generalised_least_squares_one_way(measured, j), rtol=1e-7, atol=1e-6)
    assert pooled.two_way == measured.two_way and pooled.one_way_std == measured.one_way_std


def test_pooling_with_the_pairs_margins_takes_noise_out_of_the_one_way_counts() -> None:
    rng = np.random.default_rng(22)
    latent = rng.normal(size=20_000)
    cells = np.stack([np.digitize(latent + rng.normal(size=20_000), np.linspace(-2, 2, size - 1))
                      for size in (2, 5, 9, 16)], 1)
    sizes, pairs = [2, 5, 9, 16], [(a, b) for a in range(4) for b in range(a + 1, 4)]
    exact = [np.bincount(cells[:, j], minlength=size) for j, size in enumerate(sizes)]
    raw_error = pooled_error = 0.0
    for seed in range(10):
        measured = measure_marginals([cells], sizes, pairs, 0.005, np.random.default_rng(seed))
        pooled = pooled_one_way(measured)
        raw_error += sum(float(((counts - truth) ** 2).sum()) for counts, truth in zip(measured.one_way, exact))
        pooled_error += sum(float(((counts - truth) ** 2).sum()) for counts, truth in zip(pooled.one_way, exact))
    assert pooled_error < 0.8 * raw_error


def test_a_release_without_pairs_has_nothing_to_pool() -> None:
    measured = measure_marginals([np.zeros((50, 2), dtype=np.int64)], [3, 4], [], 0.01, np.random.default_rng(23))
    assert pooled_one_way(measured) is measured


def test_pooling_is_refused_once_the_counts_are_shrunk_towards_a_public_table() -> None:
    public, private = two_years(2_000, 0.0, seed=24)
    measured = measure_marginals([private], [16, 12], [(0, 1)], 0.001, np.random.default_rng(25))
    with pytest.raises(ValueError, match="raw release"):
        pooled_one_way(public_prior(measured, public))


def test_a_public_year_like_the_private_one_takes_most_of_the_noise_out_of_the_marginals() -> None:
    public, private = two_years(30_000, 0.0, seed=10)
    measured = measure_marginals([private], [16, 12], [(0, 1)], 0.0002, np.random.default_rng(11))
    prior = public_prior(measured, public)
    exact = pair_counts(private, [16, 12], [(0, 1)])[0]
    assert distance_to(exact, prior.two_way[0]) < distance_to(exact, measured.two_way[0]) / 2.5
    exact_one = np.bincount(private[:, 0], minlength=16)
    assert distance_to(exact_one, prior.one_way[0]) < distance_to(exact_one, measured.one_way[0]) / 1.3
    assert prior.details()["shrunk_towards_public_table"] and prior.rho == measured.rho


def test_a_public_year_unlike_the_private_one_leaves_the_measurements_nearly_as_they_are() -> None:
    public, private = two_years(30_000, 0.5, seed=12)  # half the private rows' first column moved
    measured = measure_marginals([private], [16, 12], [(0, 1)], 0.0002, np.random.default_rng(13))
    prior = public_prior(measured, public)
    exact = pair_counts(private, [16, 12], [(0, 1)])[0]
    assert distance_to(exact, prior.two_way[0]) < 1.1 * distance_to(exact, measured.two_way[0])
    assert distance_to(exact, prior.two_way[0]) < distance_to(exact, pair_counts(public, [16, 12], [(0, 1)])[0])


def test_a_value_new_in_the_private_year_keeps_its_measured_count() -> None:
    public, private = two_years(30_000, 0.0, seed=14)
    public = public[public[:, 0] != 3]  # value 3 (about 1,800 private rows) is absent from the public year
    measured = measure_marginals([private], [16, 12], [(0, 1)], 0.0002, np.random.default_rng(15))
    prior = public_prior(measured, public)
    assert prior.one_way[0][3] == measured.one_way[0][3]
    assert prior.one_way[0][3] > 1_000


def test_point_masses_enter_pairs_each_as_its_own_cell_and_the_empty_gaps_merge_away() -> None:
    rng = np.random.default_rng(18)
    shares = rng.dirichlet(np.full(20, 2.0))  # 20 values of unequal shares (1% to 12%), as a density per region
    atoms = rng.choice(20, 30_000, p=shares) * 2  # cells 0, 2, ..., 38: the point masses; odd cells: the gaps
    cells = np.column_stack([atoms, rng.integers(0, 3, 30_000)])
    measured = measure_marginals([cells], [39, 3], [(0, 1)], 1.0, np.random.default_rng(19), coarsen=[True, False])
    groups = measured.groups[0]
    held = np.flatnonzero(np.bincount(atoms, minlength=39))
    assert len(np.unique(groups[held])) == len(held)  # no two values share a cell
    assert groups.max() + 1 == len(held)  # and the gaps add none


def test_point_masses_stay_apart_when_one_gap_s_noise_passes_the_empty_threshold() -> None:
    """ACS's DENSITY without public data: 20 values in cells 0, 2, ..., 38, noise std 44, one gap at
    125 counts (2.8 stds): it must not turn the 20 values into runs of equal mass."""
    counts = np.zeros(39)
    counts[::2] = np.linspace(700.0, 2400.0, 20)
    counts[19] = 125.0
    groups = pair_groups([counts], [True], [False], empty=2.0 * 44.0)[0]
    assert len(np.unique(groups[::2])) == 20
    assert groups.max() + 1 == 20


def test_a_pair_not_measured_takes_the_public_dependence_and_the_private_margins() -> None:
    public, private = two_years(30_000, 0.0, seed=16)
    private = private.copy()
    private[:5_000, 1] = 11  # the private year has more of the last value of the second column
    cells = np.column_stack([private, private[:, 0] % 3])
    measured = measure_marginals([cells], [16, 12, 3], [(0, 2)], 1e6, np.random.default_rng(17))  # nearly exact
    public_cells = np.column_stack([public, public[:, 0] % 3])
    extended = with_public_pairs(measured, public_cells, [(0, 1)])
    assert extended.pairs == ((0, 2), (0, 1)) and extended.public_pairs == 1
    table = extended.two_way[1].reshape(16, 12)
    np.testing.assert_allclose(table.sum(1), measured.one_way[0], rtol=1e-3)  # private margins
    np.testing.assert_allclose(table.sum(0), measured.one_way[1], rtol=1e-3)
    public_table = pair_counts(public, [16, 12], [(0, 1)])[0].reshape(16, 12)
    diagonal = lambda t: float(sum(t[a, a % 12] for a in range(16)) / t.sum())  # noqa: E731  (b = a % 12 for 60%)
    assert abs(diagonal(table) - diagonal(public_table)) < 0.1
    details = extended.details()
    assert details["two_way_marginals"] == 1 and details["two_way_marginals_from_public_table"] == 1
    assert details["zcdp_rho"] == measured.rho


def test_a_public_pair_may_be_larger_than_a_measured_one_and_its_dependence_is_that_of_a_sample() -> None:
    rng = np.random.default_rng(20)
    code = rng.integers(0, 100, 20_000)
    cells = np.column_stack([code, code % 60, rng.integers(0, 2, 20_000)])  # a code and its category: 6,000 cells
    measured = measure_marginals([cells], [100, 60, 2], [(0, 2)], 0.01, np.random.default_rng(21))
    extended = with_public_pairs(measured, cells, [(0, 1)])
    assert 100 * 60 > MAX_PAIR_CELLS and extended.coarse == (False, False)
    assert extended.noise_of(0) == measured.two_way_std * 200  # the measured pair keeps its noise
    assert 0.7 < noisy_dependence(extended)[1] < 1.0
    independent = with_public_pairs(measured, np.column_stack([code, rng.integers(0, 60, 20_000), cells[:, 2]]),
                                    [(0, 1)])
    assert abs(noisy_dependence(independent)[1]) < 0.02  # a sample's chance dependence is not taken for one


def test_counts_shrunk_towards_a_like_public_year_carry_less_noise_in_the_dependence_score() -> None:
    public, private = two_years(30_000, 0.0, seed=22)
    measured = measure_marginals([private], [16, 12], [(0, 1)], 0.0002, np.random.default_rng(23))
    prior = public_prior(measured, public)
    assert prior.noise_of(0) < measured.noise_of(0) / 2
    exact = pair_counts(private, [16, 12], [(0, 1)])[0].reshape(16, 12) / len(private)
    truth = 0.5 * np.abs(exact - np.outer(exact.sum(1), exact.sum(0))).sum()
    assert abs(noisy_dependence(prior)[0] - truth) < abs(noisy_dependence(measured)[0] - truth)


def test_public_pairs_must_be_new() -> None:
    cells = np.zeros((10, 2), dtype=np.int64)
    measured = measure_marginals([cells], [2, 2], [(0, 1)], 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="new pairs"):
        with_public_pairs(measured, cells, [(0, 1)])


def measured_with_noise(rows: int, two_way_std: float) -> MarginalMeasurements:
    """Measurements of ``rows`` rows (exact totals) whose pairs carry noise of ``two_way_std``."""
    counts = np.array([rows / 2, rows / 2])
    return MarginalMeasurements((2, 2), (counts, counts), ((0, 1),), (np.full(4, rows / 4),), 1.0, two_way_std,
                                1.0, (np.arange(2), np.arange(2)))


def test_relative_noise_is_a_pair_cells_noise_std_over_the_noisy_row_total() -> None:
    assert measured_with_noise(30_000, 60.0).relative_noise == pytest.approx(0.002)


@pytest.mark.parametrize(("relative_noise", "share"), [(MARGINAL_NOISE_REF / 10, 1.0), (MARGINAL_NOISE_REF, 1.0),
                                                       (MARGINAL_NOISE_REF * 1.6, 0.625),
                                                       (MARGINAL_NOISE_REF * 2, 0.5), (MARGINAL_NOISE_REF * 3, 1 / 3),
                                                       (MARGINAL_NOISE_REF * 10, 1 / 3)])
def test_the_marginal_fit_slows_down_in_proportion_to_the_noise_to_a_third_of_its_rate(relative_noise: float,
                                                                                 share: float) -> None:
    measured = measured_with_noise(10_000, relative_noise * 10_000)
    assert marginal_learning_rate(0.006, measured) == pytest.approx(0.006 * share)


@pytest.mark.parametrize(("relative_noise", "steps"), [(MARGINAL_NOISE_REF, 5000), (MARGINAL_NOISE_REF * 1.125, 4444),
                                                       (MARGINAL_NOISE_REF * 2, 4000), (MARGINAL_NOISE_REF * 10, 4000)])
def test_the_marginal_fit_takes_fewer_steps_for_noisier_marginals_down_to_four_fifths(relative_noise: float,
                                                                                    steps: int) -> None:
    assert marginal_step_count(5000, measured_with_noise(10_000, relative_noise * 10_000)) == steps


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_marginals_composed_with_dp_sgd_match_opacus_with_both_mechanisms_in_its_history(accountant: str) -> None:
    marginal_z, sigma, q, steps, delta = 6.0, 1.1, 0.02, 400, 1e-5
    ours = compute_epsilon(sigma, q, steps, delta, accountant, extra_gaussian=marginal_z)
    independent = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    independent.history = [(sigma, q, steps), (marginal_z, 1.0, 1)]
    with np.errstate(divide="ignore"):
        expected = (independent.get_epsilon(delta=delta) if accountant == "prv"
                    else independent.get_epsilon(delta=delta, alphas=list(RDP_ORDERS)))
    assert ours == pytest.approx(expected, rel=1e-6 if accountant == "rdp" else 1e-3)
    assert ours > compute_epsilon(sigma, q, steps, delta, accountant)  # the marginals cost something


def test_calibration_with_the_marginals_meets_the_joint_target() -> None:
    marginal_z = 1.0 / math.sqrt(2 * 0.3 * zcdp_budget(1.0, 1e-5))
    sigma = calibrate_noise_multiplier(1.0, 1e-5, 0.03, 300, extra_gaussian=marginal_z)
    assert compute_epsilon(sigma, 0.03, 300, 1e-5, extra_gaussian=marginal_z) <= 1.0
    assert compute_epsilon(sigma * 0.99, 0.03, 300, 1e-5, extra_gaussian=marginal_z) > 1.0
    # Composing beats adding up: alone, the same steps would have cost well under the remainder.
    assert sigma < calibrate_noise_multiplier(0.5, 1e-5, 0.03, 300)


def test_calibration_refuses_marginals_that_spend_the_whole_target() -> None:
    with pytest.raises(ValueError, match="already spent"):
        calibrate_noise_multiplier(0.1, 1e-5, 0.03, 300, extra_gaussian=0.5)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_generator_learns_a_two_way_dependence_from_the_dp_marginals(precision: str) -> None:
    from tabsynth import Synthesizer
    rng = np.random.default_rng(0)
    a = rng.choice(["x", "y", "z"], size=3000)
    b = np.where(rng.random(3000) < 0.9, a, rng.choice(["x", "y", "z"], size=3000))
    frame = pd.DataFrame({"a": a, "b": b}).astype(str)
    levels = ("x", "y", "z")
    schema = Schema((CategoricalColumn("a", categories=levels), CategoricalColumn("b", categories=levels)))
    fast = dict(steps=2, batch_size=256, generator_hidden=(32,), discriminator_hidden=(8,), noise_dim=8, seed=0,
                fit_precision=precision)
    without = Synthesizer(**fast, marginal_weight=0.0, marginal_steps=0, conditioning=False).fit(frame, epsilon=4.0,
                                                                                      schema=schema)
    learned = Synthesizer(**fast, marginal_steps=300).fit(frame, epsilon=4.0, schema=schema)

    def agreement(synth: Synthesizer) -> float:
        sample = synth.sample(3000, seed=1)
        return float((sample["a"] == sample["b"]).mean())

    assert agreement(learned) > 0.8 > agreement(without)  # the table agrees on 93% of rows, independence on 33%


@pytest.mark.parametrize("setting, value", [("marginal_fraction", 0.995), ("marginal_fraction", -0.1),
                                            ("marginal_pairs", -1), ("marginal_pairs", 2.5),
                                            ("marginal_steps", -5), ("marginal_weight", float("nan")),
                                            ("marginal_lr", 0.0), ("fit_precision", "float16")])
def test_bad_marginal_settings_are_refused_by_name(setting: str, value: object) -> None:
    from tabsynth import Synthesizer
    with pytest.raises(ValueError, match=setting):
        Synthesizer(**{setting: value})


def test_the_marginal_loss_estimates_each_pair_as_the_mean_outer_product_of_cell_probabilities() -> None:
    encoder = Encoder(mixed_schema())
    sizes = [spec.size for spec in encoder.cell_specs]
    pairs = [(0, 2), (0, 4), (1, 3), (2, 5), (3, 4)]
    zeros = MarginalMeasurements(tuple(sizes), tuple(np.zeros(s) for s in sizes), tuple(pairs),
                                 tuple(np.zeros(sizes[a] * sizes[b]) for a, b in pairs), 0.0, 0.0, 1.0, ungrouped(sizes))
    heads, specs = raw_specs(encoder)
    loss = MarginalLoss(specs, zeros, "cpu")
    raw = torch.randn(64, heads.raw_dim, generator=torch.Generator().manual_seed(0))
    probs = SoftCells(specs)(raw)
    expected = torch.cat([p.mean(0) for p in probs] + [(probs[a].t() @ probs[b] / 64).ravel() for a, b in pairs])
    torch.testing.assert_close(loss.estimates(raw), expected)


def mixed_pair_loss() -> tuple[MarginalLoss, OutputHeads, tuple[CellSpec, ...], list[tuple[int, int]]]:
    """The marginal loss of ``mixed_schema`` with five pairs and random targets, its heads, specs and pairs."""
    encoder = Encoder(mixed_schema())
    sizes = [spec.size for spec in encoder.cell_specs]
    pairs = [(0, 2), (0, 4), (1, 3), (2, 5), (3, 4)]
    rng = np.random.default_rng(0)
    targets = MarginalMeasurements(tuple(sizes), tuple(rng.random(s) for s in sizes), tuple(pairs),
                                   tuple(rng.random(sizes[a] * sizes[b]) for a, b in pairs), 0.0, 0.0, 1.0,
                                   ungrouped(sizes))
    heads, specs = raw_specs(encoder)
    loss = MarginalLoss(specs, targets, "cpu")
    return loss, heads, specs, pairs


def test_the_marginal_losss_gradient_is_that_of_the_plain_outer_products() -> None:
    # The pairs' Gram matrix has a hand-written backward (one product, buffers reused across steps):
    # its gradient must be autograd's of the plain estimates, step after step.
    loss, heads, specs, pairs = mixed_pair_loss()
    for seed in range(3):
        raw = torch.randn(64, heads.raw_dim, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        weights = torch.randn(len(loss.targets), generator=torch.Generator().manual_seed(10 + seed))
        (ours,) = torch.autograd.grad((loss.estimates(raw) * weights).sum(), raw)
        probs = SoftCells(specs)(raw)
        plain = torch.cat([p.mean(0) for p in probs] + [(probs[a].t() @ probs[b] / 64).ravel() for a, b in pairs])
        (expected,) = torch.autograd.grad((plain * weights).sum(), raw)
        torch.testing.assert_close(ours, expected)


def test_the_gathered_gram_cells_have_autograds_gradient_diagonal_and_both_triangles_included() -> None:
    rows = torch.randn(2, 7, 11, dtype=torch.float64, requires_grad=True)  # two parts, each its own product
    cells = torch.tensor([0, 3, 8, 15, 22, 24, 48])  # (0,0) and (3,3) on the diagonal; (1,1)=8; (3,1) and (1,3)
    mirrored = cells % 7 * 7 + cells // 7
    workspace = _GramWorkspace(7)
    weights = torch.randn(2, len(cells), dtype=torch.float64)
    for _ in range(2):  # the reused buffer is back to zeros after each backward
        (ours,) = torch.autograd.grad((_GatheredGram.apply(rows, cells, mirrored, workspace) * weights).sum(), rows)
        plain = (rows @ rows.transpose(1, 2)).reshape(2, -1)[:, cells]
        (expected,) = torch.autograd.grad((plain * weights).sum(), rows)
        torch.testing.assert_close(ours, expected)
    assert not workspace.buffer("gradient", torch.float64, rows.device, 2).any()


def ungrouped(sizes: list[int]) -> tuple[np.ndarray, ...]:
    return tuple(np.arange(s) for s in sizes)


def test_wide_marginals_enter_pairs_as_runs_of_about_equal_mass() -> None:
    uniform, heavy = np.ones(100), np.ones(100)
    heavy[40] = 100.0  # half the mass in one cell
    groups = pair_groups([uniform, heavy, np.ones(41), np.ones(40), np.ones(5)],
                         coarsen=[True, True, True, False, True], missing=[False, False, True, False, False],
                         resolution=10)
    assert groups[0].tolist() == [i // 10 for i in range(100)]  # equal mass: runs of 10 neighbours
    assert groups[1][40] not in np.delete(groups[1], 40)  # a heavy cell is a run of its own
    assert groups[1].tolist() == sorted(groups[1].tolist()) and groups[1].max() <= 9
    assert groups[2][-1] == groups[2][:-1].max() + 1 == 10  # the missing cell stays apart, last
    assert groups[3].tolist() == list(range(40))  # not to be coarsened
    assert groups[4].tolist() == list(range(5))  # narrow enough already


def test_a_wide_category_merges_its_light_categories_by_rank_of_mass() -> None:
    zipf = 1000.0 / np.arange(1, 43)  # 42 categories (a country column): a few heavy, a long light tail
    shuffled = np.random.default_rng(0).permutation(42)
    counts = np.append(zipf[shuffled], 7.0)  # and a missing cell
    groups = pair_groups([counts, np.ones(12)], coarsen=[False, False], missing=[True, False], resolution=10,
                         by_mass=[True, True])[0]
    assert groups[-1] == groups[:-1].max() + 1 <= 10  # at most 10 groups of categories, the missing cell apart, last
    heaviest = shuffled.argsort()[:2]  # the two heaviest categories: each more than a tenth of the mass
    assert all(np.sum(groups[:-1] == groups[k]) == 1 for k in heaviest)
    assert np.bincount(groups[:-1]).max() > 5  # the light tail shares groups
    mass = np.bincount(groups[:-1], weights=counts[:-1])
    assert mass.min() > 0.5 * counts[:-1].sum() / 10  # each group holds about a tenth of the mass or more
    narrow = pair_groups([counts, np.ones(12)], coarsen=[False, False], missing=[True, False], resolution=12,
                         by_mass=[True, True])[1]
    assert narrow.tolist() == list(range(12))  # no more categories than the resolution: kept apart


def test_a_pair_too_large_even_coarse_is_chosen_when_it_fits_with_categories_merged() -> None:
    sizes, ordered, missing = [300, 74, 3], [False, True, False], [False] * 3
    coarse = pair_size_bounds(sizes, ordered, missing)
    merged = pair_size_bounds(sizes, ordered, missing, by_mass=[True, False, True])
    assert coarse == [300, PAIR_RESOLUTION, 3] and merged == [PAIR_RESOLUTION, PAIR_RESOLUTION, 3]
    assert choose_pairs(sizes, None, coarse_sizes=coarse) == [(0, 2), (1, 2)]  # 300 x 20 cells: too many
    assert choose_pairs(sizes, None, coarse_sizes=coarse, merged_sizes=merged) == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ValueError, match="without a public table"):
        choose_pairs(sizes, None, np.zeros((5, 3), dtype=np.int64), coarse, merged_sizes=merged)


def test_only_a_pair_too_large_even_coarse_is_measured_with_categories_merged() -> None:
    rng = np.random.default_rng(0)
    n = 40_000
    industry = np.minimum(rng.zipf(1.3, n) - 1, 299)  # 300 categories, most of them rare
    age = rng.integers(0, 74, n)
    cells = np.column_stack([industry, age, rng.integers(0, 13, n)])
    measured = measure_marginals([cells], [300, 74, 13], [(0, 1), (0, 2), (1, 2)], 1e12, rng,
                                 coarsen=[False] * 3, missing=[False] * 3, ordered=[False, True, False],
                                 unordered=[True, False, True])
    assert measured.merged == (True, False, False)  # 300 x 20 coarse cells; the others fit without merging
    assert measured.coarse == (True, False, False)  # 300 x 13 and 74 x 13 cells fit as they are
    rows, columns = measured.pair_axes(0)
    assert rows.max() + 1 <= PAIR_RESOLUTION and columns.max() + 1 == PAIR_RESOLUTION
    assert len(np.unique(measured.pair_axes(1)[0])) == 300  # every category apart where the pair fits
    expected = np.bincount(rows[cells[:, 0]] * (columns.max() + 1) + columns[cells[:, 1]],
                           minlength=(rows.max() + 1) * (columns.max() + 1))
    np.testing.assert_allclose(measured.two_way[0], expected, atol=1e-3)
    assert measured.details()["two_way_marginals_with_merged_categories"] == 1


def test_two_way_marginals_are_counted_over_the_groups_of_the_noisy_one_way_counts() -> None:
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 100, 5000), rng.integers(0, 3, 5000)])
    measured = measure_marginals([cells], [100, 3], [(0, 1)], 1e12, rng, coarsen=[True, True], missing=[False, False])
    assert measured.pair_sizes == (PAIR_RESOLUTION, 3)
    assert measured.one_way[0].shape == (100,)  # the one-way marginal keeps every cell
    rows = measured.groups[0][cells[:, 0]]
    expected = np.bincount(rows * 3 + cells[:, 1], minlength=PAIR_RESOLUTION * 3)
    np.testing.assert_allclose(measured.two_way[0], expected, atol=1e-3)
    assert np.bincount(rows).min() > 0.6 * 5000 / PAIR_RESOLUTION  # runs of about equal mass


def test_the_marginal_loss_estimates_grouped_pairs_from_the_summed_cell_probabilities() -> None:
    encoder = Encoder(mixed_schema())
    specs = encoder.cell_specs
    sizes = [spec.size for spec in specs]
    groups = pair_groups([np.ones(size) for size in sizes], [spec.kind != "softmax" for spec in specs],
                         [spec.missing is not None for spec in specs], resolution=2)
    pair_sizes = [int(g.max()) + 1 for g in groups]
    assert pair_sizes != sizes  # the mixed schema has marginals of more than two cells to coarsen
    pairs = [(a, b) for a in range(len(sizes)) for b in range(a + 1, len(sizes))]
    zeros = MarginalMeasurements(tuple(sizes), tuple(np.zeros(s) for s in sizes), tuple(pairs),
                                 tuple(np.zeros(pair_sizes[a] * pair_sizes[b]) for a, b in pairs), 0.0, 0.0, 1.0,
                                 groups)
    heads, specs = raw_specs(encoder)
    loss = MarginalLoss(specs, zeros, "cpu")
    raw = torch.randn(64, heads.raw_dim, generator=torch.Generator().manual_seed(0))
    probs = SoftCells(specs)(raw)
    folded = [torch.zeros(64, pair_sizes[j]).index_add_(1, torch.as_tensor(g), p) for j, (g, p) in enumerate(zip(groups, probs))]
    expected = torch.cat([p.mean(0) for p in probs] + [(folded[a].t() @ folded[b] / 64).ravel() for a, b in pairs])
    torch.testing.assert_close(loss.estimates(raw), expected)


def test_numbers_have_fine_one_way_cells_and_enter_pairs_coarsened() -> None:
    from tabsynth import Synthesizer
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.lognormal(0, 1, 2000), "y": rng.choice(["a", "b"], 2000)}).astype({"y": str})
    schema = Schema((ContinuousColumn("x", lower=0.0, upper=100.0), CategoricalColumn("y", categories=("a", "b"))))
    encoder = Encoder(schema)
    assert encoder.cell_specs[0].size == NUMBER_CELLS  # most of x lies in the first cells: fine cells see its shape
    fast = dict(steps=1, batch_size=256, generator_hidden=(16,), discriminator_hidden=(8,), noise_dim=4,
                marginal_steps=1, seed=0)
    marginals = Synthesizer(**fast).fit(frame, epsilon=2.0, schema=schema).privacy_report()["marginals"]
    assert marginals["two_way_marginals"] == 1 and marginals["two_way_resolution"] == PAIR_RESOLUTION
    assert marginals["two_way_cells"] <= PAIR_RESOLUTION * 2 < NUMBER_CELLS * 2  # x enters the pair coarsened


def test_a_pair_too_large_at_full_resolution_is_chosen_when_it_fits_coarse() -> None:
    sizes, coarse_sizes = [74, 99, 3], [PAIR_RESOLUTION, PAIR_RESOLUTION, 3]
    assert choose_pairs(sizes, max_pairs=100) == [(0, 2), (1, 2)]
    assert choose_pairs(sizes, max_pairs=100, coarse_sizes=coarse_sizes) == [(0, 1), (0, 2), (1, 2)]


def test_a_pair_too_large_at_full_resolution_is_measured_over_runs_of_both_ordered_marginals() -> None:
    rng = np.random.default_rng(0)
    age = rng.integers(0, 74, 20_000)
    cells = np.column_stack([age, np.minimum(age + rng.integers(0, 26, 20_000), 98), rng.integers(0, 3, 20_000)])
    measured = measure_marginals([cells], [74, 99, 3], [(0, 1), (0, 2)], 1e12, rng,
                                 coarsen=[False, False, False], missing=[False] * 3, ordered=[True, True, False])
    assert measured.coarse == (True, False)
    assert measured.pair_sizes == (74, 99, 3)  # the other pair keeps every value of age
    rows, columns = measured.pair_axes(0)
    assert rows.max() + 1 == columns.max() + 1 == PAIR_RESOLUTION
    expected = np.bincount(rows[cells[:, 0]] * PAIR_RESOLUTION + columns[cells[:, 1]], minlength=PAIR_RESOLUTION**2)
    np.testing.assert_allclose(measured.two_way[0], expected, atol=1e-3)
    assert measured.details()["coarse_two_way_marginals"] == 1


def estimates_over_pair_axes(probs: list[torch.Tensor], measured: MarginalMeasurements) -> torch.Tensor:
    """The one-way cells' and pairs' probabilities, each pair over its axes as measured, computed directly."""
    def folded(m: int) -> torch.Tensor:
        (a, b), (rows, columns) = measured.pairs[m], measured.pair_axes(m)
        grouped = [torch.zeros(len(probs[j]), int(g.max()) + 1).index_add_(1, torch.as_tensor(g), probs[j])
                   for j, g in ((a, rows), (b, columns))]
        return (grouped[0].t() @ grouped[1] / len(probs[a])).ravel()

    return torch.cat([p.mean(0) for p in probs] + [folded(m) for m in range(len(measured.pairs))])


def test_the_marginal_loss_estimates_a_coarse_pair_over_its_coarse_groups() -> None:
    wide = tuple(f"k{i}" for i in range(60))  # 74 x 60 cells: too many, and a category cannot be coarsened
    encoder = Encoder(Schema((IntegerColumn("age", lower=0, upper=73), IntegerColumn("hours", lower=0, upper=98),
                              CategoricalColumn("c", categories=("a", "b", "c")), CategoricalColumn("k", categories=wide))))
    specs = encoder.cell_specs
    sizes = [spec.size for spec in specs]
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 74, 5000), rng.integers(0, 99, 5000), rng.integers(0, 3, 5000),
                             rng.integers(0, 60, 5000)])
    pairs = [(0, 1), (0, 2), (0, 3)]
    measured = measure_marginals([cells], sizes, pairs, 1.0, rng, coarsen=[False] * 4,
                                 missing=[False] * 4, ordered=[True, True, False, False])
    assert measured.coarse == (True, False, True)
    heads, specs = raw_specs(encoder)
    loss = MarginalLoss(specs, measured, "cpu")
    # One coarse axis each for age and hours; the category enters its coarse pair on its own axis.
    # Hours enters no pair at full resolution, so its fine axis is left out of the Gram matrix.
    assert loss.pair_width == sizes[0] + sizes[2] + sizes[3] + 2 * PAIR_RESOLUTION
    raw = torch.randn(64, heads.raw_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss.estimates(raw), estimates_over_pair_axes(SoftCells(specs)(raw), measured))


def test_the_marginal_loss_reads_a_number_that_enters_pairs_only_coarse_from_its_own_cells() -> None:
    # Hours enters one pair, coarse (99 x 40 cells), age one at full resolution (74 x 40): hours'
    # fine axis is left out and its coarse axis comes after the category's, so the pairs' axes hold
    # every cell once, but not in the cells' order.
    labels = tuple(f"k{i}" for i in range(40))
    encoder = Encoder(Schema((IntegerColumn("age", lower=0, upper=73), IntegerColumn("hours", lower=0, upper=98),
                              CategoricalColumn("k", categories=labels))))
    specs = encoder.cell_specs
    sizes = [spec.size for spec in specs]
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, size, 5000) for size in sizes])
    measured = measure_marginals([cells], sizes, [(0, 2), (1, 2)], 1.0, rng, coarsen=[False] * 3,
                                 missing=[False] * 3, ordered=[True, True, False])
    assert measured.coarse == (False, True)
    heads, specs = raw_specs(encoder)
    loss = MarginalLoss(specs, measured, "cpu")
    assert loss.pair_width == sizes[0] + sizes[2] + PAIR_RESOLUTION
    raw = torch.randn(64, heads.raw_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss.estimates(raw), estimates_over_pair_axes(SoftCells(specs)(raw), measured))


def test_the_marginal_loss_estimates_a_merged_pair_over_its_merged_groups() -> None:
    industries = tuple(f"i{i}" for i in range(300))
    encoder = Encoder(Schema((IntegerColumn("age", lower=0, upper=73), CategoricalColumn("ind", categories=industries),
                              CategoricalColumn("c", categories=("a", "b", "c")))))
    specs = encoder.cell_specs
    sizes = [spec.size for spec in specs]
    rng = np.random.default_rng(0)
    cells = np.column_stack([rng.integers(0, 74, 5000), np.minimum(rng.zipf(1.3, 5000) - 1, 299),
                             rng.integers(0, 3, 5000)])
    pairs = [(0, 1), (1, 2)]
    measured = measure_marginals([cells], sizes, pairs, 1.0, rng, coarsen=[False] * 3, missing=[False] * 3,
                                 ordered=[True, False, False], unordered=[False, True, True])
    assert measured.merged == (True, False)
    heads, specs = raw_specs(encoder)
    loss = MarginalLoss(specs, measured, "cpu")
    raw = torch.randn(64, heads.raw_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss.estimates(raw), estimates_over_pair_axes(SoftCells(specs)(raw), measured))


def one_category_loss(probabilities: tuple[float, ...]) -> MarginalLoss:
    """The marginal loss of a single categorical column whose measured shares are ``probabilities``."""
    schema = Schema((CategoricalColumn("c", categories=tuple("abcdefgh"[:len(probabilities)])),))
    specs = raw_specs(Encoder(schema))[1]
    target = np.asarray(probabilities) * 1000.0
    measured = MarginalMeasurements((len(target),), (target,), (), (), 0.0, 0.0, 1.0, ungrouped([len(target)]))
    return MarginalLoss(specs, measured, "cpu")


def test_the_marginal_loss_adds_the_weighted_squared_error_to_the_l1_error() -> None:
    loss = one_category_loss((0.5, 0.3, 0.2))
    rows = torch.log(torch.tensor([[0.2, 0.2, 0.6]])).repeat(10, 1)  # every row the same: both halves agree
    error = torch.tensor([0.2 - 0.5, 0.2 - 0.3, 0.6 - 0.2])
    expected = error.abs().sum() + SQUARED_WEIGHT * (error**2).sum()
    torch.testing.assert_close(loss(rows), expected)


def test_the_marginal_loss_of_an_odd_batch_leaves_its_last_row_out_of_both_halves() -> None:
    loss, heads, _, _ = mixed_pair_loss()
    rows = torch.randn(11, heads.raw_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss(rows), loss(rows[:10]))
    assert not torch.allclose(loss(rows), loss(rows[1:]))


def test_the_marginal_loss_does_not_reward_soft_rows_over_sharp_rows_of_the_same_marginal() -> None:
    # Its squared term multiplies two independent half-batches' errors, whose mean is the squared error of
    # the generator's marginal (0 here); one batch's square would add the variance of sharp rows' estimate.
    target = (0.5, 0.3, 0.2)
    loss = one_category_loss(target)
    assert float(loss(torch.log(torch.tensor([target])).repeat(1000, 1))) == pytest.approx(0.0, abs=1e-6)
    draws = torch.Generator().manual_seed(0)
    sharp = [loss(30.0 * torch.nn.functional.one_hot(torch.multinomial(torch.tensor(target), 1000, True,
                                                                       generator=draws), 3).float())
             for _ in range(400)]
    # The L1 term's mean for sharp rows: E|share - p| of a 1000-row share, sqrt(2 / pi) of its std, per cell.
    l1_part = sum(math.sqrt(2 / math.pi * p * (1 - p) / 1000) for p in target)
    squared_variance = SQUARED_WEIGHT * sum(p * (1 - p) for p in target) / 500  # what one batch's square would add
    assert abs(float(torch.stack(sharp).mean()) - l1_part) < squared_variance / 8
