"""Learn the domain of a PRIVATE table under differential privacy, for when no schema or public data exists.

Only column kinds, nullability and dtypes are read from storage metadata (the pandas dtypes); every
bound, knot and category comes out of an accounted DP mechanism, recorded as one ledger entry.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Collection, Sequence, cast

import numpy as np
import pandas as pd

from tabsynth.geo import BoundingBox
from tabsynth.privacy.ledger import PrivacyLedger
from tabsynth.privacy.mechanisms import (
    GAUSSIAN_DELTA_SHARES,
    GAUSSIAN_HISTOGRAMS,
    LAPLACE_HISTOGRAMS,
    CategoryRelease,
    CountNoise,
    gaussian_category_release,
    gaussian_noise_std,
    histogram_threshold,
    noisy_histogram,
    plan_category_release,
    quantiles_of_counts,
)
from tabsynth.schema import (
    _LAT,
    _LON,
    MAX_BINARY_CODE_VALUES,
    MAX_KNOTS,
    NANOSECONDS,
    POINT_MASS_SHARE,
    BooleanColumn,
    CategoricalColumn,
    Column,
    ContinuousColumn,
    DatetimeColumn,
    DurationColumn,
    RESOLUTIONS,
    GeoPointColumn,
    IntegerColumn,
    Schema,
    SchemaError,
    can_hold_null,
    coarsest_exact_units,
    dtype_text,
    duration_text,
    is_arrow_date,
    is_arrow_decimal,
    is_arrow_dictionary,
    is_duration_dtype,
    is_label,
    is_null,
    label_conversion,
    missing_values,
    naive_stamps,
    numpy_temporal,
    ordered_levels,
    positions_in,
    quantile_knots,
    with_point_masses,
)

__all__ = ["ComposedDiscovery", "DiscoveryWarning", "discover_new_categories", "discover_new_categories_composed",
           "discover_schema", "discover_schema_composed", "known_rows"]


class DiscoveryWarning(UserWarning):
    """DP discovery could not locate a column's range, or release any of its categories, at its budget:
    its synthetic values will be wrong."""


PURPOSE = "domain discovery"
NEW_CATEGORIES_PURPOSE = "new categories"
RANGE_MECHANISM = "histogram_range"
QUANTILE_MECHANISM = "histogram_quantiles"
POINT_MASS_MECHANISM = "thresholded_point_masses"  # a number's values held by many rows, by thresholded counts
RESOLUTION_MECHANISM = "histogram_resolution"  # a timestamp's or duration's coarsest exact unit, by noisy counts
HISTOGRAM_MECHANISM = "thresholded_histograms"  # a categorical column's plan: its share of one CategoryRelease
_RELEASE_COMPOSITION = {
    LAPLACE_HISTOGRAMS: "basic: epsilon and delta split evenly over the categorical columns",
    GAUSSIAN_HISTOGRAMS: "one Gaussian mechanism on every categorical column's counts, calibrated exactly to "
                         "epsilon and part of delta; the rest of delta bounds the release of a value held by one row",
}
RANGE_SHARE = 0.5  # of a numeric column's epsilon spent on its range; the rest buys the inner knots
POINT_MASS_PART = 0.5  # of the knots' share, for a number's point masses (with delta > 0): see _discover_number
RESOLUTION_PART = 0.1  # of a timestamp's or duration's range share, for its resolution: see _dp_resolution
# ``_dp_resolution``: the share of a column's rows that may be finer than its released unit (floored to
# it), beyond what the noise explains: a column of dates keeps the odd record with a time of day.
RESOLUTION_SLACK = 0.01
RESOLUTION_STDS = 2.0  # and the noise allowance, in noise stds of the count of rows finer than the unit
RESOLUTION_EVIDENCE_STDS = 4.0  # the noisy count of rows exact at a coarser unit must pass this many stds
MAX_POINT_MASSES = 64  # a number's most frequent released values that become point masses
RANGE_FAILURE = 1e-3  # chance that some empty bin or bin group of a range histogram clears its threshold
# The same for a bin or group apart from the range found so far, which may only join it at this far
# lower chance: at RANGE_FAILURE, Adult without a schema at eps = 1 had a range blown in 8 of 200
# discoveries (its 6 numbers; a binary code reads its bounds twice), hours per week to 2^52 or
# -155,872, each a noise bin far out in empty space joining the bulk.
APART_FAILURE = 1e-5
RANGE_GROWTH_FAILURE = 0.05  # chance that an empty bin next to the range extends it (see _dp_range)
RANGE_LEVELS = (1, 2, 4, 8, 16)  # bins summed per group when looking for sparse tails
GROWTH_SIZES = (1, 2, 4, 8)  # bins a range grows by at once into a sparse tail, the finest that clears first
# The same over even bins (coordinates, months), where a run of 32 bins is a short way (3.2 degrees): in
# 3,000 California rows, San Diego lies beyond four sparse bins of latitude that runs of 8 did not cross.
EVEN_GROWTH_SIZES = (1, 2, 4, 8, 16, 32)
RUN_GROWTH_FAILURE = 0.002  # chance that an empty run of 2 or more bins next to the range extends it
# Tail extrapolation towards 0 (``_tail_extended``): a one-signed range's end nearer 0 moves octave by
# octave into the tail that its shape predicts, while the predicted mass beyond it exceeds this share
# of the noisy total.
TAIL_SHARE = 0.005
TAIL_RATIO = 0.8  # at most, the predicted ratio of an octave's count to the next one's inwards
# The end passes the next octave whole only if its noisy count reaches this share of its prediction
# (far nearer it than an empty octave's 0), TAIL_SIGNAL of its own noise std, and falls at most TAIL_STDS
# stds (its noise and the prediction's) short of the prediction; else it takes the share of the
# octave's bins that the count bears out, and stops.
TAIL_EVIDENCE = 0.75
TAIL_SIGNAL = 2.0
TAIL_STDS = 2.0
TAIL_PRECISION = 3.0  # no extrapolation from an end octave whose noisy count is under this many noise stds
LARGEST_EXPONENT = 62  # a number's range histogram has quarter-octave bins up to 2^62 in magnitude
LARGEST_MAGNITUDE = 2.0**LARGEST_EXPONENT  # larger values fall in its end bins (a warning says so)
# A timestamp's range histogram has month bins between these (a range at either end gets a warning).
DATETIME_GRID = ("1900-01-01", "2100-01-01")
KNOT_BINS = 32  # even bins of the released range in the knots' histogram
KNOT_OCTAVES = 8  # and its quarter-octave bins down to 2^-8 of the range
# A number's knots also hold its quantiles at this share from each end. The generator places a value
# inside its knot segment with little guidance, and the released bounds lie past the data (a
# quarter-octave bin near 290 is about 50 wide), so an outer segment, from the 1/16 quantile (17
# knots) to its bound, spread its rows over that slack: 1.6% to 6% of synthetic values lay beyond the
# real extremes (birth years back to 1723 for a column of 1950-2005), and eight correlated normals
# had a 1-way TVD of 0.045 at epsilon = 1000. With these knots: 0.017 there, and 0.016-0.020 against
# 0.034-0.041 at epsilon = 1 (three noise seeds). At 1/128 or 1/256 more rows lay past the extremes
# at epsilon = 1 (the noisy quantile falls in the slack more often); 1/32 helped less. A public
# table's knots (``Schema.infer``) have exact bounds and finer outer segments: there they measured
# no better on CPS (three noise seeds) and are left out. Only where an outer segment is long: see
# ``bounded_knots``.
TAIL_KNOT_SHARE = 1.0 / 64.0
# Degrees per bin of the latitude/longitude range histograms: the finest of these at which rows spread
# evenly over GEO_SPREAD degrees would put GEO_BIN_STDS noise stds in a bin, given the caller's DP
# estimate of the rows (``expected_rows``); without one, the finest. At 0.1 degree, 3,000 California
# rows left 8.9% of their latitudes outside the range (1,000 rows: 56%); at 0.5, 2.2% (10%).
GEO_STEPS = (0.1, 0.2, 0.5, 1.0)
GEO_SPREAD = 10.0
GEO_BIN_STDS = 4.0
BASIC_PLAN, GAUSSIAN_PLAN, COMPOSED_PLAN = "basic", "gaussian", "composed"  # see _NoisePlan
_COMPOSITION = {
    BASIC_PLAN: "basic: epsilon split evenly over the columns, Laplace noise; the categorical columns' shares and "
                "their part of delta spent by one category release, each number's point masses thresholded at "
                "its part of delta",
    GAUSSIAN_PLAN: "one Gaussian release: every histogram of every column gets Gaussian noise, together mu-GDP, "
                   "calibrated exactly to epsilon and delta_gaussian; the rest of delta bounds the release of a "
                   "category or a number's point mass held by one row",
    COMPOSED_PLAN: "one Gaussian release: every histogram of every column gets Gaussian noise, together mu-GDP, "
                   "composed by the caller's accountant with its other Gaussian mechanisms; delta bounds the "
                   "release of a category or a number's point mass held by one row",
}
_REFERENCE_RANGE_TESTS = len(RANGE_LEVELS) * 580  # about a numeric range histogram's tests (levels x bins); for plan scores


@dataclass(frozen=True)
class _Plan:
    """What one source column of the private table costs and which mechanisms it runs (from dtypes only)."""

    name: str
    kind: str  # boolean, integer, continuous, datetime, duration, categorical, lat, lon
    mechanisms: tuple[str, ...]

    @property
    def needs_budget(self) -> bool:
        """Whether the column runs a mechanism and so takes a share of the budget."""
        return bool(self.mechanisms)


def discover_schema(
    frame: pd.DataFrame,
    ledger: PrivacyLedger,
    epsilon: float,
    delta: float,
    rng: np.random.Generator,
    *,
    columns: Sequence[str] | None = None,
    n_knots: int = 17,
    catch_all: str = "<other>",
    day_columns: Collection[str] = (),
) -> Schema:
    """A Schema for the private ``frame`` learnt under (epsilon, delta)-DP and charged to ``ledger`` as one entry.

    Privacy argument (add/remove-one-row adjacency): column kinds, nullability and dtypes come from the
    pandas dtypes and the storage alone, never from values, so neither the row
    count, the presence of nulls nor any value leaks through them; booleans cost nothing. Every other
    source column runs noisy histograms in which each row falls in one bin (sensitivity 1); one row
    touches every column, so the k such columns (lat and lon count separately) share the budget
    (``_plan_noise``). A numeric or datetime column spends half of its share on a histogram over fixed
    data-independent bins; the bounds are the outermost bins or bin groups whose noisy count clears
    a threshold that empty regions almost never clear (post-processing, so a lone extreme record cannot
    set a bound). The other half buys the inner knots from ONE histogram over bins fixed by the released
    bounds, whose noise all the knots share (an integer of at most 128 values needs no knots: its second
    histogram refines its range instead); with delta > 0, part of that half releases the number's point
    masses (values held by many rows) by thresholded noisy counts, as categories are released. A geo
    coordinate spends its whole share on such a histogram. A timestamp or duration first spends
    ``RESOLUTION_PART`` of its range's share on its resolution: one histogram of each row's coarsest
    exact unit (days to the storage unit), from which the coarsest unit that holds nearly every row is
    read (``_dp_resolution``); ``day_columns``, which the storage declares dates, are days for free.
    The h categorical columns release the values whose noisy counts clear a threshold that a value held
    only by the differing row clears with probability at most delta_t each; categories are sorted by a
    data-independent key and a catch-all absorbs every value that was not released. The whole
    (epsilon, delta) is spent before any mechanism runs, as one entry whose details name the mechanisms
    and their noise, never a value.
    """
    _check_arguments(frame, rng, n_knots, catch_all)
    if not isinstance(ledger, PrivacyLedger):
        raise TypeError(f"ledger must be a tabsynth PrivacyLedger, got {type(ledger).__name__}")
    day_columns = _day_columns(frame, day_columns)
    targets, plans, pair = _column_plans(frame, columns, n_knots, 0.0 < float(delta) < 1.0, day_columns)
    noise = _plan_noise(plans, epsilon, delta)
    if noise is not None:
        mechanism, details = _details(plans, noise, n_knots)
        ledger.spend(PURPOSE, mechanism, noise.epsilon, noise.delta, **details)
    return _discover(frame, targets, plans, pair, noise, rng, n_knots, catch_all, day_columns,
                     f"epsilon {epsilon:.3g}")


@dataclass(frozen=True)
class ComposedDiscovery:
    """A schema discovered by a mu-GDP release that the caller composes with its other Gaussian
    mechanisms (``discover_schema_composed``, ``discover_new_categories_composed``): ``mu`` is 0 when
    nothing needed budget, ``delta`` what its thresholds add; ``purpose``, ``mechanism`` and
    ``details`` are what the caller's ledger entry records."""

    schema: Schema
    mu: float
    delta: float
    purpose: str
    mechanism: str
    details: dict[str, Any]

    @property
    def rho(self) -> float:
        """The release's zCDP cost, mu^2 / 2."""
        return self.mu**2 / 2


def discover_schema_composed(
    frame: pd.DataFrame,
    mu: float,
    delta: float,
    rng: np.random.Generator,
    *,
    columns: Sequence[str] | None = None,
    n_knots: int = 17,
    catch_all: str = "<other>",
    day_columns: Collection[str] = (),
    expected_rows: float | None = None,
) -> ComposedDiscovery:
    """``discover_schema`` as one mu-GDP Gaussian release, for a caller whose accountant composes it
    with its own Gaussian mechanisms (as the synthesizer does with the DP marginals and DP-SGD): the
    release is a Gaussian mechanism of noise multiplier 1/mu on the whole table, so it joins them at
    the price of its mu^2 (zCDP rho = mu^2 / 2) instead of a separate (epsilon, delta) added up by
    basic composition, which wastes most of a small budget. ``delta`` (> 0) bounds the release of a
    category or a number's point mass held by one row, split evenly over the thresholded histograms;
    it adds to the caller's delta. Nothing is charged here: the caller records the returned details.
    ``expected_rows``, a DP estimate of ``frame``'s rows (never the true count), sets the coordinates'
    bin width (``_geo_step``).
    """
    _check_arguments(frame, rng, n_knots, catch_all)
    mu, delta = _check_composed(mu, delta)
    day_columns = _day_columns(frame, day_columns)
    targets, plans, pair = _column_plans(frame, columns, n_knots, True, day_columns)
    noise = _composed_noise(plans, mu, delta)
    mechanism, details = _details(plans, noise, n_knots) if noise is not None else ("none", {})
    schema = _discover(frame, targets, plans, pair, noise, rng, n_knots, catch_all, day_columns,
                       f"mu {mu:.3g} (its share of the budget)", expected_rows)
    return ComposedDiscovery(schema, mu if noise is not None else 0.0, noise.delta if noise is not None else 0.0,
                             PURPOSE, mechanism, details)


def _day_columns(frame: pd.DataFrame, declared: Collection[str]) -> frozenset[str]:
    """The columns whose storage declares calendar dates: ``declared`` (a file's) and the frame's Arrow dates."""
    return frozenset(declared) | {name for name, dtype in frame.dtypes.items() if is_arrow_date(dtype)}


def _column_plans(frame: pd.DataFrame, columns: Sequence[str] | None, n_knots: int, thresholds: bool,
                  day_columns: Collection[str]) -> tuple[list[str], list[_Plan], tuple[str, str] | None]:
    """The columns to discover, what each runs (from dtypes and storage only) and the geo pair among them."""
    targets = _targets(frame, columns)
    kinds = {name: _kind_of(name, frame[name].dtype) for name in targets}
    pair = _geo_pair(targets, kinds)
    if pair is not None:
        kinds[pair[0]], kinds[pair[1]] = "lat", "lon"
    plans = [_Plan(name, kinds[name], _mechanisms(kinds[name], n_knots, thresholds, name in day_columns))
             for name in targets]
    return targets, plans, pair


def _discover(frame: pd.DataFrame, targets: Sequence[str], plans: Sequence[_Plan], pair: tuple[str, str] | None,
              noise: _NoisePlan | None, rng: np.random.Generator, n_knots: int, catch_all: str,
              day_columns: Collection[str], budget: str, expected_rows: float | None = None) -> Schema:
    """Run each column's mechanisms at ``noise`` (already charged) and assemble the schema."""
    specs: dict[str, Column] = {}
    geo_bounds: dict[str, tuple[float, float]] = {}
    unlocated: list[str] = []
    capped: list[str] = []
    unreleased: list[str] = []
    capped_times: list[str] = []
    mixed: list[str] = []
    for plan in plans:
        series = frame[plan.name]
        if plan.kind == "boolean":
            specs[plan.name] = BooleanColumn(plan.name, nullable=can_hold_null(series.dtype),
                                             dtype=dtype_text(series.dtype))
        elif plan.kind == "categorical":
            specs[plan.name], released = _discover_categorical(series, noise.release, rng, catch_all)
            unreleased += [] if released else [plan.name]
            if _mixes_types(specs[plan.name]):
                mixed.append(plan.name)
        elif plan.kind in ("integer", "continuous", "datetime", "duration"):
            if plan.kind in ("datetime", "duration"):
                series = numpy_temporal(series)  # the spec keeps the frame's dtype (below)
                resolution = _time_resolution(series, plan.name in day_columns, noise.resolution_of(plan), rng)
                discover = partial(_discover_datetime if plan.kind == "datetime" else _discover_duration,
                                   unit=resolution)
            else:
                discover = partial(_discover_number, integer=plan.kind == "integer")
            range_noise, knot_noise = noise.of(plan)
            specs[plan.name], located = discover(series, range_noise=range_noise, knot_noise=knot_noise,
                                                 n_knots=n_knots, rng=rng, masses=noise.masses_of(plan))
            if plan.kind in ("datetime", "duration"):
                specs[plan.name] = replace(specs[plan.name], dtype=dtype_text(frame[plan.name].dtype))
            unlocated += [] if located else [plan.name]
            if plan.kind in ("integer", "continuous") and _at_largest_magnitude(specs[plan.name]):
                capped.append(plan.name)
            if plan.kind == "datetime" and _at_datetime_grid_end(specs[plan.name]):
                capped_times.append(plan.name)
        else:
            low, high, located = _dp_coordinate_range(series, plan.kind, noise.of(plan)[0], rng, expected_rows)
            geo_bounds[plan.kind] = (low, high)
            unlocated += [] if located else [plan.name]
    if unlocated:
        # Post-processing of the noisy histograms: saying so reveals nothing more than the release does.
        warnings.warn(f"DP discovery could not locate the range of column(s) {unlocated} at {budget} "
                      f"over {noise.columns} column(s) (too few rows for any bin to clear its "
                      f"threshold of about {noise.range_threshold:.0f} rows); their bounds are "
                      f"a guess near 0 (or the busiest region), so their synthetic values will be wrong. Declare "
                      f"their bounds in a schema, pass a public table, or give discovery more budget "
                      f"(a larger epsilon, or the Synthesizer's discovery_fraction)",
                      DiscoveryWarning, stacklevel=3)
    if unreleased:
        # Post-processing of the thresholded histograms: the released (empty) category lists say it.
        warnings.warn(f"DP discovery released no category of column(s) {unreleased}: at {budget} over "
                      f"{noise.columns} column(s) a category needs about {noise.release.threshold:.0f} rows to "
                      f"clear its threshold (or the column holds no values), so every synthetic value of theirs "
                      f"is the catch-all {catch_all!r}. Declare their categories in a schema, pass a public table, "
                      f"or give discovery more budget (a larger epsilon, or the Synthesizer's discovery_fraction); "
                      f"text that holds numbers or dates is learnt as labels: convert such a column first "
                      f"(pd.to_numeric, pd.to_datetime)",
                      DiscoveryWarning, stacklevel=3)
    if capped:
        # Post-processing too: the released bounds say it.
        warnings.warn(f"DP discovery put the range of column(s) {capped} at the largest magnitude it locates "
                      f"(2^{LARGEST_EXPONENT}, about {LARGEST_MAGNITUDE:.2g}): larger values are clamped to it, so "
                      f"their synthetic values will be wrong. Declare their bounds in a schema, or store such "
                      f"identifiers or magnitudes as text or in smaller units", DiscoveryWarning, stacklevel=3)
    if capped_times:
        # Post-processing too: the released bounds say it.
        warnings.warn(f"DP discovery put the range of column(s) {capped_times} at an end of the months it locates "
                      f"({DATETIME_GRID[0]} to {DATETIME_GRID[1]}): timestamps beyond it (historical dates, a "
                      f"sentinel such as 9999-12-31), if any, are clamped to it, and their synthetic values will be "
                      f"wrong. Declare their bounds in a schema", DiscoveryWarning, stacklevel=3)
    if mixed:
        # Post-processing: the released categories and the catch-all say it.
        warnings.warn(f"column(s) {mixed} hold categories that are not text (numbers, say), and the rows of values "
                      f"too rare for DP discovery to release are sampled as the catch-all {catch_all!r}: their "
                      f"synthetic values mix the two types, which a Parquet writer refuses and comparisons with "
                      f"numbers skip. Convert such a column to text first (astype(str)), or declare its categories "
                      f"in a schema with a catch-all of their type (CategoricalColumn(..., catch_all=-1))",
                      DiscoveryWarning, stacklevel=3)
    if pair is not None:
        lat, lon = pair
        name = _geo_name(lat, set(specs))
        region = BoundingBox(*geo_bounds["lat"], *geo_bounds["lon"])
        specs[lat] = GeoPointColumn(name, nullable=True, lat=lat, lon=lon, region=region,
                                    lat_dtype=dtype_text(frame[lat].dtype), lon_dtype=dtype_text(frame[lon].dtype))
    ordered = [specs[name] for name in targets if name in specs]
    return Schema(tuple(ordered), tuple(targets))


def discover_new_categories(frame: pd.DataFrame, schema: Schema, ledger: PrivacyLedger, epsilon: float,
                            delta: float, rng: np.random.Generator) -> Schema:
    """``schema`` (inferred from PUBLIC data) with the categories of the private ``frame`` it lacks, found under DP.

    For every categorical column, the private values outside its categories go through one
    ``CategoryRelease`` of all the categorical columns (``plan_category_release``: one row touches every
    column, so their noise is composed); a value is added only if its noisy count clears
    the threshold, so a category held by a handful of records never appears. Restricting a column to its
    unknown values is a per-row map, so each row still adds 1 to at most one count. The whole
    (epsilon, delta) is charged as one ledger entry before any mechanism runs, whether or not anything is
    found (whether the private year has new categories is itself private). Rows holding a value that is
    neither public nor released are handled by ``known_rows``.
    """
    categorical = [c for c in schema.columns if isinstance(c, CategoricalColumn)]
    if not categorical:
        return schema
    release = plan_category_release(float(epsilon), float(delta), len(categorical))
    epsilon_each, delta_each = float(epsilon) / len(categorical), float(delta) / len(categorical)
    ledger.spend(NEW_CATEGORIES_PURPOSE, release.mechanism, float(epsilon), float(delta),
                 composition=_RELEASE_COMPOSITION[release.mechanism],
                 columns={c.name: {"epsilon": epsilon_each, "delta": delta_each} for c in categorical},
                 categories=release.details(), note=_NEW_CATEGORIES_NOTE)
    return _with_new_categories(frame, schema, categorical, release, rng)


def discover_new_categories_composed(frame: pd.DataFrame, schema: Schema, mu: float, delta: float,
                                     rng: np.random.Generator) -> ComposedDiscovery:
    """``discover_new_categories`` as one mu-GDP Gaussian release for a caller whose accountant composes
    it with its own Gaussian mechanisms (see ``discover_schema_composed``): the h categorical columns'
    counts get noise sqrt(h) / mu each, and ``delta`` (> 0), split over the columns, bounds the release
    of a value held by one row. Nothing is charged here."""
    mu, delta = _check_composed(mu, delta)
    categorical = [c for c in schema.columns if isinstance(c, CategoricalColumn)]
    if not categorical:
        return ComposedDiscovery(schema, 0.0, 0.0, NEW_CATEGORIES_PURPOSE, "none", {})
    release = gaussian_category_release(0.0, delta, len(categorical), math.sqrt(len(categorical)) / mu, 0.0)
    details = {"composition": _NEW_CATEGORIES_COMPOSITION, "columns": [c.name for c in categorical],
               "categories": _composed_release_details(release), "note": _NEW_CATEGORIES_NOTE}
    return ComposedDiscovery(_with_new_categories(frame, schema, categorical, release, rng), mu, delta,
                             NEW_CATEGORIES_PURPOSE, release.mechanism, details)


_NEW_CATEGORIES_COMPOSITION = ("one Gaussian mechanism on the categorical columns' counts of values the schema lacks, "
                                "mu-GDP, composed by the caller's accountant with its other Gaussian mechanisms; "
                                "delta bounds the release of a value held by one row")
_NEW_CATEGORIES_NOTE = ("private categories missing from the public table; rows holding a category that is "
                        "neither public nor released are left out of training")


def _with_new_categories(frame: pd.DataFrame, schema: Schema, categorical: Sequence[CategoricalColumn],
                         release: CategoryRelease, rng: np.random.Generator) -> Schema:
    """``schema`` with each categorical column's private values outside its categories that ``release`` lets out."""
    for column in categorical:
        values = frame[column.name].to_numpy(dtype=object)
        unknown = positions_in(pd.Index(column.levels, dtype=object), values) < 0  # and nulls, left out by the release
        released = _labels(column.name, list(release.release(values[unknown], rng)))
        if released:
            schema = schema.replace_column(replace(column, categories=column.categories + tuple(_sorted(released))))
    return schema


def _composed_release_details(release: CategoryRelease) -> dict[str, Any]:
    """A composed release's ledger details: without an epsilon, which the caller's accountant states."""
    return {key: value for key, value in release.details().items() if key != "epsilon"}


def _check_composed(mu: Any, delta: Any) -> tuple[float, float]:
    """A composed release's mu (positive, finite) and delta (in (0, 1)), checked."""
    mu, delta = float(mu), float(delta)
    if not (math.isfinite(mu) and mu > 0):
        raise ValueError(f"mu must be a positive finite number, got {mu!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return mu, delta


def known_rows(schema: Schema) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A per-row filter: keeps the rows whose every categorical value is a category or null, or has a catch-all."""
    checks = [(c.name, pd.Index(c.levels, dtype=object)) for c in schema.columns
              if isinstance(c, CategoricalColumn) and c.catch_all is None]

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        mask = np.ones(len(frame), dtype=bool)
        for name, levels in checks:
            series = frame[name]
            values = series.astype(object) if isinstance(series.dtype, pd.CategoricalDtype) else series
            mask &= missing_values(series) | (positions_in(levels, values) >= 0)
        return frame if mask.all() else frame[mask]

    return keep


# --- planning (dtypes only) -----------------------------------------------------------------------


def _check_arguments(frame: Any, rng: Any, n_knots: Any, catch_all: Any) -> None:
    """Reject bad arguments up front; the row count is never checked, since it is private."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if isinstance(n_knots, bool) or not isinstance(n_knots, (int, np.integer)) or not 2 <= n_knots <= MAX_KNOTS:
        raise ValueError(f"n_knots must be an integer in [2, {MAX_KNOTS}], got {n_knots!r}")
    if catch_all is None or is_null(catch_all):
        raise ValueError("catch_all must be a non-null value (it labels categories that were not released)")
    names = list(frame.columns)
    non_strings = [n for n in names if not isinstance(n, str)]
    if non_strings:
        raise SchemaError(f"frame column names must be strings, got {non_strings[:5]}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SchemaError(f"frame has duplicate column names: {duplicates}")


def _targets(frame: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    """The columns to discover, in the frame's order."""
    if columns is None:
        targets = list(frame.columns)
    else:
        if isinstance(columns, str):
            raise TypeError("columns must be a sequence of column names, not a single string")
        wanted = list(columns)
        unknown = [c for c in wanted if c not in frame.columns]
        if unknown:
            raise SchemaError(f"columns {unknown} are not in the frame; it has {list(frame.columns)}")
        targets = [c for c in frame.columns if c in set(wanted)]
    if not targets:
        raise SchemaError("no columns to discover: the frame (or the columns subset) is empty")
    return targets


def _kind_of(name: str, dtype: Any) -> str:
    """The column kind implied by a pandas dtype (storage metadata, not data)."""
    if isinstance(dtype, pd.CategoricalDtype) or is_arrow_dictionary(dtype):
        return "categorical"
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if is_duration_dtype(dtype):
        return "duration"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype) or is_arrow_decimal(dtype):
        return "continuous"
    if pd.api.types.is_string_dtype(dtype):
        return "categorical"
    raise SchemaError(f"column {name!r}: dtype {dtype} has no discoverable kind; describe it in a schema "
                      f"or convert it (bool, integer, float, Arrow decimal, datetime64, timedelta64, string/object, "
                      f"category or Arrow dictionary)")


def _geo_pair(targets: Sequence[str], kinds: dict[str, str]) -> tuple[str, str] | None:
    """One (lat, lon) pair of float columns found by NAME alone (a range check would read private data)."""
    floats = [c for c in targets if kinds[c] == "continuous"]
    lats = [c for c in floats if _LAT.search(c)]
    lons = [c for c in floats if _LON.search(c) and c not in lats]
    return (lats[0], lons[0]) if len(lats) == 1 and len(lons) == 1 else None


def _geo_name(lat: str, taken: set[str]) -> str:
    """The pair's spec name: the latitude column's prefix, kept distinct from the other specs."""
    name = _LAT.sub("", lat).strip("_") or "location"
    while name in taken:
        name += "_point"
    return name


def _mechanisms(kind: str, n_knots: int, point_masses: bool, days: bool = False) -> tuple[str, ...]:
    """The mechanisms a column of ``kind`` runs (none for booleans: both values are known from the dtype);
    ``point_masses``: whether numbers release theirs (which needs delta > 0); ``days``: a column the
    storage declares dates, whose resolution is known (else a timestamp's or duration's is released)."""
    if kind == "boolean":
        return ()
    if kind == "categorical":
        return (HISTOGRAM_MECHANISM,)
    resolution = (RESOLUTION_MECHANISM,) if kind in ("datetime", "duration") and not days else ()
    if kind in ("lat", "lon") or n_knots <= 2:
        return (RANGE_MECHANISM, *resolution)
    if kind in ("integer", "continuous", "datetime", "duration") and point_masses:
        return (RANGE_MECHANISM, QUANTILE_MECHANISM, POINT_MASS_MECHANISM, *resolution)
    return (RANGE_MECHANISM, QUANTILE_MECHANISM, *resolution)


@dataclass(frozen=True)
class _NoisePlan:
    """How discovery's (epsilon, delta) becomes noise on each histogram; chosen from parameters alone.

    ``composition`` "basic": each of the ``columns`` budgeted columns gets epsilon/k, its histograms
    Laplace noise (a column's range and knots histograms half of it each), and the categorical columns
    ``plan_category_release`` at their shares and the whole delta. "gaussian": every histogram of every
    column gets Gaussian noise; a column's share of mu^2 is 1/k of that of the whole release, which is
    mu-GDP (composition of Gaussian mechanisms, adaptive bins included, is exact in GDP) and so
    (epsilon, delta_gaussian)-DP by the Gaussian privacy curve; each categorical column's threshold adds
    the chance delta_t that a value held only by the differing row clears it, so delta = delta_gaussian
    + h * delta_t. "composed" (``_composed_noise``): the Gaussian plan at a given mu, not calibrated
    here; the caller's accountant composes it with its own Gaussian mechanisms and delta bounds the
    thresholds alone. With delta > 0, each of the m numbers and dates spends ``POINT_MASS_PART``
    of its knots' share on a thresholded release of its values (``point_masses``), another delta_t each:
    delta_t is delta's thresholded part over h + m.
    """

    composition: str
    columns: int
    epsilon: float
    delta: float  # what the entry is charged: 0 for basic composition without categorical columns
    range_noise: CountNoise  # the range histogram of a column that also buys knots (and its binary code's second)
    knot_noise: CountNoise
    sole_noise: CountNoise  # the one histogram of a geo coordinate or a number without knots
    release: CategoryRelease | None
    delta_gaussian: float = 0.0
    point_masses: CategoryRelease | None = None  # a number's release of its point masses (the same for each)

    def of(self, plan: _Plan) -> tuple[CountNoise, CountNoise | None]:
        """The noise of ``plan``'s range histogram and of its knots' share (None if it buys no knots):
        the noise of its knots' histogram, or of its second range histogram if it is a binary code. A
        timestamp or duration leaves ``RESOLUTION_PART`` of both to its resolution (the two stay alike,
        as a binary code's sum of them needs)."""
        range_noise, knot_noise = ((self.range_noise, self.knot_noise) if QUANTILE_MECHANISM in plan.mechanisms
                                   else (self.sole_noise, None))
        if RESOLUTION_MECHANISM in plan.mechanisms:
            range_noise = range_noise.part(1.0 - RESOLUTION_PART)
            knot_noise = None if knot_noise is None else knot_noise.part(1.0 - RESOLUTION_PART)
        return range_noise, knot_noise

    def resolution_of(self, plan: _Plan) -> CountNoise | None:
        """The noise of ``plan``'s resolution histogram, or None: ``RESOLUTION_PART`` of the budget of its
        range histogram and of its knots' histogram (point masses keep theirs)."""
        if RESOLUTION_MECHANISM not in plan.mechanisms:
            return None
        if QUANTILE_MECHANISM not in plan.mechanisms:
            return self.sole_noise.part(RESOLUTION_PART)
        knots = (1.0 - RANGE_SHARE) / RANGE_SHARE  # the knots' share over the range's
        if POINT_MASS_MECHANISM in plan.mechanisms:
            knots *= 1.0 - POINT_MASS_PART
        return self.range_noise.part(RESOLUTION_PART * (1.0 + knots))

    def masses_of(self, plan: _Plan) -> tuple[CountNoise, CategoryRelease] | None:
        """For a number that releases point masses: the noise of its knots' histogram beside them (the
        rest of the knots' share) and their release; else None."""
        if POINT_MASS_MECHANISM not in plan.mechanisms:
            return None
        return self.of(plan)[1].part(1.0 - POINT_MASS_PART), self.point_masses

    @property
    def range_threshold(self) -> float:
        """The count a single bin of a numeric range histogram must reach at the first level (typical
        number of tests)."""
        return self.range_noise.sum_threshold(1, RANGE_FAILURE / _REFERENCE_RANGE_TESTS)

    def score(self, plans: Sequence[_Plan]) -> float:
        """Mean log of the budgeted columns' thresholds (lower locates more): a categorical column's
        release threshold; a range's first-level and one-bin growth thresholds, the first set by far
        tails (where a Gaussian's are lighter), the second by moderate ones (where Laplace's are)."""
        logs = []
        for plan in plans:
            if plan.kind == "categorical":
                logs.append(math.log(self.release.threshold))
            elif plan.needs_budget:
                noise = self.of(plan)[0]
                logs += [math.log(noise.sum_threshold(1, RANGE_FAILURE / _REFERENCE_RANGE_TESTS)),
                         math.log(_growth_threshold(1, noise))]
        return float(np.mean(logs))

    def details(self) -> dict[str, Any]:
        """What the ledger records: the composition and each histogram's noise (parameters, no data)."""
        out: dict[str, Any] = {"composition": self.composition, "columns": self.columns}
        if self.composition == GAUSSIAN_PLAN:
            out.update(mu=1.0 / self.sole_noise.scale * math.sqrt(self.columns), delta_gaussian=self.delta_gaussian)
        for name, noise in (("range_and_knots_histograms", self.range_noise), ("single_histogram", self.sole_noise)):
            out[name] = {"noise": noise.kind, "scale": noise.scale}
        return out


def _plan_noise(plans: Sequence[_Plan], epsilon: float, delta: float) -> _NoisePlan | None:
    """The plan (basic composition of Laplace histograms, or one Gaussian release) whose thresholds score
    lower (``_NoisePlan.score``); None if no column needs budget. The Gaussian wins from about two
    columns on (Adult's 15 at epsilon 0.3, delta 3e-6: a range bin needs 320 rows to clear its first
    threshold, against 1,324 with Laplace), as its noise grows with sqrt(k), not k."""
    budgeted = [p for p in plans if p.needs_budget]
    if not budgeted:
        return None
    k, h = len(budgeted), sum(p.kind == "categorical" for p in plans)
    m = sum(POINT_MASS_MECHANISM in p.mechanisms for p in plans)
    thresholded = h + m
    epsilon = float(epsilon)
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive finite number to discover {k} column(s), got {epsilon!r}")
    delta = float(delta)
    if h and not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1) to discover {h} categorical column(s) "
                         f"(an unknown domain needs delta > 0), got {delta!r}")
    each = epsilon / k
    # A release of point masses records, as the categories' does, what its m numbers spend together:
    # basic, m times each number's epsilon and delta; Gaussian, the whole release's.
    laplace_knots = CountNoise.laplace(each * (1 - RANGE_SHARE))
    laplace_masses = laplace_knots.part(POINT_MASS_PART)
    mass_epsilon = 1.0 / laplace_masses.scale
    basic_masses = (CategoryRelease(LAPLACE_HISTOGRAMS, m, m * mass_epsilon, m * delta / thresholded,
                                    laplace_masses.scale, histogram_threshold(mass_epsilon, delta / thresholded))
                    if m else None)
    candidates = [_NoisePlan(BASIC_PLAN, k, epsilon, delta if thresholded else 0.0,
                             CountNoise.laplace(each * RANGE_SHARE), laplace_knots, CountNoise.laplace(each),
                             plan_category_release(each * h, delta * h / thresholded, h) if h else None,
                             point_masses=basic_masses)]
    if 0.0 < delta < 1.0:
        for share in (GAUSSIAN_DELTA_SHARES if thresholded else (1.0,)):
            column_std = gaussian_noise_std(epsilon, share * delta, math.sqrt(k))  # std of a column's one histogram
            release = gaussian_category_release(epsilon, delta, h, column_std, share, thresholded) if h else None
            range_noise, knot_noise, sole_noise, mass_std = _gaussian_histograms(column_std)
            gaussian_masses = gaussian_category_release(epsilon, delta, m, mass_std, share, thresholded) if m else None
            candidates.append(_NoisePlan(GAUSSIAN_PLAN, k, epsilon, delta, range_noise, knot_noise, sole_noise,
                                         release, share * delta, gaussian_masses))
    return min(candidates, key=lambda candidate: candidate.score(plans))


def _gaussian_histograms(column_std: float) -> tuple[CountNoise, CountNoise, CountNoise, float]:
    """The Gaussian noise of a column's histograms when its whole share of mu^2 is 1 / column_std^2: its
    range and knots histograms (half the share each), its sole histogram (all of it; a geo coordinate,
    a number without knots), and the std of a number's point masses (half of the knots' share)."""
    knots = CountNoise("gaussian", column_std / math.sqrt(1 - RANGE_SHARE))
    return (CountNoise("gaussian", column_std / math.sqrt(RANGE_SHARE)), knots, CountNoise("gaussian", column_std),
            knots.part(POINT_MASS_PART).scale)


def _composed_noise(plans: Sequence[_Plan], mu: float, delta: float) -> _NoisePlan | None:
    """The Gaussian plan of ``_plan_noise`` at a given mu (``discover_schema_composed``): the k budgeted
    columns' histograms share mu^2 as there, and ``delta`` is split evenly over the thresholded
    histograms (categorical columns' and numbers' point masses); None if no column needs budget."""
    budgeted = [p for p in plans if p.needs_budget]
    if not budgeted:
        return None
    k, h = len(budgeted), sum(p.kind == "categorical" for p in plans)
    m = sum(POINT_MASS_MECHANISM in p.mechanisms for p in plans)
    column_std = math.sqrt(k) / mu  # a column's share of mu^2 is 1/k
    range_noise, knot_noise, sole_noise, mass_std = _gaussian_histograms(column_std)
    # No share of delta for a Gaussian curve: all of it bounds the h + m thresholds (epsilon is the caller's).
    release = gaussian_category_release(0.0, delta, h, column_std, 0.0, h + m) if h else None
    masses = gaussian_category_release(0.0, delta, m, mass_std, 0.0, h + m) if m else None
    return _NoisePlan(COMPOSED_PLAN, k, 0.0, delta if h + m else 0.0, range_noise, knot_noise, sole_noise, release,
                      point_masses=masses)


def _details(plans: Sequence[_Plan], noise: _NoisePlan, n_knots: int) -> tuple[str, dict[str, Any]]:
    """The mechanism name and details of the whole discovery's ONE ledger entry (parameters, no data),
    recorded before any mechanism touches the data."""
    per_column: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for plan in plans:
        if not plan.needs_budget:
            continue
        if plan.kind == "categorical":
            used.add(noise.release.mechanism)
            split = {noise.release.mechanism: {"noise": "gaussian" if noise.release.mechanism == GAUSSIAN_HISTOGRAMS
                                               else "laplace", "scale": noise.release.noise,
                                               "threshold": noise.release.threshold}}
        else:
            used.update(plan.mechanisms)
            range_noise, knot_noise = noise.of(plan)
            split = {RANGE_MECHANISM: {"noise": range_noise.kind, "scale": range_noise.scale}}
            masses = noise.masses_of(plan)
            if knot_noise is not None:
                knots = knot_noise if masses is None else masses[0]
                tails = plan.kind in ("integer", "continuous")
                split[QUANTILE_MECHANISM] = {"noise": knots.kind, "scale": knots.scale,
                                             "quantiles": len(knot_levels(n_knots, tails)),
                                             "tail_quantiles_kept": "where an outer segment is long" if tails else "none"}
            if masses is not None:
                kind = "gaussian" if masses[1].mechanism == GAUSSIAN_HISTOGRAMS else "laplace"
                split[POINT_MASS_MECHANISM] = {"noise": kind, "scale": masses[1].noise,
                                               "threshold": masses[1].threshold, "min_share": POINT_MASS_SHARE,
                                               "at_most": MAX_POINT_MASSES}
            if knot_noise is not None and plan.kind in ("integer", "duration"):  # see _discover_number
                split[QUANTILE_MECHANISM]["if_binary_code"] = (
                    f"a second {RANGE_MECHANISM} instead" + (f" of this and {POINT_MASS_MECHANISM}" if masses else ""))
            resolution = noise.resolution_of(plan)
            if resolution is not None:
                split[RESOLUTION_MECHANISM] = {"noise": resolution.kind, "scale": resolution.scale,
                                               "units": list(RESOLUTIONS), "slack": RESOLUTION_SLACK,
                                               "noise_allowance_stds": RESOLUTION_STDS,
                                               "evidence_stds": RESOLUTION_EVIDENCE_STDS}
        entry: dict[str, Any] = {"kind": plan.kind, "mechanisms": split}
        if noise.composition == BASIC_PLAN:
            entry["epsilon"] = noise.epsilon / noise.columns
        per_column[plan.name] = entry
    extra = {} if noise.release is None else {
        "categories": (_composed_release_details(noise.release) if noise.composition == COMPOSED_PLAN
                       else noise.release.details())}
    return "+".join(sorted(used)), dict(composition=_COMPOSITION[noise.composition], noise=noise.details(),
                                        columns=per_column, **extra)


# --- mechanisms per kind --------------------------------------------------------------------------


def _dp_range(values: np.ndarray, edges: np.ndarray, noise: CountNoise, rng: np.random.Generator,
              anchor: int = 0) -> tuple[float, float, bool]:
    """DP (lower, upper): outermost edges of the bins or bin groups whose noisy count clears a threshold.

    Bins [edges[i], edges[i+1]) are fixed in advance and values beyond the ends fall in the end bins, so
    one row changes one count by one (sensitivity 1) and the histogram with ``noise`` is DP; the rest
    is post-processing. Sparse tails are caught by summing runs of 2..16 bins (aligned at ``anchor``), each
    level with a threshold that an all-empty group clears with probability <= beta/(levels*groups), so
    with probability >= 1 - beta no empty region, e.g. one holding a lone outlier, widens the range.
    The finest level that clears sets the range; coarser groups lying wholly outside it extend it.
    Then the range grows outwards while the next bin clears a lower threshold, one that an empty bin
    clears with probability ``RANGE_GROWTH_FAILURE``, or else the next 2, 4 or 8 bins together clear
    theirs (``RUN_GROWTH_FAILURE``; over these even bins also 16 or 32): a sparse tail beside the bulk
    (Adult's ages above 64 at epsilon 0.01) is kept, and so is one spread over bins too fine to clear
    alone (the single-year bins of small integers: children's ages, rare race codes between common
    ones). When nothing clears, the range starts from the noisy mode of the coarsest level (numbers:
    see ``_range_of``'s ``zero``, which also takes in a one-signed range's mirror image across 0 when
    that region clears, and extends a range towards 0 by the tail its shape predicts).
    """
    return _range_of(noisy_histogram(values, edges, noise, rng), edges, noise, 1, anchor, None)


def _range_of(noisy: np.ndarray, edges: np.ndarray, noise: CountNoise, copies: int, anchor: int,
              zero: int | None) -> tuple[float, float, bool]:
    """``_dp_range``'s bounds read off ``noisy``, the sum of ``copies`` independent histograms with
    ``noise`` each (post-processing): every threshold is that of a sum of ``copies`` times as many
    noises; and whether any bin or group cleared a threshold (else the bounds are a guess).

    For numbers, ``zero`` is the bin holding 0 alone: a point mass there is common (incomes, amounts,
    counts) and may lie far from the bulk beyond empty bins (ACS incomes: 13% zeros, then dollars from
    ~100 up), so it is tested on its own, at a threshold an empty bin clears with probability
    ``RANGE_FAILURE``, and joins the range if it clears. When nothing clears (too few values to locate
    at this epsilon), the range starts from that bin: a guess, not a noisy mode far out in empty bins.
    """
    n_bins = len(edges) - 1
    levels = [g for g in RANGE_LEVELS if g <= n_bins]
    lower = upper = None
    for size in levels:
        _, first = np.unique((np.arange(n_bins) - anchor) // size, return_index=True)
        sums = np.add.reduceat(noisy, first)
        low_edges, high_edges = edges[first], edges[np.append(first[1:], n_bins)]
        tests = len(first) * len(levels)
        cleared = sums >= noise.sum_threshold(copies * size, RANGE_FAILURE / tests)
        if not cleared.any():
            continue
        # Cleared groups join in a run from the range (at the first level that clears, from the largest
        # sum) outwards; a group apart from that run only at ``APART_FAILURE``.
        if lower is None:
            start = stop = int(np.argmax(np.where(cleared, sums, -np.inf)))
            lower, upper = low_edges[start], high_edges[stop]
        else:
            start = int(np.searchsorted(high_edges, lower, side="right"))  # the group holding lower
            stop = int(np.searchsorted(low_edges, upper, side="left")) - 1  # the group holding upper's left
        while start > 0 and cleared[start - 1]:
            start -= 1
            lower = min(lower, low_edges[start])
        while stop + 1 < len(sums) and cleared[stop + 1]:
            stop += 1
            upper = max(upper, high_edges[stop])
        apart = np.flatnonzero(sums >= noise.sum_threshold(copies * size, APART_FAILURE / tests))
        if apart.size and high_edges[apart[0]] <= lower:
            lower = low_edges[apart[0]]
        if apart.size and low_edges[apart[-1]] >= upper:
            upper = high_edges[apart[-1]]
    if zero is not None and noisy[zero] >= noise.sum_threshold(copies, RANGE_FAILURE):
        lower = edges[zero] if lower is None else min(lower, edges[zero])
        upper = edges[zero + 1] if upper is None else max(upper, edges[zero + 1])
    located = lower is not None
    if lower is None and zero is not None:  # nothing cleared: the bin of 0, a data-independent guess
        lower, upper = edges[zero], edges[zero + 1]
    elif lower is None:  # or the noisy mode of the coarsest level
        _, first = np.unique((np.arange(n_bins) - anchor) // levels[-1], return_index=True)
        mode = int(np.argmax(np.add.reduceat(noisy, first)))
        lower, upper = edges[first[mode]], edges[first[mode + 1] if mode + 1 < len(first) else n_bins]
    # Sparse tails: grow the range outwards while the next bin, or the next run of bins together, clears
    # its growth threshold (``_growth_threshold``).
    low, high = int(np.searchsorted(edges, lower)), int(np.searchsorted(edges, upper))  # bins [low, high)
    # Growth does not cross 0: negative values beside a non-negative range (or positive ones beside a
    # negative range) need a threshold that guards every bin, as a lone false step would make a count
    # or an amount negative.
    floor = zero if zero is not None and low >= zero else 0
    ceiling = zero + 1 if zero is not None and high <= zero else n_bins
    sizes = GROWTH_SIZES if zero is not None else EVEN_GROWTH_SIZES
    low, high = _grown(noisy, low, high, floor, ceiling, noise, copies, sizes)
    # A range of one sign may still have the other beside it (a quantity centred on 0: the bulk of each
    # sign spread over many fine bins near 0 need not clear anywhere at first): the mirror image of the
    # range across 0 joins it if its bins' sum clears the threshold of one test, then grows outwards.
    if zero is not None and (floor == zero or ceiling == zero + 1):
        if floor == zero:  # bins i and 2 * zero - 1 - i mirror each other across 0
            start, stop = max(2 * zero - high, 0), 2 * zero - low
        else:
            start, stop = max(2 * zero - min(high, zero), high), min(2 * zero - low, n_bins)
        if stop > start and noisy[start:stop].sum() >= noise.sum_threshold(copies * (stop - start), RANGE_FAILURE):
            low, high = _grown(noisy, min(low, start), max(high, stop), 0, n_bins, noise, copies, sizes)
    if zero is not None and located:
        low, high = _tail_extended(noisy, edges, low, high, zero, noise, copies)
    return float(edges[low]), float(edges[high]), located


def _grown(noisy: np.ndarray, low: int, high: int, floor: int, ceiling: int, noise: CountNoise,
           copies: int, sizes: Sequence[int] = GROWTH_SIZES) -> tuple[int, int]:
    """Bins [low, high) grown outwards by ``_growth``, down to ``floor`` and up to ``ceiling`` at most."""
    while grown := _growth(noisy[floor:low][::-1], noise, copies, sizes):
        low -= grown
    while grown := _growth(noisy[high:ceiling], noise, copies, sizes):
        high += grown
    return low, high


def _tail_extended(noisy: np.ndarray, edges: np.ndarray, low: int, high: int, zero: int, noise: CountNoise,
                   copies: int) -> tuple[int, int]:
    """Bins [low, high) of a one-signed number's range (over ``_numeric_edges``; ``zero``: the bin of 0)
    extended towards 0 by the tail its shape predicts (post-processing of the noisy histogram).

    Growth stops where the bins beyond hold too few rows to clear a threshold, and towards 0 the
    quarter-octave bins grow ever finer: in a small table a quantity whose density reaches 0 loses
    its smallest values (3,000 rows uniform on [0, 100], noise std 28 per bin: 6% below the range on
    average). The octaves inside the end towards 0, noisy counts c1 (at the end), c2 and c3 where the
    range holds them, predict the octaves beyond as a geometric run of ratio r, the smaller of c1 / c2
    and (c1 + c2) / (c2 + c3) (a power-law density near 0; at most ``TAIL_RATIO``), holding
    c1 * r / (1 - r) rows. While that exceeds ``TAIL_SHARE`` of the noisy total, the end moves one
    octave towards 0 if the next octave's noisy count bears the prediction out (``TAIL_EVIDENCE``,
    ``TAIL_SIGNAL``, ``TAIL_STDS``);
    otherwise it takes the share of that octave's bins that the count bears out, and stops: a sharp
    end (uniform on [1000, 5000]) moves by a bin or none, and under heavy noise no chance walk of
    whole octaves carries it far. Nothing is extrapolated from an end octave whose count is under
    ``TAIL_PRECISION`` noise stds. Past the smallest magnitude the end goes to 0 itself (integers
    stop at 1 or -1: their bin of 0 is a point mass tested on its own). Ends away from 0 are left
    alone: there a wrong extrapolation would add values far beyond the data, while towards 0 it adds
    at most the end's own magnitude.
    """
    total = max(float(noisy.sum()), 1.0)
    smallest = float(edges[zero + 1])

    def bins(a: float, b: float) -> tuple[int, int]:
        """The bins of the values between a and b, as [first, stop)."""
        return int(np.searchsorted(edges, min(a, b))), int(np.searchsorted(edges, max(a, b)))

    def extended(end: int) -> int:
        """The end (an edge index: the lower one of a positive range, the upper one of a negative range)
        moved towards 0."""
        value = float(edges[end])
        upper = value < 0.0
        octaves = [bins(value * 2.0**k, value * 2.0**(k + 1)) for k in range(3)]  # from the end inwards
        inside = [(a, b) for a, b in octaves if low <= a < b <= high]
        if len(inside) < 2 or inside != octaves[:len(inside)]:
            return end  # the range spans fewer than two whole octaves from this end
        counts = [float(noisy[a:b].sum()) for a, b in inside]
        if not 0.0 < counts[0] < counts[1] or sum(counts[1:]) <= 0.0:
            return end  # no density falling off towards 0
        # The local ratio, or the pooled one where it is smaller: a bulk peaking in the second octave
        # (a normal's left tail) has c1 / c2 small but (c1 + c2) / (c2 + c3) near 1.
        ratio = min(counts[0] / counts[1], sum(counts[:-1]) / sum(counts[1:]), TAIL_RATIO)
        first_std, last, step = noise.sum_std(copies * (inside[0][1] - inside[0][0])), counts[0], 0
        if last < TAIL_PRECISION * first_std:
            return end  # too noisy to extrapolate from
        while last * ratio / (1.0 - ratio) > TAIL_SHARE * total:
            value = float(edges[end])
            if abs(value) <= smallest:
                return end if smallest == 1.0 else zero  # integers keep their point mass at 0 apart
            first, stop = bins(value, value / 2.0)
            last, step = last * ratio, step + 1
            own_std = noise.sum_std(copies * (stop - first))
            spread = math.hypot(own_std, first_std * ratio**step)
            observed = float(noisy[first:stop].sum())
            if observed < max(TAIL_EVIDENCE * last, last - TAIL_STDS * spread, TAIL_SIGNAL * own_std):
                # The tail ends inside this octave: take the share of its bins that its count bears out.
                take = int(round((stop - first) * min(max(observed, 0.0) / last, 1.0)))
                return end + take if upper else end - take
            end = stop if upper else first
        return end

    if edges[low] > 0.0:
        return extended(low), high
    if edges[high] < 0.0:
        return low, extended(high)
    return low, high


def _growth(outwards: np.ndarray, noise: CountNoise, copies: int = 1, sizes: Sequence[int] = GROWTH_SIZES) -> int:
    """Bins to grow a range by, given the noisy counts beyond it from the nearest outwards: the first of
    ``sizes`` bins whose sum clears its ``_growth_threshold``, and of a run that clears, the prefix
    with the largest noisy sum (empty bins at the run's far end add only noise), or 0."""
    for size in sizes:
        if size <= len(outwards) and outwards[:size].sum() >= _growth_threshold(size, noise, copies):
            return int(np.argmax(np.cumsum(outwards[:size]))) + 1
    return 0


def _growth_threshold(size: int, noise: CountNoise, copies: int = 1) -> float:
    """Threshold for growing a range by ``size`` bins (of ``copies`` summed histograms): an empty bin
    clears it with probability ``RANGE_GROWTH_FAILURE`` (a false step widens the range by one bin), an
    empty run of more bins with probability ``RUN_GROWTH_FAILURE``."""
    failure = RANGE_GROWTH_FAILURE if size == 1 else RUN_GROWTH_FAILURE
    return noise.sum_threshold(copies * size, failure)


def _dp_knots(values: np.ndarray, lower: float, upper: float, noise: CountNoise, n_knots: int, integral: bool,
              rng: np.random.Generator, numeric: bool = True) -> tuple[tuple[float, ...] | None, float]:
    """Knots [lower, DP inner quantiles..., upper] read off ONE noisy histogram over ``_knot_edges`` of the
    bounds (each row in one bin, so sensitivity 1), all knots sharing its noise; and the histogram's
    noisy total. The quantiles are at ``knot_levels`` (the tail ones keep the outer segments from
    spreading rows over the slack between the data and its bounds).

    A quantile inside the bin that holds 0 alone is 0, so that a point mass at 0 (zero-inflated amounts)
    repeats among the knots and the encoder keeps it one cell.
    """
    edges = _knot_edges(lower, upper, integral, numeric)
    noisy = noisy_histogram(np.clip(values, lower, upper), edges, noise, rng)
    inner = quantiles_of_counts(noisy, edges, knot_levels(n_knots, tails=numeric), integer=integral)
    if numeric and lower <= 0.0 < upper:
        inner[(inner >= 0.0) & (inner < edges[np.searchsorted(edges, 0.0) + 1])] = 0.0
    return quantile_knots(bounded_knots(lower, upper, inner, n_knots), integral=integral), float(noisy.sum())


def knot_levels(n_knots: int, tails: bool = True) -> np.ndarray:
    """Quantile levels of a number's inner DP knots: those of ``n_knots`` evenly spaced knots (the ends
    are the bounds) and, with ``tails`` and where finer, ``TAIL_KNOT_SHARE`` from each end (numbers
    only: the tail knots were not measured on datetimes and durations, whose bins are even)."""
    levels = np.linspace(0.0, 1.0, n_knots)[1:-1]
    if tails and len(levels) and TAIL_KNOT_SHARE < levels[0]:
        levels = np.concatenate([[TAIL_KNOT_SHARE], levels, [1.0 - TAIL_KNOT_SHARE]])
    return levels


def bounded_knots(lower: float, upper: float, inner: np.ndarray, n_knots: int) -> np.ndarray:
    """[lower, *inner, upper] for ``inner`` quantiles at ``knot_levels(n_knots)``, with a tail knot only
    where the outer segment without it is longer than the next one inwards (a thin tail, or slack
    past the data) and the knot lies strictly inside it: a repeated knot would make a point mass of a
    value that no count showed to be heavy. Where the data ends about where its bound lies (Adult's
    fnlwgt at its lower end), a tail knot measured worse: fnlwgt's 1-way TVD 0.0293 with it, 0.0252
    without, against 0.0250 before tail knots (three noise seeds each)."""
    knots = np.concatenate([[lower], np.asarray(inner, dtype=np.float64), [upper]])
    if len(knots) == n_knots:  # no tail knots
        return knots
    even = np.concatenate([knots[:1], knots[2:-2], knots[-1:]])  # the knots without the tail ones
    keep = np.ones(len(knots), dtype=bool)
    keep[1] = knots[0] < knots[1] < knots[2] and even[1] - even[0] > even[2] - even[1]
    keep[-2] = knots[-3] < knots[-2] < knots[-1] and even[-1] - even[-2] > even[-2] - even[-3]
    return knots[keep]


def _number_knots(values: np.ndarray, lower: float, upper: float, knot_noise: CountNoise,
                  masses: tuple[CountNoise, CategoryRelease] | None, n_knots: int, integral: bool,
                  rng: np.random.Generator, numeric: bool = True) -> tuple[float, ...] | None:
    """A number's DP quantile knots (``_dp_knots``); with ``masses`` (the noise of the knots' histogram
    beside them, and their release) also its point masses, each held twice among the knots so that it
    decodes exactly: the values whose thresholded noisy counts (``CategoryRelease``, each row adding 1
    to one value's count) clear ``POINT_MASS_SHARE`` of the knots' noisy total, the ``MAX_POINT_MASSES``
    most frequent at most (``with_point_masses`` keeps those that fit under ``MAX_KNOTS``). Round incomes,
    a code's busiest values, a density shared by a region, a day many records default to (a mass at 0
    is ``_dp_knots``'s; ``numeric``: False for a date's ticks). The values are read raw, not clipped: a
    value outside the bounds is in no count."""
    if masses is None:
        return _dp_knots(values, lower, upper, knot_noise, n_knots, integral, rng, numeric)[0]
    knot_noise, release = masses
    knots, total = _dp_knots(values, lower, upper, knot_noise, n_knots, integral, rng, numeric)
    if knots is None:
        return None
    released = release.release(values[(values >= lower) & (values <= upper)], rng)
    heavy = [value for value, count in released.items() if count >= POINT_MASS_SHARE * total][:MAX_POINT_MASSES]
    return quantile_knots(with_point_masses(np.array(knots), np.array(heavy, dtype=np.float64)), integral=integral)


def _knot_edges(lower: float, upper: float, integral: bool, numeric: bool) -> np.ndarray:
    """Bins for the knots' histogram, fixed by the released bounds: ``KNOT_BINS`` even bins and, for
    numbers (not datetimes), the range histogram's quarter-octave edges down to 2^-``KNOT_OCTAVES`` of
    the range (fine bins near zero for a heavy tail) and a bin holding 0 alone."""
    edges = np.linspace(lower, upper, KNOT_BINS + 1)
    if numeric:
        grid = _numeric_edges(integral)
        floor = (upper - lower) / 2.0**KNOT_OCTAVES
        edges = np.union1d(edges, grid[(grid > lower) & (grid < upper) & (np.abs(grid) >= floor)])
        if lower <= 0.0 < upper:
            edges = np.union1d(edges, [0.0, min(upper, float(grid[grid > 0][0]))])
    return np.unique(np.round(edges)) if integral else edges


def _numeric_edges(integer: bool) -> np.ndarray:
    """Fixed bin edges 0 and +-2^(k/4) for magnitudes 2^-10..``LARGEST_MAGNITUDE`` (rounded and deduplicated
    for integers): up to most of int64's range (byte counts, national sums in cents); larger values
    fall in the end bins."""
    magnitudes = 2.0 ** (np.arange(-40, 4 * LARGEST_EXPONENT + 1) / 4.0)
    edges = np.concatenate([-magnitudes[::-1], [0.0], magnitudes])
    return np.unique(np.round(edges) + 0.0) if integer else edges


def _discover_number(series: pd.Series, integer: bool, range_noise: CountNoise, knot_noise: CountNoise | None,
                     n_knots: int, rng: np.random.Generator,
                     masses: tuple[CountNoise, CategoryRelease] | None = None) -> tuple[Column, bool]:
    """Integer or continuous spec: bounds from the DP range histogram, knots from DP inner quantiles
    (none without ``knot_noise``) and point masses (with ``masses``: ``_number_knots``); and whether
    the range was located (some bin cleared a threshold) rather than guessed.

    An integer whose first range makes it a binary code (at most 128 values) has no knots and no point
    masses (each of its values is a cell already): the knots' share buys a second range histogram
    instead (the same bins, fresh noise), and the bounds are read again off the sum of both, whose
    noise is sqrt(2) smaller relative to the counts.
    """
    name = str(series.name)
    values = _finite_values(series)
    edges = _numeric_edges(integer)
    zero = int(np.searchsorted(edges, 0.0))  # the bin [0, smallest magnitude)
    noisy = noisy_histogram(values, edges, range_noise, rng)
    lower, upper, located = _range_of(noisy, edges, range_noise, 1, zero, zero)
    common = {"name": name, "nullable": can_hold_null(series.dtype), "dtype": dtype_text(series.dtype)}
    if integer:
        column = _integer_column(common, lower, upper)
        if knot_noise is None:
            return column, located
        if column.uses_binary_code:
            if knot_noise != range_noise:  # the sum's thresholds need equal noise
                return column, located
            noisy = noisy + noisy_histogram(values, edges, knot_noise, rng)
            lower, upper, located = _range_of(noisy, edges, range_noise, 2, zero, zero)
            column = _integer_column(common, lower, upper)
            if column.uses_binary_code:
                return column, located
            # Wider than a code after all (a sparse tail found): knots read off the same two histograms.
            low, high = int(np.searchsorted(edges, lower)), int(np.searchsorted(edges, upper))
            inner = np.clip(quantiles_of_counts(noisy[low:high], edges[low:high + 1], knot_levels(n_knots),
                                                integer=True), column.lower, column.upper)
            return replace(column, knots=quantile_knots(bounded_knots(column.lower, column.upper, inner, n_knots),
                                                        integral=True)), located
        knots = _number_knots(values, column.lower, column.upper, knot_noise, masses, n_knots, True, rng)
        return replace(column, knots=knots), located
    if knot_noise is None:
        return ContinuousColumn(**common, lower=lower, upper=upper), located
    knots = _number_knots(values, lower, upper, knot_noise, masses, n_knots, False, rng)
    return ContinuousColumn(**common, lower=lower, upper=upper, knots=knots), located


def _at_largest_magnitude(column: Column) -> bool:
    """Whether a discovered number's bounds reach the end bins of ``_numeric_edges``, where larger values fall too."""
    # An integer's upper bound is its last bin's end less 1: as a float, the end itself.
    return float(column.upper) >= LARGEST_MAGNITUDE or float(column.lower) <= -LARGEST_MAGNITUDE


def _at_datetime_grid_end(column: Column) -> bool:
    """Whether a discovered timestamp's bounds reach the first or last month of ``DATETIME_GRID``,
    where earlier or later values fall too."""
    first, last = pd.date_range(*DATETIME_GRID, freq="MS")[[1, -2]]
    return pd.Timestamp(column.lower) < first or pd.Timestamp(column.upper) > last


def _finite_values(series: pd.Series) -> np.ndarray:
    """A number's present values as floats, without +-inf: an infinity has no magnitude for a range or a
    quantile to locate, and the encoder clamps it to the released bounds like any value beyond them."""
    values = series.dropna().to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def _integer_column(common: dict[str, Any], lower: float, upper: float) -> IntegerColumn:
    """An integer spec from range edges: bins are [a, b), so b - 1 is the largest value in."""
    return IntegerColumn(**common, lower=int(lower), upper=max(int(upper) - 1, int(lower) + 1))


def _datetime_unit(dtype: Any) -> str:
    """The dtype's storage unit, used as resolution so that every stored timestamp encodes exactly."""
    unit = getattr(dtype, "unit", None) or np.datetime_data(dtype)[0]
    return unit if unit in ("s", "ms", "us", "ns") else "s"


def _discover_datetime(series: pd.Series, unit: str, range_noise: CountNoise, knot_noise: CountNoise | None,
                       n_knots: int, rng: np.random.Generator,
                       masses: tuple[CountNoise, CategoryRelease] | None = None) -> tuple[Column, bool]:
    """Datetime spec at resolution ``unit`` (``_time_resolution``): bounds from a DP histogram over
    month bins 1900-2100, knots from DP quantiles of its ticks and point masses (with ``masses``:
    ``_number_knots``); and whether the range was located."""
    local = getattr(series.dt, "tz", None) is not None  # a timezone-aware column counts in wall-clock time
    values = naive_stamps(series.dropna(), local).to_numpy().astype(f"datetime64[{unit}]")
    values = values.astype(np.int64).astype(np.float64)
    months = pd.date_range(*DATETIME_GRID, freq="MS").to_numpy()
    edges = months.astype(f"datetime64[{unit}]").astype(np.int64).astype(np.float64)
    lower, upper, located = _dp_range(values, edges, range_noise, rng)
    column = DatetimeColumn(str(series.name), nullable=True, dtype=dtype_text(series.dtype), lower=_iso(lower, unit),
                            upper=_iso(upper, unit), resolution=unit, local=local)
    if knot_noise is None:
        return column, located
    knots = _number_knots(values, lower, upper, knot_noise, masses, n_knots, True, rng, numeric=False)
    return replace(column, knots=knots), located


def _discover_duration(series: pd.Series, unit: str, range_noise: CountNoise, knot_noise: CountNoise | None,
                       n_knots: int, rng: np.random.Generator,
                       masses: tuple[CountNoise, CategoryRelease] | None = None) -> tuple[Column, bool]:
    """Duration spec at resolution ``unit`` (``_time_resolution``): ``_discover_number``'s integer
    release run on the spans' ticks; and whether the range was located. A range of at most
    ``MAX_BINARY_CODE_VALUES`` ticks, an integer's binary code, gets every tick as a point mass
    instead (knots from the bounds alone: post-processing). The bounds stay within what the column's
    dtype holds (a range bin's edge can lie past it), so that every synthetic span can be stored."""
    spans = series.dropna().to_numpy().astype(f"timedelta64[{unit}]").astype(np.int64)
    number, located = _discover_number(pd.Series(spans, name=series.name), True, range_noise, knot_noise,
                                       n_knots, rng, masses)
    number = cast(IntegerColumn, number)
    limit = (2**63 - 1) * NANOSECONDS[_datetime_unit(series.dtype)] // NANOSECONDS[unit]
    lower, upper = max(number.lower, -limit), min(number.upper, limit)
    knots = number.knots
    if knots is None and knot_noise is not None and upper - lower < MAX_BINARY_CODE_VALUES:
        knots = quantile_knots(np.repeat(np.arange(lower, upper + 1, dtype=np.float64), 2), integral=True)
    elif knots is not None:
        knots = quantile_knots(np.clip(np.asarray(knots), lower, upper), integral=True)
    return DurationColumn(number.name, nullable=True, dtype=dtype_text(series.dtype),
                          lower=duration_text(lower, unit), upper=duration_text(upper, unit),
                          resolution=unit, knots=knots), located


def _time_resolution(series: pd.Series, days: bool, noise: CountNoise | None, rng: np.random.Generator) -> str:
    """A timestamp's or duration's resolution: days for a column the storage declares dates, the
    storage unit without ``noise`` (no budget), else ``_dp_resolution``'s release."""
    unit = _datetime_unit(series.dtype)
    if days or noise is None:
        return "D" if days else unit
    values = naive_stamps(series.dropna(), local=True)  # wall-clock ticks, as ``_discover_datetime`` counts them
    return _dp_resolution(values.to_numpy().astype(np.int64), unit, noise, rng)


def _dp_resolution(ticks: np.ndarray, unit: str, noise: CountNoise, rng: np.random.Generator) -> str:
    """The coarsest time unit, from days down to the storage ``unit``, that holds all but
    ``RESOLUTION_SLACK`` of the rows exactly (plus ``RESOLUTION_STDS`` stds of the noise), read off ONE
    noisy histogram of each row's coarsest exact unit (each row in one bin: sensitivity 1). ``ticks``
    are whole ``unit``s since the epoch (UTC) or of a span. A column of dates stored as timestamps then
    decodes to dates, not to random times of day; a column of whole seconds to seconds."""
    units = RESOLUTIONS[: RESOLUTIONS.index(unit) + 1]
    counts = np.bincount(coarsest_exact_units(ticks, unit), minlength=len(units)) + noise.sample(rng, len(units))
    total = max(float(counts.sum()), 1.0)
    for i, candidate in enumerate(units[:-1]):
        finer = len(units) - 1 - i  # bins of the rows finer than the candidate
        # Few rows finer, and many rows exact at the candidate: under noise that swamps the counts
        # (a small table, a tiny budget) the storage unit stays, not a coarse unit the noise allowed.
        if (counts[i + 1:].sum() <= RESOLUTION_SLACK * total + RESOLUTION_STDS * noise.sum_std(finer)
                and counts[:i + 1].sum() >= RESOLUTION_EVIDENCE_STDS * noise.sum_std(i + 1)):
            return candidate
    return unit


def _iso(ticks: float, unit: str) -> str:
    """A whole number of ``unit`` ticks since the epoch as an ISO timestamp string."""
    return pd.Timestamp(np.datetime64(int(ticks), unit)).isoformat()


def _dp_coordinate_range(series: pd.Series, axis: str, noise: CountNoise, rng: np.random.Generator,
                         expected_rows: float | None = None) -> tuple[float, float, bool]:
    """DP (min, max) of a latitude or longitude from a noisy histogram of fixed bins (``_geo_step``), and
    whether it was located."""
    low_end, high_end = (-90.0, 90.0) if axis == "lat" else (-180.0, 360.0)
    n_bins = int(round((high_end - low_end) / _geo_step(noise, expected_rows)))
    edges = np.round(np.linspace(low_end, high_end, n_bins + 1), 6)
    return _dp_range(np.clip(_finite_values(series), low_end, high_end), edges, noise, rng)


def _geo_step(noise: CountNoise, expected_rows: float | None) -> float:
    """The bin width in degrees of a coordinate's range histogram: from ``GEO_STEPS``, the finest whose
    bins would hold ``GEO_BIN_STDS`` noise stds of rows spread evenly over ``GEO_SPREAD`` degrees. Reads
    only the noise and a DP estimate of the rows (post-processing), never the data."""
    if expected_rows is None or expected_rows <= 0:
        return GEO_STEPS[0]
    wanted = GEO_BIN_STDS * noise.sum_std(1) * GEO_SPREAD / expected_rows
    return next((step for step in GEO_STEPS if step >= wanted), GEO_STEPS[-1])


def _discover_categorical(series: pd.Series, release: CategoryRelease, rng: np.random.Generator,
                          catch_all: Any) -> tuple[Column, bool]:
    """Categorical spec: the values released by the thresholded DP histogram, in a data-independent
    order; and whether the release held any value (the catch-all's own included)."""
    name = str(series.name)
    # Nulls and values no histogram can count (a list) are left out by the release, unrefused.
    released = release.release(series.to_numpy(dtype=object), rng)
    # A released value equal to the catch-all is kept as the catch-all itself: it still decodes to itself.
    categories = _labels(name, [v for v in released if not _same(v, catch_all)])
    order = ordered_levels(series)
    if order is not None:  # the dtype's order, a declared one
        position = {value: i for i, value in enumerate(order)}
        categories.sort(key=position.__getitem__)
    else:
        categories = _sorted(categories)
    return CategoricalColumn(name, nullable=can_hold_null(series.dtype), dtype=dtype_text(series.dtype),
                             categories=tuple(categories), catch_all=catch_all), bool(released)


def _labels(name: str, released: list[Any]) -> list[Any]:
    """Released values, refused where one is no label (a date, a decimal): many rows hold such values,
    and the refusal is a fact about the release (post-processing), never about one row."""
    unlabelled = next((v for v in released if not is_label(v)), None)
    if unlabelled is not None:
        raise SchemaError(f"column {name!r}: DP discovery released categories that are Python "
                          f"{type(unlabelled).__name__} values, which a model file cannot record as labels; "
                          f"convert the column first: {label_conversion(unlabelled)}")
    return released


def _mixes_types(column: CategoricalColumn) -> bool:
    """Whether the released categories and the catch-all differ in kind: text against anything else."""
    text = [isinstance(level, str) for level in column.levels]
    return any(text) and not all(text)


def _same(value: Any, other: Any) -> bool:
    try:
        return bool(value == other)
    except (TypeError, ValueError):
        return False


def _sorted(values: list[Any]) -> list[Any]:
    """Sort by (type name, value) so the order reveals nothing about the counts; repr if not comparable."""
    try:
        return sorted(values, key=lambda v: (type(v).__name__, v))
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, repr(v)))
