"""discover_schema: DP domain discovery keeps the bulk, drops rare values and outliers, leaks nothing to the ledger."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import norm

from tabsynth import (
    BooleanColumn,
    CategoricalColumn,
    ContinuousColumn,
    DatetimeColumn,
    DurationColumn,
    Encoder,
    GeoPointColumn,
    IntegerColumn,
    Schema,
    SchemaError,
)
from tabsynth.privacy import DiscoveryWarning, PrivacyLedger, discover_schema, discover_schema_composed
from tabsynth.privacy.discovery import (GEO_STEPS, TAIL_KNOT_SHARE, _geo_step, _numeric_edges, _range_of,
                                       _tail_extended, bounded_knots, knot_levels,
                                       discover_new_categories_composed)
from tabsynth.privacy.mechanisms import CountNoise, gaussian_threshold, histogram_threshold

EPS_PER_COLUMN = 0.1
DELTA = 1e-6
RARE = "Zanzibar-unique-city"
EXTREME = 1e12


def people(n: int = 5000, seed: int = 0) -> pd.DataFrame:
    """A private table: incomes around 50,000 with one absurd outlier, cities with one unique value."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000, 10_000, size=n).clip(1_000)
    income[0] = EXTREME
    city = rng.choice(np.array(["Lyon", "Paris"]), size=n, p=[0.4, 0.6]).astype(object)
    city[1] = RARE
    return pd.DataFrame({"income": income, "city": pd.Series(city, dtype="str")})


def discover(frame: pd.DataFrame, seed: int = 0, **kwargs) -> tuple[Schema, PrivacyLedger]:
    """Discover every column at EPS_PER_COLUMN each (booleans are free), on a fresh roomy ledger."""
    paid = sum(not pd.api.types.is_bool_dtype(frame[c].dtype) for c in kwargs.get("columns", frame.columns))
    ledger = PrivacyLedger(100.0, 1e-3)
    schema = discover_schema(frame, ledger, EPS_PER_COLUMN * paid, DELTA, np.random.default_rng(seed), **kwargs)
    return schema, ledger


def ages_beside_a_tail_at_70(tail_rows: int) -> pd.DataFrame:
    """20,000 ages in [30, 63] and ``tail_rows`` more at 70, beyond two empty years."""
    rng = np.random.default_rng(0)
    ages = np.concatenate([rng.integers(30, 64, 20_000), np.full(tail_rows, 70)])
    return pd.DataFrame({"age": pd.array(ages, dtype="int64")})


def test_category_held_by_one_record_is_dropped_common_one_kept() -> None:
    schema, _ = discover(people())
    city = schema["city"]
    assert isinstance(city, CategoricalColumn)
    assert RARE not in city.categories
    assert {"Lyon", "Paris"} <= set(city.categories)
    assert city.catch_all == "<other>"


@pytest.mark.parametrize(("value", "conversion"), [
    (datetime.date(2020, 1, 2), r"date values.*pd.to_datetime\(df\[column\]\)"),
    (decimal.Decimal("1.5"), r"Decimal values.*astype\(float\)"),
    (datetime.timedelta(hours=1), r"timedelta values.*pd.to_timedelta"),
    (datetime.time(8, 30), r"time values.*astype\(str\)"),
])
def test_a_released_category_that_is_no_label_refuses_the_column_with_the_conversion(value: object,
                                                                                     conversion: str) -> None:
    frame = pd.DataFrame({"when": pd.Series([value] * 2_000, dtype=object)})
    with pytest.raises(SchemaError, match=rf"column 'when': DP discovery released categories that are Python "
                                          rf"{conversion}"):
        discover(frame)


@pytest.mark.parametrize("odd", [datetime.date(2020, 1, 2), decimal.Decimal("1.5"), ["a", "list"], b"bytes",
                                 decimal.Decimal("sNaN")])
def test_one_row_of_no_label_is_folded_into_the_catch_all_not_refused(odd: object) -> None:
    # A refusal would tell of that row; unreleased, it is one more value outside the categories.
    labels = pd.Series(["a", "b"] * 1_000, dtype=object)
    for column in (labels, pd.Series([None] * 2_000, dtype=object)):
        with_odd = pd.DataFrame({"c": pd.concat([pd.Series([odd], dtype=object), column[1:]], ignore_index=True)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DiscoveryWarning)
            c = discover(with_odd)[0]["c"]
        assert isinstance(c, CategoricalColumn) and c.catch_all == "<other>"
        assert all(isinstance(level, str) for level in c.levels)


def test_extreme_value_does_not_set_the_upper_bound() -> None:
    frame = people()
    schema, _ = discover(frame)
    income = schema["income"]
    true_p995 = float(np.quantile(frame["income"].iloc[1:], 0.995))
    assert isinstance(income, ContinuousColumn)
    assert 50_000 < income.upper <= 2 * true_p995
    assert income.lower < 50_000


def test_a_sparse_tail_next_to_the_bulk_widens_the_range() -> None:
    # 150 rows at 70 beside 20,000 in [30, 63]: too few for the threshold that guards against empty
    # regions anywhere, enough for the lower one that grows the range bin by bin outwards.
    uppers = [discover(ages_beside_a_tail_at_70(150), seed=seed)[0]["age"].upper for seed in range(10)]
    assert sum(upper >= 70 for upper in uppers) >= 9 and max(uppers) <= 100


def test_a_smooth_columns_knots_are_distinct_and_near_its_quantiles() -> None:
    # Distinct knots: a repeated one would read as a point mass. 15 inner knots and a tail knot at each
    # end (17 knots by default), each at 0.05 of its level.
    frame = people()
    income = discover(frame)[0]["income"]
    inner = np.array(income.knots[1:-1])
    levels = knot_levels(17)
    assert len(inner) == len(levels) == 17
    ranks = np.searchsorted(np.sort(frame["income"]), inner) / len(frame)
    assert len(np.unique(income.knots)) == len(income.knots)
    assert np.abs(ranks - levels).max() < 0.05


def test_knot_levels_add_a_tail_level_at_each_end_where_it_is_finer() -> None:
    assert np.allclose(knot_levels(17), [TAIL_KNOT_SHARE, *np.linspace(0, 1, 17)[1:-1], 1 - TAIL_KNOT_SHARE])
    assert np.allclose(knot_levels(129), np.linspace(0, 1, 129)[1:-1])


def test_bounded_knots_keep_a_tail_knot_inside_an_outer_segment_longer_than_the_next() -> None:
    inner = np.array([-0.5, 0.0, 5.0, 7.0, 9.0, 10.0])  # at knot_levels(6): a tail, 4 quantiles, a tail
    assert bounded_knots(-20.0, 30.0, inner, 6).tolist() == [-20.0, -0.5, 0.0, 5.0, 7.0, 9.0, 10.0, 30.0]


def test_bounded_knots_drop_a_tail_knot_where_the_outer_segment_is_no_longer_than_the_next() -> None:
    # [-1, 0] is shorter than [0, 5]; [9, 11] is as long as [7, 9].
    inner = np.array([-0.5, 0.0, 5.0, 7.0, 9.0, 10.0])
    assert bounded_knots(-1.0, 11.0, inner, 6).tolist() == [-1.0, 0.0, 5.0, 7.0, 9.0, 11.0]


def test_bounded_knots_compare_each_outer_segment_with_its_own_neighbour() -> None:
    # Three knots, 0, 55 and 100: [0, 55] is longer than [55, 100], so the lower tail knot stays; [55,
    # 100] is not longer than [0, 55], so the upper one goes, whatever the other tail knot cuts.
    assert bounded_knots(0.0, 100.0, np.array([50.0, 55.0, 99.5]), 3).tolist() == [0.0, 50.0, 55.0, 100.0]


def test_knot_levels_without_tails_are_the_even_levels() -> None:  # datetimes' and durations' knots
    assert np.allclose(knot_levels(17, tails=False), np.linspace(0, 1, 17)[1:-1])


def test_bounded_knots_drop_a_tail_knot_that_repeats_its_bound_or_the_next_knot() -> None:
    # Repeated knots make a point mass; a tail quantile equal to its neighbour is no evidence of one.
    inner = np.array([0.0, 0.0, 5.0, 7.0, 9.0, 9.0])
    assert bounded_knots(0.0, 30.0, inner, 6).tolist() == [0.0, 0.0, 5.0, 7.0, 9.0, 30.0]
    assert bounded_knots(-20.0, 30.0, inner + 0.5, 6).tolist() == [-20.0, 0.5, 5.5, 7.5, 9.5, 30.0]


def test_a_numbers_outer_knot_segments_hold_its_tails_not_the_slack_past_them() -> None:
    # Temperatures in kelvin: the range histogram's quarter-octave bins near 290 are about 50 wide, so
    # the bounds lie far past the data. The knots next to the bounds are the DP quantiles at 1/64 and
    # 63/64: the outer segments hold that much of the data, not 1/16 spread over the slack. (At this
    # noise, empty bins' noise clipped at 0 sometimes puts them in the slack: medians of 10 releases.)
    temps = np.sort(np.random.default_rng(0).normal(290.0, 5.0, 20_000))
    releases = [discover(pd.DataFrame({"kelvin": temps}), seed=seed)[0]["kelvin"].knots for seed in range(10)]
    lower_shares = [np.searchsorted(temps, knots[1]) / len(temps) for knots in releases]
    upper_shares = [1 - np.searchsorted(temps, knots[-2]) / len(temps) for knots in releases]
    assert 0.001 < np.median(lower_shares) < 0.04 and 0.001 < np.median(upper_shares) < 0.04


@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_values_held_by_many_rows_become_point_masses_and_a_value_held_by_one_does_not(dtype: str) -> None:
    # Incomes spread over a range, 8% and 4% of them at round values (as surveys report them); 1.5% at
    # a value below the release's threshold (about 526 rows here: Laplace at epsilon 0.025, delta
    # 1e-6), and one row alone at a value that must not appear.
    rng = np.random.default_rng(0)
    lone, below_threshold = 123_457.0, 77_777.0
    incomes = np.concatenate([rng.uniform(1_000, 200_000, 17_299).round(), [50_000.0] * 1_600, [100_000.0] * 800,
                              [below_threshold] * 300, [lone]])
    frame = pd.DataFrame({"income": incomes.astype(dtype)})
    schema, ledger = discover(frame)
    knots = np.array(schema["income"].knots)
    assert (knots == 50_000).sum() >= 2 and (knots == 100_000).sum() >= 2
    assert (knots == below_threshold).sum() < 2  # above POINT_MASS_SHARE, but the noisy count decides
    assert lone not in knots and "123457" not in json.dumps(ledger.to_dict())
    encoder = Encoder(schema.with_dtypes(frame), on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))["income"].to_numpy(dtype=float)
    assert (decoded == 50_000).mean() == pytest.approx(0.08) and (decoded == 100_000).mean() == pytest.approx(0.04)


def test_a_column_of_few_float_values_decodes_to_those_values() -> None:
    # A density per region: five values, each a point mass, where quantile knots alone would spread
    # each over its knot cell.
    levels = np.array([1457.2, 2195.3, 2447.1, 2872.7, 3683.9])
    frame = pd.DataFrame({"density": np.random.default_rng(0).choice(levels, 20_000)})
    column = discover(frame)[0]["density"]
    assert all(list(column.knots).count(level) >= 2 for level in levels)
    encoder = Encoder(Schema((column,)).with_dtypes(frame), on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))["density"]
    np.testing.assert_array_equal(decoded.to_numpy(dtype=float), frame["density"].to_numpy(dtype=float))


@pytest.mark.parametrize("dtype", ["int64", "float64"])
def test_a_point_mass_at_zero_stays_one_and_decodes_to_exact_zeros(dtype: str) -> None:
    rng = np.random.default_rng(0)
    gains = np.where(rng.random(20_000) < 0.9, 0.0, rng.lognormal(8, 1, 20_000).round()).astype(dtype)
    frame = pd.DataFrame({"gain": gains})
    column = discover(frame)[0]["gain"]
    assert column.knots is not None and list(column.knots).count(0.0) >= 2
    encoder = Encoder(Schema((column,)).with_dtypes(frame), on_invalid="clip")
    assert (encoder.decode(encoder.encode(frame))["gain"] == 0).mean() == pytest.approx(0.9, abs=0.01)


def test_a_tail_too_thin_for_single_bins_grows_the_range_by_runs_of_bins() -> None:
    # 40 children per year of age beside 20,000 adults: below 10, no single-year bin clears the growth
    # threshold (46 rows at 0.05); runs of 4 or 8 of them do. Growing bin by bin, no seed got below 6.
    rng = np.random.default_rng(0)
    ages = np.concatenate([rng.integers(16, 64, 20_000), np.repeat(np.arange(16), 40)])
    frame = pd.DataFrame({"age": pd.array(ages, dtype="int64")})
    lowers = [discover(frame, seed=seed)[0]["age"].lower for seed in range(20)]
    assert sum(lower <= 5 for lower in lowers) >= 12 and min(lowers) >= 0  # growth never crosses 0


def test_growth_into_a_tail_stops_at_zero_for_negative_values_too() -> None:
    # The mirror of the children's ages: losses down to -63, thin near zero. A false step would make
    # a loss positive; growth may reach the bin of 0, never beyond.
    rng = np.random.default_rng(0)
    losses = -np.concatenate([rng.integers(16, 64, 20_000), np.repeat(np.arange(16), 40)])
    frame = pd.DataFrame({"loss": pd.array(losses, dtype="int64")})
    uppers = [discover(frame, seed=seed)[0]["loss"].upper for seed in range(20)]
    assert max(uppers) <= 0 and sum(upper >= -5 for upper in uppers) >= 12


def test_a_small_tables_density_reaching_zero_keeps_its_smallest_values() -> None:
    # 3,000 rows uniform on [0, 100] at 0.1 per column: towards 0 the quarter-octave bins hold ever
    # fewer rows, so growth stopped near 11 (median of 20 seeds) and 10% of the rows fell outside the
    # range. The tail that the last octaves' shape predicts takes the range further down.
    values = np.random.default_rng(0).uniform(0, 100, 3000)
    frame = pd.DataFrame({"x": values})
    columns = [discover(frame, seed=seed)[0]["x"] for seed in range(20)]
    clipped = [((values < column.lower) | (values > column.upper)).mean() for column in columns]
    assert np.median([column.lower for column in columns]) < 8.0 and np.mean(clipped) < 0.08
    assert min(column.lower for column in columns) >= 0.0


def test_a_negative_quantitys_range_extends_towards_zero_and_never_past_it() -> None:
    values = -np.random.default_rng(0).exponential(10, 3000)
    uppers = [discover(pd.DataFrame({"x": values}), seed=seed)[0]["x"].upper for seed in range(20)]
    assert np.median(uppers) > -0.7 and max(uppers) <= 0.0  # the median was -0.84


def test_a_dense_end_that_stops_sharply_is_not_extended_towards_zero() -> None:
    # The octave below 1,000 would hold a predicted 375 rows; the histogram shows none, so the end moves
    # by at most the share of that octave its noisy count bears out (one quarter-octave bin: 861 -> 724).
    values = np.random.default_rng(0).uniform(1000, 5000, 3000)
    lowers = [discover(pd.DataFrame({"x": values}), seed=seed)[0]["x"].lower for seed in range(20)]
    assert min(lowers) > 700 and np.median(lowers) >= 1000


def test_heavy_noise_does_not_walk_a_sharp_end_towards_zero() -> None:
    # 1,000 ages from 17 at 0.1 per column: each octave below is nearly all noise. Whole octaves pass
    # only on strong evidence; otherwise the end takes the share of one octave its count bears out.
    # Passing an octave on any count within two noise stds of its prediction, 3 of 30 seeds went below 10.
    ages = pd.DataFrame({"age": pd.array(np.random.default_rng(0).integers(17, 91, 1000), dtype="int64")})
    lowers = [discover(ages, seed=seed)[0]["age"].lower for seed in range(30)]
    assert min(lowers) >= 10


@pytest.mark.parametrize("integer", [True, False])
def test_exact_counts_beyond_growths_reach_extend_an_end_towards_zero_but_not_past_it(integer: bool) -> None:
    # Exact counts of 30 rows per integer 1..100 (or 3,000 even values in (0, 100]) under noise too large
    # for growth to reach their smallest values (it stopped at 13).
    edges = _numeric_edges(integer)
    zero = int(np.searchsorted(edges, 0.0))
    values = np.arange(1, 101).repeat(30).astype(float) if integer else np.linspace(0.001, 100, 3000)
    counts = np.histogram(values, edges)[0].astype(float)
    lower, upper, located = _range_of(counts, edges, CountNoise("gaussian", 40.0), 1, zero, zero)
    assert located and upper > 100 and (1.0 if integer else 0.0) <= lower <= 6.0


@pytest.mark.parametrize("integer", [True, False])
def test_a_strong_tail_extends_a_real_end_to_zero_and_an_integer_end_to_one(integer: bool) -> None:
    # Exact counts of a density x^-0.8 on (0, 64], whose octaves shrink slowly towards 0 (by 2^-0.2), so
    # the mass below the smallest magnitude still matters: a real range reaches 0; an integer one stops
    # at 1, its bin of 0 being a point mass of its own.
    edges = _numeric_edges(integer)
    zero = int(np.searchsorted(edges, 0.0))
    positive = np.clip(edges, 0.0, 64.0)
    noisy = 1e5 * np.diff(positive**0.2)
    low, high = int(np.searchsorted(edges, 16.0)), int(np.searchsorted(edges, 64.0))
    new_low, new_high = _tail_extended(noisy, edges, low, high, zero, CountNoise("gaussian", 1.0), 1)
    assert new_high == high and edges[new_low] == (1.0 if integer else 0.0)


def test_octave_counts_whose_sum_is_not_positive_extrapolate_nothing() -> None:
    # A reviewer's array: the second and third octaves inside the end sum to 0 (c2 + c3), which the
    # ratio (c1 + c2) / (c2 + c3) divided by.
    edges = _numeric_edges(False)
    zero = int(np.searchsorted(edges, 0.0))
    at = lambda value: int(np.searchsorted(edges, value))  # noqa: E731
    noisy = np.zeros(len(edges) - 1)
    noisy[at(1):at(2)], noisy[at(2):at(4)] = 10.0, 20.0
    noisy[at(4):at(8)] = [100.0, 100.0, 100.0, -380.0]
    noisy[at(8):at(64)] = 1000.0
    lower, upper, located = _range_of(noisy, edges, CountNoise("gaussian", 0.5), 1, zero, zero)
    assert located and 0.0 < lower <= upper


@pytest.mark.parametrize("expected_rows, step", [(None, 0.1), (1_000_000, 0.1), (20_000, 0.1), (3_000, 0.5),
                                                  (1_000, 1.0), (10, 1.0)])
def test_a_coordinates_bin_width_follows_the_dp_row_estimate(expected_rows: float | None, step: float) -> None:
    # Noise std 22: 4 stds of rows spread over 10 degrees need bins of 0.044 degree at 20,000 rows,
    # 0.29 at 3,000 and 0.88 at 1,000 (the next of GEO_STEPS up); without an estimate, the finest.
    assert _geo_step(CountNoise("gaussian", 22.0), expected_rows) == step and step in GEO_STEPS


def test_a_small_tables_coordinates_stay_inside_the_box_given_the_dp_row_estimate() -> None:
    # 1,000 points spread over 10 x 10 degrees: in 0.1-degree bins the noise swamps every bin and the
    # box missed 16-74% of them (10 seeds); in bins fitted to about 1,000 rows, none but one seed's 5%.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"latitude": rng.uniform(32, 42, 1000), "longitude": rng.uniform(-124, -114, 1000),
                          "x": rng.normal(size=1000)})
    outside = []
    for seed in range(10):
        schema = discover_schema_composed(frame, 0.1433, 9e-7, np.random.default_rng(seed), expected_rows=1000).schema
        box = schema["location"].region
        outside.append(((frame.latitude < box.min_lat) | (frame.latitude > box.max_lat)
                        | (frame.longitude < box.min_lon) | (frame.longitude > box.max_lon)).mean())
    assert np.mean(outside) < 0.02 and max(outside) < 0.1


def test_a_cluster_beyond_a_sparse_gap_joins_a_coordinate_range_by_a_run_of_16_bins() -> None:
    # Latitudes in 0.1-degree bins: a bulk from 33.7 to 38, then four sparse bins and a cluster of
    # eight bins of 35 rows (San Diego beside Los Angeles in 3,000 California rows). Runs of at most 8
    # bins stopped at the gap; a run of 16 clears its threshold (that of an empty run, RUN_GROWTH_FAILURE).
    edges = np.round(np.linspace(-90.0, 90.0, 1801), 6)
    counts = np.zeros(1800)
    bins = lambda a, b: slice(int(np.searchsorted(edges, a)), int(np.searchsorted(edges, b)))  # noqa: E731
    counts[bins(33.7, 38.0)] = 50.0
    counts[bins(33.3, 33.7)] = 5.0
    counts[bins(32.5, 33.3)] = 35.0
    lower, upper, located = _range_of(counts, edges, CountNoise("gaussian", 22.0), 1, 0, None)
    assert located and lower == pytest.approx(32.5) and upper == pytest.approx(38.0)


@pytest.mark.filterwarnings("ignore::tabsynth.privacy.DiscoveryWarning")  # a few seeds cannot locate the range at all (allowed below)
def test_a_quantity_centred_on_zero_keeps_both_signs() -> None:
    # 1,500 standard normal values: each sign's bulk spreads over a dozen quarter-octave bins near 0,
    # so one sign may clear alone; the other joins as the range's mirror image (without it, 4 seeds
    # in 20 kept one sign; a range may also not be located at all at this epsilon).
    ranges = []
    for seed in range(20):
        frame = pd.DataFrame({"x": np.random.default_rng(11 + seed).normal(size=1500)})
        column = discover(frame, seed=seed)[0]["x"]
        ranges.append((column.lower, column.upper))
    located = [(lower, upper) for lower, upper in ranges if upper - lower > 0.01]
    assert len(located) >= 15 and all(lower < -0.5 and upper > 0.5 for lower, upper in located)


@pytest.mark.parametrize("far_stds, joins", [(5.3, False), (6.3, True)])
def test_a_bin_apart_from_the_range_joins_only_past_a_far_stricter_threshold(far_stds: float, joins: bool) -> None:
    # A bulk of ages and one bin far out at 2^40: at 5.3 noise stds it clears the ordinary threshold of
    # one bin among these tests (4.9 stds) but not the one for a bin apart from the range (5.8).
    edges = _numeric_edges(True)
    noise = CountNoise("gaussian", 10.0)
    noisy = np.zeros(len(edges) - 1)
    bulk = (edges[:-1] >= 16) & (edges[:-1] < 90)
    noisy[bulk] = 1000.0
    far = int(np.searchsorted(edges, 2.0**40))
    noisy[far] = far_stds * noise.scale
    lower, upper, located = _range_of(noisy, edges, noise, 1, 0, int(np.searchsorted(edges, 0.0)))
    assert located and lower >= 16 - 1 and (upper > 2.0**39) == joins


def test_magnitudes_up_to_two_to_the_62_keep_their_range() -> None:
    # Byte counts, national sums in cents: 1e15-1e18. The fixed bins stopped at 2^40 (~1.1e12) and
    # capped every such value there.
    values = np.random.default_rng(5).uniform(1e15, 1e18, size=5000).round()
    column = discover(pd.DataFrame({"bytes": pd.array(values.astype(np.int64), dtype="int64")}))[0]["bytes"]
    assert 1e14 <= column.lower <= 1e17 and 9e17 <= column.upper <= 2.4e18


@pytest.mark.parametrize("infinity", [np.inf, -np.inf])
def test_infinities_do_not_move_a_range(infinity: float) -> None:
    # A tenth of the rows at +-inf counted in the end bins and stretched the range to 2^62: every real
    # value then sat in its first knot segment.
    values = np.random.default_rng(4).normal(50.0, 10.0, size=5000)
    values[::10] = infinity
    column = discover(pd.DataFrame({"x": values}))[0]["x"]
    assert 0.0 <= column.lower < 30.0 and 70.0 < column.upper <= 128.0


def test_a_range_at_the_largest_magnitude_is_a_warning_naming_the_column() -> None:
    # Identifiers past 2^62 are clamped there: the user is told, not left with wrong values.
    values = np.int64(2**62) + np.arange(5000, dtype=np.int64)
    with pytest.warns(DiscoveryWarning, match=r"range of column\(s\) \['id'\] at the largest magnitude"):
        discover(pd.DataFrame({"id": pd.array(values, dtype="int64")}))


@pytest.mark.parametrize(("negative_per_bin", "takes_in_the_mirror"), [(0.0, False), (2.0, True)])
def test_the_mirror_of_a_positive_range_joins_it_when_its_sum_clears_one_test(negative_per_bin: float,
                                                                               takes_in_the_mirror: bool) -> None:
    # A noisy histogram read at epsilon 1: 300 in each of 12 bins of [1, 8) and 2 in each mirror bin
    # of (-8, -1], too few for any bin or group of them to clear alone, enough together (24 > 16.1).
    edges = _numeric_edges(False)
    zero = int(np.searchsorted(edges, 0.0))
    positive = np.flatnonzero((edges[:-1] >= 1.0) & (edges[1:] <= 8.0))
    noisy = np.zeros(len(edges) - 1)
    noisy[positive] = 300.0
    noisy[2 * zero - 1 - positive] = negative_per_bin
    lower, upper, located = _range_of(noisy, edges, CountNoise.laplace(1.0), 1, zero, zero)
    assert located and upper == 8.0 and (lower == -8.0 if takes_in_the_mirror else lower == 1.0)


def test_a_non_negative_quantity_gets_no_negative_mirror() -> None:
    frame = pd.DataFrame({"amount": np.random.default_rng(2).exponential(100.0, size=20_000)})
    assert min(discover(frame, seed=seed)[0]["amount"].lower for seed in range(20)) >= 0


def test_a_column_too_sparse_to_locate_falls_back_near_zero_not_on_a_far_empty_region() -> None:
    # 30 values (a disability rating of 1-6) among 20,000 nulls: no bin or group clears a threshold.
    values = np.full(20_000, None, dtype=object)
    values[:30] = np.tile(np.arange(1, 7), 5)
    frame = pd.DataFrame({"rating": pd.array(values, dtype="Int64")})
    with pytest.warns(DiscoveryWarning, match="'rating'"):
        ranges = [(c.lower, c.upper) for c in (discover(frame, seed=seed)[0]["rating"] for seed in range(10))]
    assert all(-2 <= lower and upper <= 16 for lower, upper in ranges)


def test_a_range_too_thin_to_locate_is_a_warning_naming_the_column() -> None:
    # 300 values spread over two decades at epsilon 0.1: no bin or group clears; the bounds are a guess.
    frame = pd.DataFrame({"spread": np.random.default_rng(3).uniform(10.0, 1000.0, size=300)})
    with pytest.warns(DiscoveryWarning, match=r"could not locate the range of column\(s\) \['spread'\]"):
        discover(frame)


def test_timestamps_past_the_located_months_are_a_warning_naming_the_column() -> None:
    # A fifth of the rows hold a far-future sentinel: the range runs to the grid's last month, and clamps there.
    stamps = pd.Series(pd.Timestamp("2010-01-01") + pd.to_timedelta(np.arange(20_000) % 3_000, unit="D"))
    stamps[:4_000] = pd.Timestamp("2262-01-01")
    with pytest.warns(DiscoveryWarning, match=r"column\(s\) \['joined'\] at an end of the months"):
        assert discover(pd.DataFrame({"joined": stamps}))[0]["joined"].upper.startswith("2100")


def test_a_located_range_gives_no_warning() -> None:
    joined = pd.Series(pd.Timestamp("1901-06-01") + pd.to_timedelta(np.arange(20_000), unit="D"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiscoveryWarning)
        discover(people())
        discover(pd.DataFrame({"joined": joined}))


def test_a_point_mass_at_zero_far_below_the_bulk_joins_the_range() -> None:
    # 1% zeros, then incomes from a few thousand up: empty bins between, and too few zeros for the
    # threshold that guards every bin at once; the bin of 0 alone is tested on its own.
    values = np.concatenate([np.zeros(200), np.random.default_rng(1).lognormal(10, 0.5, 19_800)])
    frame = pd.DataFrame({"income": values})
    lowers = [discover(frame, seed=seed)[0]["income"].lower for seed in range(20)]
    assert sum(-1.0 < lower <= 0.0 for lower in lowers) >= 18


def test_a_binary_coded_integer_spends_the_knots_share_on_a_second_range_histogram() -> None:
    # 30 rows at 70 beside 20,000 in [30, 63]: one histogram at half the share finds them in 11 of 40
    # seeds, the sum of two (the knots' half has nothing to buy for a binary code) in 22.
    uppers = [discover(ages_beside_a_tail_at_70(30), seed=seed)[0]["age"].upper for seed in range(40)]
    assert sum(upper >= 70 for upper in uppers) >= 18 and max(uppers) <= 100


def test_composed_discovery_returns_its_mu_and_thresholds_delta_without_table_values() -> None:
    found = discover_schema_composed(people(), 0.5, DELTA, np.random.default_rng(1))
    assert found.mu == 0.5 and found.delta == DELTA
    assert set(found.details["columns"]) == {"income", "city"}
    text = json.dumps(found.details)
    assert RARE not in text and "Paris" not in text and "1e+12" not in text
    assert RARE not in found.schema["city"].categories and found.schema["income"].upper < EXTREME


def test_composed_discovery_splits_mu_squared_evenly_over_the_columns() -> None:
    # Two budgeted columns: each histogram's noise std is sqrt(2) / mu; the city's threshold and the
    # income's point masses share delta.
    details = discover_schema_composed(people(), 0.5, DELTA, np.random.default_rng(1)).details
    assert details["noise"]["single_histogram"]["scale"] == pytest.approx(math.sqrt(2) / 0.5)
    assert details["categories"]["threshold"] == pytest.approx(gaussian_threshold(math.sqrt(2) / 0.5, DELTA / 2))
    assert "epsilon" not in details["categories"]  # the caller's accountant states it


def test_composed_discovery_of_booleans_alone_spends_nothing() -> None:
    frame = pd.DataFrame({"smoker": np.random.default_rng(0).random(100) < 0.3})
    found = discover_schema_composed(frame, 0.5, DELTA, np.random.default_rng(1))
    assert found.mu == 0.0 and found.delta == 0.0 and found.details == {}


@pytest.mark.parametrize("mu,delta,name", [(0.0, DELTA, "mu"), (float("inf"), DELTA, "mu"), (0.5, 0.0, "delta"),
                                           (0.5, 1.0, "delta")])
def test_composed_discovery_refuses_a_bad_mu_or_delta_by_name(mu: float, delta: float, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be"):
        discover_schema_composed(people(), mu, delta, np.random.default_rng(1))


def test_composed_new_categories_release_a_common_new_value_and_never_a_unique_one() -> None:
    schema = Schema((CategoricalColumn("city", categories=("Lyon",)),))
    frame = pd.DataFrame({"city": pd.Series(["Lyon"] * 2000 + ["Paris"] * 2000 + [RARE], dtype="str")})
    found = discover_new_categories_composed(frame, schema, 0.5, DELTA, np.random.default_rng(1))
    assert found.schema["city"].categories == ("Lyon", "Paris")
    assert found.mu == 0.5 and found.delta == DELTA and found.purpose == "new categories"
    assert found.details["categories"]["threshold"] == pytest.approx(gaussian_threshold(1 / 0.5, DELTA))
    assert RARE not in json.dumps(found.details) and "Paris" not in json.dumps(found.details)


def test_ledger_holds_one_entry_for_the_given_epsilon_without_table_values() -> None:
    frame = people()
    ledger = PrivacyLedger(1.0, 1e-5)
    discover_schema(frame, ledger, 0.2, DELTA, np.random.default_rng(1))
    (entry,) = ledger.entries
    assert entry.purpose == "domain discovery"
    assert entry.epsilon == 0.2 and entry.delta == DELTA
    assert set(entry.details["columns"]) == {"income", "city"}
    text = json.dumps(ledger.to_dict())
    assert RARE not in text and "Paris" not in text
    assert "1000000000000" not in text and "1e+12" not in text


@pytest.mark.filterwarnings("ignore::tabsynth.privacy.DiscoveryWarning")  # its small columns' ranges are not the point
def test_nullability_comes_from_the_dtype_only() -> None:
    frame = pd.DataFrame({
        "count": np.arange(300, dtype=np.int64) % 40,  # no nulls and a dtype that cannot hold them
        "weight": np.linspace(1.0, 2.0, 300),  # no nulls, but float64 can hold NaN
        "flag": np.arange(300) % 2 == 0,
        "maybe": pd.array([True, False, None] * 100, dtype="boolean"),
    })
    schema, _ = discover(frame)
    assert isinstance(schema["count"], IntegerColumn) and not schema["count"].nullable
    assert isinstance(schema["weight"], ContinuousColumn) and schema["weight"].nullable
    assert isinstance(schema["flag"], BooleanColumn) and not schema["flag"].nullable
    assert isinstance(schema["maybe"], BooleanColumn) and schema["maybe"].nullable


@pytest.mark.filterwarnings("ignore::tabsynth.privacy.DiscoveryWarning")  # its small columns' ranges are not the point
def test_schema_encodes_the_private_frame_and_decodes_to_its_dtypes() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    frame = people(n)
    frame["age"] = rng.integers(18, 80, size=n)
    frame["children"] = pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 4, size=n)), dtype="Int64")
    frame["score"] = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    frame["member"] = rng.random(n) < 0.5
    frame["joined"] = pd.to_datetime("2015-01-01") + pd.to_timedelta(rng.integers(0, 3000, n), unit="D")
    frame.loc[5, "city"] = None
    schema, _ = discover(frame)
    assert schema.column_order == tuple(frame.columns)
    assert isinstance(schema["joined"], DatetimeColumn)
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))
    assert list(decoded.columns) == list(frame.columns)
    assert dict(decoded.dtypes) == dict(frame.dtypes)


def test_a_column_stored_as_dates_gets_days_without_releasing_a_resolution() -> None:
    # Parquet DATE columns are read as midnights at second resolution; days come from the storage type.
    rng = np.random.default_rng(4)
    days = pd.to_timedelta(rng.integers(0, 3000, 5000), unit="D")
    frame = pd.DataFrame({"opened": (pd.to_datetime("2015-01-01") + days).astype("datetime64[s]")})
    as_dates, ledger = discover(frame, day_columns={"opened"})
    assert as_dates["opened"].resolution == "D"
    assert "histogram_resolution" not in ledger.entries[0].details["columns"]["opened"]["mechanisms"]
    encoder = Encoder(as_dates, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))
    assert decoded["opened"].dtype == frame["opened"].dtype
    assert (decoded["opened"] == decoded["opened"].dt.floor("D")).all()


def test_an_arrow_date_column_gets_days_without_releasing_a_resolution() -> None:
    days = pd.to_timedelta(np.random.default_rng(4).integers(0, 3000, 5000), unit="D")
    frame = pd.DataFrame({"opened": (pd.to_datetime("2015-01-01") + days).astype(pd.ArrowDtype(pa.date32()))})
    schema, ledger = discover(frame)
    assert schema["opened"].resolution == "D" and schema["opened"].dtype == "date32[day][pyarrow]"
    assert "histogram_resolution" not in ledger.entries[0].details["columns"]["opened"]["mechanisms"]


def stamps_at(unit: str, n: int = 20_000, seed: int = 0) -> pd.Series:
    """Timestamps of whole ``unit``s (microseconds for "us") stored at microseconds, as pandas makes them."""
    step = pd.Timedelta(1, unit=unit)
    ticks = np.random.default_rng(seed).integers(0, pd.Timedelta(days=3000) // step, n)
    return pd.Series(pd.Timestamp("2015-01-01") + ticks * step).astype("datetime64[us]")


@pytest.mark.parametrize("unit", ["D", "h", "m", "s", "us"])
def test_a_timestamps_resolution_is_its_coarsest_exact_unit_released_under_dp(unit: str) -> None:
    schema, ledger = discover(pd.DataFrame({"at": stamps_at(unit)}))
    assert schema["at"].resolution == unit
    released = ledger.entries[0].details["columns"]["at"]["mechanisms"]["histogram_resolution"]
    assert released["units"][0] == "D" and released["scale"] > 0


def test_a_timezone_aware_column_of_local_dates_is_released_as_local_dates() -> None:
    # Paris midnights across both daylight-saving changes of 2021: 23:00 or 22:00 the day before in UTC.
    stamps = (stamps_at("D") - pd.Timestamp("2015-01-01") + pd.Timestamp("2020-06-01")).dt.tz_localize("Europe/Paris")
    frame = pd.DataFrame({"at": stamps})
    schema = discover(frame)[0]
    assert (schema["at"].resolution, schema["at"].local) == ("D", True)
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))["at"]
    assert decoded.dtype == frame["at"].dtype and (decoded.dt.hour == 0).all()
    inside = (frame["at"] >= schema["at"].lower) & (frame["at"] < schema["at"].upper)
    assert (decoded[inside] == frame["at"][inside]).all()


def test_a_column_of_dates_with_a_few_times_of_day_is_released_as_dates() -> None:
    # 0.5% of the records carry a time (a data-entry slip): below the slack, they are floored to their day.
    stamps = stamps_at("D")
    stamps[:100] += pd.Timedelta(hours=5, seconds=3)
    assert discover(pd.DataFrame({"at": stamps}))[0]["at"].resolution == "D"


@pytest.mark.parametrize("unit", ["D", "s"])
def test_a_durations_resolution_is_released_as_a_timestamps_is(unit: str) -> None:
    step = pd.Timedelta(1, unit=unit)
    spans = pd.Series(np.random.default_rng(7).integers(0, 5000, 20_000) * step).astype("timedelta64[ns]")
    column = discover(pd.DataFrame({"took": spans}))[0]["took"]
    assert column.resolution == unit and 5000 <= column.upper_ticks <= 5000 * 2**0.25  # a range bin spans 2^(1/4)


def test_a_column_of_dates_with_a_twentieth_of_its_records_at_times_of_day_keeps_them() -> None:
    stamps = stamps_at("D")
    stamps[:1000] += pd.Timedelta(hours=5, seconds=3)
    found = discover_schema_composed(pd.DataFrame({"at": stamps}), 0.5, DELTA, np.random.default_rng(0))
    assert found.schema["at"].resolution == "s"


@pytest.mark.filterwarnings("ignore::tabsynth.privacy.DiscoveryWarning")  # the range is not the point
def test_noise_that_swamps_the_counts_keeps_the_storage_unit() -> None:
    # 500 random nanosecond stamps at a tiny budget: the noise allows any unit; nothing shows one holds.
    stamps = pd.Series(pd.Timestamp("2020-01-01") + pd.to_timedelta(
        np.random.default_rng(8).integers(0, 10**15, 500), unit="ns")).astype("datetime64[ns]")
    units = {discover_schema_composed(pd.DataFrame({"at": stamps}), 0.01, DELTA,
                                      np.random.default_rng(seed)).schema["at"].resolution for seed in range(5)}
    assert units == {"ns"}


def durations_with_placeholders(n: int = 20_000) -> pd.Series:
    """Stays in days at nanosecond storage, a tenth of them an open-ended placeholder of 100,000 days
    (near the most nanoseconds hold: a range bin's edge past it would overflow)."""
    rng = np.random.default_rng(9)
    days = np.where(rng.random(n) < 0.1, 100_000, rng.integers(0, 60, n))
    return pd.Series(pd.to_timedelta(days, unit="D")).astype("timedelta64[ns]")


def test_a_durations_bounds_stay_within_what_its_dtype_holds() -> None:
    frame = pd.DataFrame({"stay": durations_with_placeholders()})
    schema = discover(frame)[0]
    column = schema["stay"]
    assert column.resolution == "D" and column.upper_ticks <= (2**63 - 1) // (86_400 * 10**9)
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))["stay"]
    assert decoded.dtype == frame["stay"].dtype and decoded.max() == pd.Timedelta(days=100_000)


@pytest.mark.parametrize("composed", [False, True])
@pytest.mark.parametrize("frame", [pd.DataFrame({"at": stamps_at("D")}),
                                   pd.DataFrame({"took": pd.to_timedelta(np.arange(20_000) % 50, unit="s")})],
                         ids=["timestamps", "short durations"])
def test_a_time_columns_histograms_spend_exactly_its_share(frame: pd.DataFrame, composed: bool) -> None:
    # One budgeted column: its histograms' 1 / std^2 add up to mu^2 (composed, Gaussian), their
    # epsilons to the column's (basic, Laplace); its range and knots histograms stay alike, so that a
    # binary code's second range histogram can add to the first.
    if composed:
        details = discover_schema_composed(frame, 0.5, DELTA, np.random.default_rng(1)).details
        budget, total = (lambda m: m["scale"] ** -2), 0.5**2
    else:
        ledger = discover(frame)[1]
        details, total = ledger.entries[0].details, EPS_PER_COLUMN
        assert details["noise"]["composition"] == "basic"
        budget = lambda m: 1 / m["scale"]  # noqa: E731
    (mechanisms,) = (column["mechanisms"] for column in details["columns"].values())
    assert sum(budget(m) for m in mechanisms.values()) == pytest.approx(total)


def test_a_short_durations_second_range_histogram_has_its_first_ones_noise() -> None:
    # A span of at most 128 ticks is an integer's binary code: its knots' share buys a second range
    # histogram, whose counts add to the first's only if the two have the same noise (delta = 0: no
    # point masses, so the knots' whole share is that histogram).
    frame = pd.DataFrame({"took": pd.to_timedelta(np.arange(20_000) % 50, unit="s").astype("timedelta64[s]")})
    ledger = PrivacyLedger(100.0, 1e-3)
    discover_schema(frame, ledger, EPS_PER_COLUMN, 0.0, np.random.default_rng(0))
    mechanisms = ledger.entries[0].details["columns"]["took"]["mechanisms"]
    assert mechanisms["histogram_range"]["scale"] == pytest.approx(mechanisms["histogram_quantiles"]["scale"])


@pytest.mark.parametrize("unit", ["s", "ns"])
def test_a_day_many_records_share_becomes_a_point_mass_of_the_dates(unit: str) -> None:
    # 30% of the records on one day (a default date, a cut-off): without a point mass its rows would
    # spread over the dates of its knot cell.
    rng = np.random.default_rng(0)
    stamps = pd.Series(pd.Timestamp("2000-01-01") + pd.to_timedelta(rng.integers(0, 3000, 20_000), unit="D"))
    stamps[rng.random(20_000) < 0.3] = pd.Timestamp("2020-01-01")
    frame = pd.DataFrame({"opened": stamps.astype(f"datetime64[{unit}]")})
    schema = discover(frame)[0]
    encoder = Encoder(schema.with_dtypes(frame), on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))["opened"]
    on_the_day = frame["opened"] == pd.Timestamp("2020-01-01")
    assert (decoded[on_the_day] == pd.Timestamp("2020-01-01")).all()


def test_a_timedelta_column_is_discovered_as_durations_at_its_storage_unit() -> None:
    rng = np.random.default_rng(5)
    stay = pd.Series(pd.to_timedelta(rng.gamma(2.0, 3.0, 20_000) * 86400, unit="s").astype("timedelta64[s]"))
    stay[rng.random(20_000) < 0.05] = pd.NaT
    frame = pd.DataFrame({"stay": stay})
    schema = discover(frame)[0]
    column = schema["stay"]
    assert isinstance(column, DurationColumn) and column.resolution == "s" and column.knots is not None
    assert column.lower_ticks <= stay.quantile(0.01).total_seconds()
    assert column.upper_ticks >= stay.quantile(0.99).total_seconds()
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))["stay"]
    assert decoded.dtype == frame["stay"].dtype and decoded.isna().sum() == frame["stay"].isna().sum()


def test_a_duration_of_few_ticks_gets_each_tick_as_a_point_mass() -> None:
    # Where an integer would take a binary code, a duration (a number with knots) keeps every value a cell.
    seconds = np.random.default_rng(6).integers(0, 20, 20_000).astype("timedelta64[s]")
    column = discover(pd.DataFrame({"wait": seconds}))[0]["wait"]
    assert column.resolution == "s" and column.upper_ticks - column.lower_ticks <= 127
    knots = np.array(column.knots)
    assert len(knots) == 2 * (column.upper_ticks - column.lower_ticks + 1)
    assert (knots[::2] == knots[1::2]).all()


@pytest.mark.parametrize("dtype", [object, "string[python]", "string[pyarrow]", "str"])
def test_a_categorical_column_decodes_to_its_string_dtype(dtype: object) -> None:
    frame = people()[["city"]].astype(dtype)
    schema, _ = discover(frame)
    encoder = Encoder(schema, on_invalid="clip")
    assert encoder.decode(encoder.encode(frame))["city"].dtype == frame["city"].dtype


@pytest.mark.parametrize("ordered", [False, True])
def test_a_category_column_decodes_to_the_released_levels_ordered_as_its_dtype(ordered: bool) -> None:
    frame = people()[["city"]].astype(pd.CategoricalDtype(["Paris", "Lyon", RARE], ordered=ordered))
    schema, _ = discover(frame)
    encoder = Encoder(schema, on_invalid="clip")
    dtype = encoder.decode(encoder.encode(frame))["city"].dtype
    assert isinstance(dtype, pd.CategoricalDtype) and dtype.ordered == ordered
    assert RARE not in dtype.categories  # the levels are the DP release, not the private dtype's list


def test_an_ordered_categorical_keeps_its_dtypes_order_not_the_alphabets() -> None:
    frame = people()[["city"]].astype(pd.CategoricalDtype(["Paris", "Lyon", RARE], ordered=True))
    schema, _ = discover(frame)
    assert schema["city"].categories == ("Paris", "Lyon")


def test_adult_keeps_the_main_levels_and_plausible_age_bounds(adult_train: pd.DataFrame) -> None:
    schema, ledger = discover(adult_train)
    assert ledger.entries[0].epsilon == pytest.approx(EPS_PER_COLUMN * adult_train.shape[1])
    assert set(schema["income"].categories) == {"<=50K", ">50K"}
    assert set(schema["sex"].categories) == {"Female", "Male"}
    assert set(schema["race"].categories) == set(adult_train["race"].dropna().unique())
    assert len(schema["race"].categories) == 5
    age = schema["age"]
    assert 15 <= age.lower < age.upper <= 95


def test_adult_capital_gain_keeps_its_zeros_one_cell_whichever_histogram_finds_its_tail(
        adult_train: pd.DataFrame) -> None:
    # At epsilon 1's discovery budget (0.3 over 15 columns) the first range histogram mostly sees the
    # zeros alone (a binary code, no knots); the second then finds the tail, and the knots come from
    # both. Without knots, the zeros would share an even cell of the range with a uniform place.
    for seed in range(6):
        schema = discover_schema(adult_train, PrivacyLedger(10.0, 1e-3), 0.3, 3e-6, np.random.default_rng(seed))
        gain = schema["capital_gain"]
        assert gain.uses_binary_code or list(gain.knots or ()).count(0.0) >= 2, (seed, gain)


def test_adult_categorical_columns_share_one_gaussian_and_keep_every_category_of_600_rows(
        adult_train: pd.DataFrame) -> None:
    # The discovery share of epsilon = 1 (30% over Adult's 15 columns, delta 3e-6): a Laplace histogram
    # per column would need 712 rows to clear its threshold; the joint Gaussian needs about 313.
    ledger = PrivacyLedger(1.0, 1e-5)
    schema = discover_schema(adult_train, ledger, 0.3, 3e-6, np.random.default_rng(0))
    release = ledger.entries[0].details["categories"]
    assert release["mechanism"] == "gaussian_histogram_threshold" and release["columns"] == 9
    assert release["threshold"] < 400
    for column in schema.columns:
        if isinstance(column, CategoricalColumn):
            counts = adult_train[column.name].value_counts()
            assert set(counts.index[counts >= 600]) <= set(column.categories), column.name


def test_discovery_is_reproducible_for_a_fixed_seed() -> None:
    frame = people()
    (first, ledger_a), (second, ledger_b) = discover(frame, seed=11), discover(frame, seed=11)
    assert first.to_dict() == second.to_dict()
    assert ledger_a.to_dict() == ledger_b.to_dict()


def test_geo_pair_found_by_name_gets_a_box_around_the_bulk() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    frame = pd.DataFrame({"pickup_lat": rng.normal(40.75, 0.05, n), "pickup_lon": rng.normal(-73.98, 0.05, n),
                          "fare": rng.gamma(2.0, 8.0, n)})
    schema, _ = discover(frame)
    geo = schema["pickup"]
    assert isinstance(geo, GeoPointColumn) and (geo.lat, geo.lon) == ("pickup_lat", "pickup_lon")
    inside = geo.region.contains(frame["pickup_lat"].to_numpy(), frame["pickup_lon"].to_numpy())
    assert inside.mean() >= 0.95
    assert schema.column_order == ("pickup_lat", "pickup_lon", "fare")


def test_columns_subset_discovers_only_those_in_frame_order() -> None:
    frame = people().assign(age=np.arange(5000) % 60 + 20)
    schema, ledger = discover(frame, columns=["age", "income"])
    assert schema.column_order == ("income", "age")
    assert set(ledger.entries[0].details["columns"]) == {"income", "age"}


def test_no_surviving_category_leaves_only_the_catch_all_and_a_warning_naming_the_column() -> None:
    frame = pd.DataFrame({"id": pd.Series([f"user-{i}" for i in range(500)], dtype="str")})
    with pytest.warns(DiscoveryWarning, match=r"released no category of column\(s\) \['id'\].*'<other>'.*"
                                              r"text that holds numbers or dates is learnt as labels"):
        schema, _ = discover(frame)
    assert schema["id"].categories == () and schema["id"].levels == ("<other>",)


def test_the_no_category_warning_follows_the_release_alone() -> None:
    # An empty column warns as a thin one does (the release cannot tell them apart); a column whose
    # every value is the catch-all releases it, and does not warn.
    empty = pd.DataFrame({"code": pd.Series([None] * 500, dtype="str")})
    with pytest.warns(DiscoveryWarning, match=r"released no category of column\(s\) \['code'\]"):
        discover(empty)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiscoveryWarning)
        discover(pd.DataFrame({"code": pd.Series(["<other>"] * 500, dtype="str")}))


def test_categories_of_numbers_beside_a_text_catch_all_are_warned_of_by_name() -> None:
    codes = pd.Series(pd.Categorical([1] * 3000 + [2] * 2000 + [7]), name="code")
    labels = pd.Series(["a"] * 3000 + ["b"] * 2001, dtype="category", name="label")
    with pytest.warns(DiscoveryWarning, match=r"column\(s\) \['code'\] hold categories that are not text") as caught:
        schema, _ = discover(pd.DataFrame({"code": codes, "label": labels}))
    assert schema["code"].levels == (1, 2, "<other>")
    assert not any("label" in str(w.message) for w in caught)


def test_only_free_columns_spend_nothing() -> None:
    ledger = PrivacyLedger(1.0, 1e-5)
    schema = discover_schema(pd.DataFrame({"flag": [True, False]}), ledger, 0.0, 0.0, np.random.default_rng(0))
    assert isinstance(schema["flag"], BooleanColumn) and ledger.entries == ()


def test_non_positive_epsilon_is_rejected_when_a_column_needs_budget() -> None:
    ledger = PrivacyLedger(1.0, 1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        discover_schema(people(100), ledger, 0.0, DELTA, np.random.default_rng(0))
    assert ledger.entries == ()


def test_unsupported_dtype_is_named() -> None:
    frame = pd.DataFrame({"month": pd.period_range("2020-01", periods=3, freq="M")})
    with pytest.raises(SchemaError, match="column 'month': dtype period\\[M\\] has no discoverable kind"):
        discover_schema(frame, PrivacyLedger(1.0, 1e-5), 0.1, DELTA, np.random.default_rng(0))


# --- categories the public table lacks ---------------------------------------------------------------

from tabsynth.privacy.discovery import discover_new_categories, known_rows  # noqa: E402


def public_and_private(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Public year with two industries; the private year adds a large new one and a code held by one row."""
    rng = np.random.default_rng(seed)
    public = pd.DataFrame({"industry": pd.array(rng.choice([10, 20], 3000), dtype="Int64"),
                           "region": pd.Series(rng.choice(["north", "south"], 3000), dtype="str")})
    private = pd.DataFrame({"industry": pd.array(rng.choice([10, 20, 30], 3000), dtype="Int64"),
                            "region": pd.Series(rng.choice(["north", "south"], 3000), dtype="str")})
    private.loc[0, "industry"], private.loc[1, "region"] = 77_777, RARE
    return public, private


def test_a_large_new_private_category_is_added_and_a_unique_one_is_not() -> None:
    public, private = public_and_private()
    ledger = PrivacyLedger(10.0, 1e-5)
    schema = discover_new_categories(private, Schema.infer(public, overrides={"industry": "categorical"}), ledger,
                                     2.0, 1e-6, np.random.default_rng(0))
    assert schema["industry"].categories == (10, 20, 30)
    assert schema["region"].categories == ("north", "south")
    assert RARE not in json.dumps(ledger.to_dict()) and "77777" not in json.dumps(ledger.to_dict())


def test_new_category_discovery_is_charged_even_when_nothing_is_new() -> None:
    public, _ = public_and_private()
    ledger = PrivacyLedger(10.0, 1e-5)
    schema = Schema.infer(public, overrides={"industry": "categorical"})
    assert discover_new_categories(public, schema, ledger, 0.5, 1e-6, np.random.default_rng(0)) == schema
    entry, = ledger.to_dict()["entries"]
    assert entry["purpose"] == "new categories" and entry["epsilon"] == 0.5 and entry["delta"] == 1e-6


def test_known_rows_drops_rows_with_unknown_categories_but_keeps_nulls_and_catch_alls() -> None:
    schema = Schema((CategoricalColumn("a", nullable=True, categories=("x", "y")),
                     CategoricalColumn("b", categories=("p",), catch_all="<other>")), ("a", "b"))
    frame = pd.DataFrame({"a": ["x", None, "z", "y"], "b": ["p", "q", "p", "p"]})
    assert known_rows(schema)(frame).index.tolist() == [0, 1, 3]


def wide_table(n_rows: int, n_numbers: int, n_categories: int = 0, seed: int = 0) -> pd.DataFrame:
    """``n_numbers`` incomes around 50,000 and ``n_categories`` three-valued categorical columns."""
    rng = np.random.default_rng(seed)
    frame = {f"amount_{i}": rng.normal(50_000, 10_000, n_rows).clip(1_000) for i in range(n_numbers)}
    frame |= {f"group_{i}": pd.Series(rng.choice(np.array(["a", "b", "c"]), n_rows), dtype="str")
              for i in range(n_categories)}
    return pd.DataFrame(frame)


def test_a_small_wide_table_locates_every_range_through_one_gaussian_release() -> None:
    # 4,000 rows x 20 numbers at epsilon 0.3: split 20 ways, a Laplace range bin needs ~1,900 rows to
    # clear its threshold (none of these bins holds that many); one Gaussian release over all 40
    # histograms needs ~370.
    ledger = PrivacyLedger(1.0, 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiscoveryWarning)
        schema = discover_schema(wide_table(4_000, 20), ledger, 0.3, 3e-6, np.random.default_rng(0))
    assert ledger.entries[0].details["noise"]["composition"] == "gaussian"
    for column in schema.columns:
        assert 0 <= column.lower <= 36_000 and 64_000 <= column.upper <= 200_000, column
    # The bin of 0 is tested on its own at RANGE_FAILURE (1e-3): with this seed one empty one clears.
    assert sum(column.lower < 1_000 for column in schema.columns) <= 1


def test_a_single_column_keeps_laplace_noise_and_spends_delta_on_its_point_masses_alone() -> None:
    ledger = PrivacyLedger(1.0, 1e-5)
    discover_schema(wide_table(4_000, 1), ledger, 0.3, 3e-6, np.random.default_rng(0))
    (entry,) = ledger.entries
    assert entry.details["noise"]["composition"] == "basic" and entry.delta == 3e-6
    mechanisms = entry.details["columns"]["amount_0"]["mechanisms"]
    assert mechanisms["histogram_range"] == {"noise": "laplace", "scale": pytest.approx(1 / 0.15)}
    assert mechanisms["histogram_quantiles"]["scale"] == pytest.approx(1 / 0.075)
    masses = mechanisms["thresholded_point_masses"]
    assert masses["scale"] == pytest.approx(1 / 0.075)
    assert masses["threshold"] == pytest.approx(histogram_threshold(0.075, 3e-6))


def test_without_delta_a_number_releases_no_point_masses_and_spends_no_delta() -> None:
    ledger = PrivacyLedger(1.0, 1e-5)
    discover_schema(wide_table(4_000, 1), ledger, 0.3, 0.0, np.random.default_rng(0))
    (entry,) = ledger.entries
    assert entry.delta == 0.0
    assert set(entry.details["columns"]["amount_0"]["mechanisms"]) == {"histogram_range", "histogram_quantiles"}


def test_the_gaussian_release_is_within_its_budget_by_an_independent_accountant() -> None:
    # Google's dp-accounting: the Gaussian mechanism whose 1/std^2 is the sum over every histogram of
    # 1/std^2 (what the ledger lists), plus each categorical column's chance of releasing a value held
    # by one row, stays within (epsilon, delta).
    from dp_accounting.pld import privacy_loss_distribution

    epsilon, delta = 0.3, 3e-6
    ledger = PrivacyLedger(1.0, 1e-5)
    discover_schema(wide_table(4_000, 6, n_categories=5), ledger, epsilon, delta, np.random.default_rng(0))
    entry = ledger.entries[0]
    assert entry.details["noise"]["composition"] == "gaussian" and (entry.epsilon, entry.delta) == (epsilon, delta)
    histograms = [m for column in entry.details["columns"].values() for m in column["mechanisms"].values()]
    assert len(histograms) == 6 * 3 + 5 and all(m["noise"] == "gaussian" for m in histograms)
    mu = math.sqrt(sum(1.0 / m["scale"] ** 2 for m in histograms))
    pld = privacy_loss_distribution.from_gaussian_mechanism(1.0 / mu, sensitivity=1.0, value_discretization_interval=1e-4)
    thresholds = [m for m in histograms if "threshold" in m]
    singleton = sum(float(norm.sf((m["threshold"] - 1.0) / m["scale"])) for m in thresholds)
    assert pld.get_delta_for_epsilon(epsilon) + singleton <= delta * 1.001


@pytest.mark.parametrize("odd", [["a", "list"], decimal.Decimal("sNaN")])
def test_one_row_no_histogram_can_count_neither_fails_new_category_discovery_nor_known_rows(odd: object) -> None:
    public, private = public_and_private()
    private["region"] = private["region"].astype(object)
    private.at[2, "region"] = odd
    schema = Schema.infer(public, overrides={"industry": "categorical"})
    released = discover_new_categories(private, schema, PrivacyLedger(10.0, 1e-5), 2.0, 1e-6,
                                       np.random.default_rng(0))
    assert released["region"].categories == ("north", "south")
    assert 2 not in known_rows(released)(private).index


@pytest.mark.parametrize("with_list", [False, True])
def test_equal_tuples_beside_one_list_are_counted_not_unpacked_into_a_matrix(with_list: bool) -> None:
    # The list's fallback made the tuples a 2-D array, which failed the release: one row decided the error.
    values = pd.Series([("x", 1)] * 1_000 + [None] * 500 + ([["a"]] if with_list else []), dtype=object)
    with pytest.raises(SchemaError, match="released categories that are Python tuple values"):
        discover(pd.DataFrame({"pair": values}))
