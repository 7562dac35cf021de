"""Encoder: exact round trips on real tables, valid tables from any vector, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATASETS, shared_table
from tabsynth import (
    BooleanColumn,
    CategoricalColumn,
    ContinuousColumn,
    DatetimeColumn,
    DurationColumn,
    DomainError,
    Encoder,
    GeoPointColumn,
    IntegerColumn,
    PointSetRegion,
    PolygonRegion,
    Schema,
    SchemaError,
)
from tabsynth.datasets import load_demo
from tabsynth.geo import BoundingBox
from tabsynth.encoding import NUMBER_CELLS

L_SHAPE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 2], [2, 2], [2, 10], [0, 10], [0, 0]]]}


def assert_round_trip(frame: pd.DataFrame, schema: Schema) -> None:
    decoded = Encoder(schema).decode(Encoder(schema).encode(frame))
    assert list(decoded.columns) == list(frame.columns)
    for name in frame.columns:
        original, restored = frame[name], decoded[name]
        assert restored.dtype == original.dtype, name
        if pd.api.types.is_float_dtype(original.dtype):
            column = schema[name]  # float32 resolves about 1e-7 of the declared range
            lower, upper = column.region.bounds()[:2] if name == getattr(column, "lat", None) else (
                column.region.bounds()[2:] if name == getattr(column, "lon", None) else (column.lower, column.upper))
            np.testing.assert_allclose(restored.to_numpy(dtype=float), original.to_numpy(dtype=float),
                                       rtol=0, atol=1e-6 * max(upper - lower, 1.0), err_msg=name)
        else:
            pd.testing.assert_series_equal(restored, original, check_names=False, obj=name)


def test_round_trip_is_exact_on_uci_adult(adult_train: pd.DataFrame) -> None:
    assert_round_trip(adult_train, Schema.infer(adult_train))


def test_round_trip_is_exact_on_both_cps_years_with_the_prior_years_schema() -> None:
    public, private = load_demo("cps_1992"), load_demo("cps_2004")
    schema = Schema.infer(pd.concat([public, private]))
    assert_round_trip(public, schema)
    assert_round_trip(private, schema)


def test_round_trip_is_exact_on_acs_with_not_applicable_nulls() -> None:
    frame = shared_table("acs/national2019.parquet")
    assert_round_trip(frame, Schema.infer(frame))


def test_round_trip_keeps_geo_points_of_california_housing_inside_the_state() -> None:
    frame = shared_table("geo/california_housing.parquet")
    boundary = json.loads((SHARED_DATASETS / "geo" / "california_boundary_5m.geojson").read_text())
    schema = Schema.infer(frame)
    geo = GeoPointColumn("location", lat="latitude", lon="longitude",
                         region=PolygonRegion(boundary, tolerance=0.1), lat_dtype="float64", lon_dtype="float64")
    schema = schema.replace_column(geo)
    assert_round_trip(frame, schema)


def test_layout_names_each_columns_slice_and_activation() -> None:
    schema = Schema((
        ContinuousColumn("x", nullable=True, lower=0, upper=1, knots=(0.0, 0.5, 1.0)),
        IntegerColumn("small", lower=0, upper=5),
        CategoricalColumn("c", categories=("a", "b", "c")),
        BooleanColumn("b"),
        ContinuousColumn("y", lower=0, upper=1, knots=(0.0, 0.0, 0.5, 1.0)),  # a point mass at 0: binned
    ))
    layout = [(s.column, s.start, s.end, s.activation, s.role) for s in Encoder(schema).layout]
    assert layout == [("x", 0, 1, "sigmoid", "missing"), ("x", 1, 2, "tanh", "value"),
                      ("small", 2, 5, "sigmoid", "value"), ("c", 5, 8, "softmax", "value"),
                      ("b", 8, 9, "sigmoid", "value"), ("y", 9, 12, "softmax", "value"), ("y", 12, 13, "tanh", "place")]


def test_a_number_with_equal_mass_knots_is_one_tanh_dimension_and_one_without_is_binned() -> None:
    quantiles = Encoder(Schema((ContinuousColumn("x", lower=0, upper=100, knots=(0.0, 10.0, 40.0, 100.0)),)))
    assert [(s.activation, s.width) for s in quantiles.layout] == [("tanh", 1)]
    assert [(spec.kind, spec.cells) for spec in quantiles.cell_specs] == [("unit", 3)]
    bare = Encoder(Schema((ContinuousColumn("x", lower=0, upper=100),)))
    assert [(s.activation, s.width, s.role) for s in bare.layout] == [("softmax", NUMBER_CELLS, "value"),
                                                                       ("tanh", 1, "place")]


def test_a_binned_number_is_its_cell_and_its_place_in_the_cell() -> None:
    # Knots 0, 0, 0, 10, 100: the point mass at 0 is one cell, then [0, 10) and [10, 100].
    schema = Schema((ContinuousColumn("x", lower=0, upper=100, knots=(0.0, 0.0, 0.0, 10.0, 100.0)),))
    encoder = Encoder(schema)
    assert [spec.cells for spec in encoder.cell_specs] == [3]
    compact = encoder.encode_compact(pd.DataFrame({"x": [0.0, 5.0, 10.0, 55.0, 100.0]}))
    np.testing.assert_array_equal(compact[:, 0], [0, 1, 2, 2, 2])
    np.testing.assert_allclose(compact[:, 1], [0.0, 0.0, -1.0, 0.0, 1.0], atol=1e-6)
    # Any place in the point mass's cell decodes to exactly 0.
    zeros = encoder.decode_compact(np.array([[0, -1.0], [0, 0.3], [0, 1.0]], dtype=np.float32))
    assert zeros["x"].tolist() == [0.0, 0.0, 0.0]


def test_a_binned_integer_cell_draws_each_of_its_integers_equally_and_a_knot_from_one_side_only() -> None:
    # Knots 13, 39, 40, 41, 43, 43, 300: cells [13, 39) [39, 40) [40, 41) [41, 43) {43} (43, 300].
    knots = (13.0, 39.0, 40.0, 41.0, 43.0, 43.0, 300.0)
    encoder = Encoder(Schema((IntegerColumn("hours", lower=13, upper=300, knots=knots),)))
    values = np.arange(13, 301)
    compact = encoder.encode_compact(pd.DataFrame({"hours": values}))
    assert (encoder.decode_compact(compact)["hours"].to_numpy() == values).all()
    cells = compact[:, 0].astype(int)
    assert cells[values == 40].tolist() == [2] and (cells == 2).sum() == 1  # the cell [40, 41) is 40 alone
    assert (cells == 4).sum() == 1 and (cells == 5).sum() == 300 - 43  # 43 is the point mass's only
    rng = np.random.default_rng(0)
    uniform = np.column_stack([np.full(40_000, 3.0), rng.uniform(-1.0, 1.0, 40_000)]).astype(np.float32)
    drawn = encoder.decode_compact(uniform)["hours"].value_counts(normalize=True)
    assert sorted(drawn.index) == [41, 42] and abs(drawn[41] - 0.5) < 0.01


# --- any vector decodes to a valid table -------------------------------------------------------

def every_kind_schema() -> Schema:
    return Schema((
        ContinuousColumn("income", nullable=True, lower=0.0, upper=1e6, knots=(0.0, 0.0, 0.0, 100.0, 1e6),
                         dtype="float64"),
        IntegerColumn("age", lower=18, upper=99, dtype="int64"),
        IntegerColumn("children", nullable=True, lower=0, upper=9, dtype="Int64"),
        BooleanColumn("owner", nullable=True, dtype="boolean"),
        CategoricalColumn("colour", categories=("red", "green"), catch_all="other", dtype="str"),
        CategoricalColumn("code", nullable=True, categories=(11, 42, 977), dtype="Int64"),
        DatetimeColumn("visit", lower="2020-01-01", upper="2020-12-31", resolution="D", dtype="datetime64[s]"),
        GeoPointColumn("home", lat="home_lat", lon="home_lon", region=PolygonRegion(L_SHAPE),
                       lat_dtype="float64", lon_dtype="float64"),
        GeoPointColumn("shop", nullable=True, lat="shop_lat", lon="shop_lon",
                       region=PointSetRegion(np.array([[1.0, 2.0], [3.0, 4.0]])),
                       lat_dtype="float64", lon_dtype="float64"),
    ))


def assert_valid(frame: pd.DataFrame, schema: Schema) -> None:
    income = frame["income"].dropna()
    assert income.between(0, 1e6).all()
    assert frame["age"].between(18, 99).all() and frame["age"].dtype == "int64"
    assert frame["children"].dropna().between(0, 9).all()
    assert set(frame["colour"]) <= {"red", "green", "other"}
    assert set(frame["code"].dropna()) <= {11, 42, 977}
    assert frame["visit"].between(pd.Timestamp("2020-01-01"), pd.Timestamp("2020-12-31")).all()
    assert frame["visit"].notna().all() and frame["age"].notna().all()
    region = schema["home"].region
    assert region.contains(frame["home_lat"].to_numpy(), frame["home_lon"].to_numpy()).all()
    shops = frame[["shop_lat", "shop_lon"]].dropna().to_numpy()
    assert all((tuple(p) in {(1.0, 2.0), (3.0, 4.0)}) for p in shops)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.5, 1.0, 10.0, 1e6]))
def test_decoding_arbitrary_vectors_yields_a_valid_table(seed: int, scale: float) -> None:
    schema = every_kind_schema()
    encoder = Encoder(schema)
    vectors = np.random.default_rng(seed).normal(0.0, scale, size=(200, encoder.dim))
    assert_valid(encoder.decode(vectors), schema)


@pytest.mark.parametrize("form", ["vectors", "compact rows"])
def test_decoding_nan_and_inf_yields_a_valid_table(form: str) -> None:
    schema = every_kind_schema()
    encoder = Encoder(schema)
    rows = np.full((3, encoder.dim if form == "vectors" else encoder.compact_dim), np.nan)
    rows[1], rows[2] = np.inf, -np.inf
    assert_valid(encoder.decode(rows) if form == "vectors" else encoder.decode_compact(rows), schema)


def test_out_of_range_binary_codes_map_to_the_nearest_allowed_value() -> None:
    schema = Schema((IntegerColumn("k", lower=1, upper=5, dtype="int64"),))  # 3 bits, codes 5..7 invalid
    decoded = Encoder(schema).decode(np.ones((1, 3)))
    assert decoded["k"].tolist() == [5]


def test_points_outside_a_polygon_move_to_its_nearest_point() -> None:
    schema = Schema((GeoPointColumn("p", lat="lat", lon="lon", region=PolygonRegion(L_SHAPE)),))
    # (lat 8, lon 3) lies in the notch of the L; the nearest valid point is (8, 2) on its inner edge.
    # Compact fields: each coordinate's cell of 0.1 degree in the box [0, 10] and its place in it.
    decoded = Encoder(schema).decode_compact(np.array([[80.0, -1.0, 30.0, -1.0]]))
    assert (decoded["lat"].item(), decoded["lon"].item()) == pytest.approx((8.0, 2.0))


# --- hypothesis-generated tables round-trip --------------------------------------------------

@st.composite
def tables(draw: st.DrawFn) -> tuple[pd.DataFrame, Schema]:
    n = draw(st.integers(1, 30))
    ints = draw(st.lists(st.integers(-1000, 10**6), min_size=n, max_size=n))
    small = draw(st.lists(st.one_of(st.none(), st.integers(3, 14)), min_size=n, max_size=n))
    floats = draw(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n))
    cats = draw(st.lists(st.sampled_from(["x", "y", "zed", None]), min_size=n, max_size=n))
    flags = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    days = draw(st.lists(st.integers(0, 3650), min_size=n, max_size=n))
    frame = pd.DataFrame({
        "wide": pd.Series(ints, dtype="int64"),
        "small": pd.Series(small, dtype="Int64"),
        "real": pd.Series(floats, dtype="float64"),
        "cat": pd.Series(cats, dtype="str"),
        "flag": pd.Series(flags, dtype="bool"),
        "day": pd.Series(pd.to_datetime("2000-01-01") + pd.to_timedelta(days, unit="D")),
    })
    schema = Schema((
        IntegerColumn("wide", lower=-1000, upper=10**6, knots=(-1000.0, 0.0, 5e5, 1e6), dtype="int64"),
        IntegerColumn("small", nullable=True, lower=3, upper=14, dtype="Int64"),
        ContinuousColumn("real", lower=-1e3, upper=1e3, dtype="float64"),
        CategoricalColumn("cat", nullable=True, categories=("x", "y", "zed"), dtype="str"),
        BooleanColumn("flag", dtype="bool"),
        DatetimeColumn("day", lower="2000-01-01", upper="2010-01-01", resolution="D", dtype=str(frame["day"].dtype)),
    ))
    return frame, schema


@settings(max_examples=60, deadline=None)
@given(tables())
def test_hypothesis_tables_of_every_kind_round_trip(case: tuple[pd.DataFrame, Schema]) -> None:
    frame, schema = case
    assert_round_trip(frame, schema)


# --- errors --------------------------------------------------------------------------------

def simple_schema() -> Schema:
    return Schema((IntegerColumn("age", lower=0, upper=120), CategoricalColumn("c", categories=("a", "b"))))


def test_value_outside_bounds_raises_naming_the_column() -> None:
    with pytest.raises(DomainError, match="column 'age' has 1 values outside its bounds"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": [30, 130], "c": ["a", "b"]}))


def test_value_outside_bounds_is_clamped_on_request() -> None:
    encoder = Encoder(simple_schema(), on_invalid="clip")
    decoded = encoder.decode(encoder.encode(pd.DataFrame({"age": [30, 130], "c": ["a", "b"]})))
    assert decoded["age"].tolist() == [30, 120]


def test_a_fraction_in_an_integer_column_raises_naming_the_column() -> None:
    with pytest.raises(DomainError, match="column 'age' is an integer column but holds 1 fractional values"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": [30, 40.4], "c": ["a", "b"]}))


@pytest.mark.parametrize("upper", [120, 1000])  # a binary code, a number with knots
def test_a_fraction_in_an_integer_column_is_rounded_on_request(upper: int) -> None:
    # An integer schema inferred from a public year of whole values meets a private year with cents.
    schema = Schema((IntegerColumn("age", lower=0, upper=upper), CategoricalColumn("c", categories=("a", "b"))))
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(pd.DataFrame({"age": [30.0, 40.4, 40.6], "c": ["a", "b", "a"]})))
    assert decoded["age"].tolist() == [30, 40, 41]


def test_a_timestamp_finer_than_the_resolution_raises_or_falls_to_its_day() -> None:
    schema = Schema((DatetimeColumn("d", lower="2020-01-01", upper="2020-12-31", resolution="D"),))
    frame = pd.DataFrame({"d": pd.to_datetime(["2020-03-01 00:00", "2020-03-02 18:30"])})
    with pytest.raises(DomainError, match="column 'd' has 1 timestamps finer than its resolution 'D'"):
        Encoder(schema).encode(frame)
    encoder = Encoder(schema, on_invalid="clip")
    assert encoder.decode(encoder.encode(frame))["d"].tolist() == list(pd.to_datetime(["2020-03-01", "2020-03-02"]))


def test_a_timestamp_dtype_text_pandas_cannot_read_leaves_decoded_timestamps_as_they_are() -> None:
    # A declared schema's "date": decoding had ignored it, then read it and failed after the fit.
    schema = Schema((DatetimeColumn("d", lower="2020-01-01", upper="2020-12-31", resolution="D", dtype="date"),))
    encoder = Encoder(schema)
    frame = pd.DataFrame({"d": pd.to_datetime(["2020-03-01", "2020-07-04"])})
    assert encoder.decode(encoder.encode(frame))["d"].tolist() == frame["d"].tolist()


def test_an_arrow_timestamp_coarser_than_the_resolution_decodes_truncated_to_its_unit() -> None:
    dtype = pd.ArrowDtype(pa.timestamp("s"))
    schema = Schema((DatetimeColumn("t", lower="2020-01-01", upper="2020-01-02", resolution="ms", dtype=str(dtype)),))
    encoder = Encoder(schema)
    stamps = pd.Series(pd.to_datetime(["2020-01-01 10:00:00.250", "2020-01-01 12:00:00.000"]))
    decoded = encoder.decode(encoder.encode(pd.DataFrame({"t": stamps})))["t"]
    assert decoded.dtype == dtype and decoded.tolist() == list(pd.to_datetime(["2020-01-01 10:00", "2020-01-01 12:00"]))


def test_dates_beyond_the_nanosecond_range_encode_and_decode_exactly() -> None:
    # A 9999-12-31 placeholder, historical dates: pandas holds them in seconds, not nanoseconds.
    schema = Schema((DatetimeColumn("d", lower="1500-01-01", upper="9999-12-31", resolution="D",
                                    dtype="datetime64[s]"),))
    dates = np.array(["1600-05-01", "1969-12-31", "2020-03-02", "9999-12-31"], dtype="datetime64[s]")
    encoder = Encoder(schema)
    assert encoder.decode(encoder.encode(pd.DataFrame({"d": dates})))["d"].tolist() == list(pd.to_datetime(dates))


def test_durations_encode_and_decode_exactly_with_their_dtype_and_nulls() -> None:
    spans = pd.Series(pd.to_timedelta([-90, 0, None, 3 * 86400 + 1, 45], unit="s").astype("timedelta64[ms]"))
    schema = Schema((DurationColumn("wait", nullable=True, lower="-PT2M", upper="P4D", resolution="s",
                                    knots=(-120.0, 0.0, 0.0, 60.0, 4 * 86400.0), dtype="timedelta64[ms]"),))
    encoder = Encoder(schema)
    decoded = encoder.decode(encoder.encode(pd.DataFrame({"wait": spans})))["wait"]
    assert decoded.dtype == np.dtype("timedelta64[ms]")
    pd.testing.assert_series_equal(decoded, spans, check_names=False)


def test_a_duration_finer_than_the_resolution_raises_or_falls_to_the_start_of_its_tick() -> None:
    schema = Schema((DurationColumn("wait", lower="-P1D", upper="P1D", resolution="m"),))
    frame = pd.DataFrame({"wait": pd.to_timedelta(["5min", "-90s", "2min 30s"])})
    with pytest.raises(DomainError, match="column 'wait' has 2 durations finer than its resolution 'm'"):
        Encoder(schema).encode(frame)
    encoder = Encoder(schema, on_invalid="clip")
    assert encoder.decode(encoder.encode(frame))["wait"].tolist() == list(pd.to_timedelta(["5min", "-2min", "2min"]))


def test_unknown_category_raises_without_a_catch_all() -> None:
    with pytest.raises(DomainError, match=r"column 'c' holds 1 values outside its categories, e\.g\. \['q'\]"):
        Encoder(simple_schema(), on_invalid="clip").encode(pd.DataFrame({"age": [1], "c": ["q"]}))


def test_unknown_category_maps_to_the_catch_all_on_request() -> None:
    schema = Schema((CategoricalColumn("c", categories=("a",), catch_all="other"),))
    encoder = Encoder(schema, on_invalid="clip")
    assert encoder.decode(encoder.encode(pd.DataFrame({"c": ["a", "q"]})))["c"].tolist() == ["a", "other"]


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", "string[python]", "category", object])
def test_categories_decode_to_the_recorded_string_dtype(dtype: object) -> None:
    frame = pd.DataFrame({"c": pd.Series(["a", None, "b", "a"], dtype=dtype)})
    schema = Schema((CategoricalColumn("c", nullable=True, categories=("a", "b")),)).with_dtypes(frame)
    encoder = Encoder(schema)
    decoded = encoder.decode(encoder.encode(frame))["c"]
    assert decoded.dtype == frame["c"].dtype
    assert decoded.isna().tolist() == [False, True, False, False]
    assert decoded.dropna().tolist() == ["a", "b", "a"]


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", "string[python]", "category", object])
def test_categories_get_the_same_codes_whatever_the_string_dtype(dtype: object) -> None:
    schema = Schema((CategoricalColumn("c", nullable=True, categories=("b", "a", "c"), catch_all="other"),))
    encoder = Encoder(schema, on_invalid="clip")
    frame = pd.DataFrame({"c": pd.Series(["a", "q", None, "c", "b", "a"], dtype=dtype)})
    codes = encoder.marginal_cells(encoder.encode_compact(frame))[0][:, 0]
    assert codes.tolist() == [1, 3, 4, 2, 0, 1]  # levels b, a, c, then the catch-all, then missing


@pytest.mark.parametrize("value", [np.nan, None])
def test_missing_value_in_a_non_nullable_column_raises(value: object) -> None:
    with pytest.raises(SchemaError, match="column 'age' holds 1 missing values"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": [1.0, value], "c": ["a", "b"]}))


def test_infinity_is_out_of_bounds() -> None:
    with pytest.raises(DomainError, match="column 'age'"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": [np.inf], "c": ["a"]}))


def test_missing_and_unknown_columns_are_named() -> None:
    with pytest.raises(SchemaError, match=r"lacks columns \['c'\]"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": [1]}))
    with pytest.raises(SchemaError, match=r"has columns \['extra'\] that the schema does not describe"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": [1], "c": ["a"], "extra": [0]}))


def test_empty_frame_and_duplicate_columns_are_refused() -> None:
    with pytest.raises(SchemaError, match="is empty"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": pd.Series([], dtype="int64"), "c": []}))
    with pytest.raises(SchemaError, match="duplicate column names"):
        Encoder(simple_schema()).encode(pd.DataFrame([[1, "a", 2]], columns=["age", "c", "age"]))


def test_timestamps_in_a_numeric_column_and_numbers_in_a_time_column_are_refused() -> None:
    # Read as nanoseconds, they had been accepted silently: synthetic times of 1970-01-01 00:00:00.000010.
    with pytest.raises(SchemaError, match="column 'age' must be numeric, but holds datetime64"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": pd.to_datetime(["2020-01-01"]), "c": ["a"]}))
    schema = Schema((DatetimeColumn("t", lower="2020-01-01", upper="2021-01-01", resolution="D"),
                     DurationColumn("wait", lower="P0D", upper="P1D", resolution="s")))
    with pytest.raises(SchemaError, match="column 't' must hold timestamps, but holds int64"):
        Encoder(schema).encode(pd.DataFrame({"t": [5], "wait": pd.to_timedelta(["1s"])}))
    with pytest.raises(SchemaError, match="column 'wait' must hold durations, but holds int64"):
        Encoder(schema).encode(pd.DataFrame({"t": pd.to_datetime(["2020-03-01"]), "wait": [5]}))
    with pytest.raises(SchemaError, match="column 't' must hold timestamps, but holds object"):
        Encoder(schema).encode(pd.DataFrame({"t": pd.Series([5], dtype=object), "wait": pd.to_timedelta(["1s"])}))


def test_a_nullable_time_column_without_a_value_encodes_whatever_its_dtype() -> None:
    # An all-blank CSV column reads as float64, a column of pd.NA as Int64: no value to judge.
    schema = Schema((DatetimeColumn("t", nullable=True, lower="2020-01-01", upper="2021-01-01", resolution="D"),
                     DurationColumn("wait", nullable=True, lower="P0D", upper="P1D", resolution="s")))
    frame = pd.DataFrame({"t": [np.nan, np.nan], "wait": pd.array([None, None], dtype="Int64")})
    encoder = Encoder(schema)
    assert encoder.decode(encoder.encode(frame)).isna().all().all()


def test_text_in_a_numeric_column_is_refused() -> None:
    with pytest.raises(SchemaError, match="column 'age' must be numeric"):
        Encoder(simple_schema()).encode(pd.DataFrame({"age": ["old"], "c": ["a"]}))


def test_geo_point_outside_its_region_raises_or_moves_inside() -> None:
    schema = Schema((GeoPointColumn("p", lat="lat", lon="lon", region=PolygonRegion(L_SHAPE)),))
    frame = pd.DataFrame({"lat": [1.0, 8.0], "lon": [1.0, 8.0]})
    with pytest.raises(DomainError, match="geo column 'p' has 1 points outside its region"):
        Encoder(schema).encode(frame)
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))
    assert schema["p"].region.contains(decoded["lat"].to_numpy(), decoded["lon"].to_numpy()).all()


def test_points_projected_onto_a_polygon_lie_inside_it_by_its_own_test() -> None:
    # The nearest boundary point, in floating point, fell just outside for about one point in six,
    # and then failed the region's own test (an encoder with on_invalid="raise" refused the sample).
    ring = [[-124.0 + 3.0 * np.cos(t), 37.0 + 2.0 * np.sin(t)] for t in np.linspace(0.0, 2.0 * np.pi, 200)[:-1]]
    region = PolygonRegion({"type": "Polygon", "coordinates": [ring + [ring[0]]]})
    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(33.0, 41.0, 5000), rng.uniform(-129.0, -119.0, 5000)
    inside = region.contains(lat, lon)
    moved_lat, moved_lon = region.project(lat, lon)
    assert region.contains(moved_lat, moved_lon).all()
    assert np.array_equal(moved_lat[inside], lat[inside]) and np.array_equal(moved_lon[inside], lon[inside])
    # Within rounding of the boundary, the way from a point to its nearest boundary point is noise.
    angle = rng.uniform(0.0, 2.0 * np.pi, 5000)
    for distance in (1e-15, 1e-14, 1e-13):
        near_lat, near_lon = 37.0 + 2.0 * np.sin(angle) * (1 + distance), -124.0 + 3.0 * np.cos(angle) * (1 + distance)
        assert region.contains(*region.project(near_lat, near_lon)).all()


def test_a_point_with_one_coordinate_missing_is_a_missing_point_under_clip_and_an_error_under_raise() -> None:
    # Discover mode (clip) failed the whole fit with a message about nulls the schema does not declare.
    schema = Schema((GeoPointColumn("p", nullable=True, lat="lat", lon="lon", region=PolygonRegion(L_SHAPE)),))
    frame = pd.DataFrame({"lat": [1.0, None, 1.5], "lon": [1.0, 1.0, None]})
    with pytest.raises(SchemaError, match="geo column 'p': 2 rows have only one of 'lat' and 'lon' missing"):
        Encoder(schema, on_invalid="raise").encode(frame)
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))
    assert decoded["lat"].isna().tolist() == [False, True, True] == decoded["lon"].isna().tolist()


def test_a_geo_point_at_infinity_is_refused_under_raise_and_clamped_into_the_region_under_clip() -> None:
    # Discover mode (clip) failed the whole fit on one such row, which itself told of the row.
    schema = Schema((GeoPointColumn("p", lat="lat", lon="lon", region=PolygonRegion(L_SHAPE)),))
    frame = pd.DataFrame({"lat": [1.0, np.inf, 1.0], "lon": [1.0, 1.0, -np.inf]})
    with pytest.raises(DomainError, match="geo column 'p' has 2 points whose coordinates are not finite"):
        Encoder(schema, on_invalid="raise").encode(frame)
    encoder = Encoder(schema, on_invalid="clip")
    decoded = encoder.decode(encoder.encode(frame))
    lat, lon = decoded["lat"].to_numpy(), decoded["lon"].to_numpy()
    assert np.isfinite(lat).all() and np.isfinite(lon).all() and schema["p"].region.contains(lat, lon).all()
    max_lat = schema["p"].region.bounds()[1]
    assert encoder.encode(pd.DataFrame({"lat": [max_lat], "lon": [1.0]})).tolist() == \
        encoder.encode(frame.iloc[[1]]).tolist()  # +inf is the box's edge


def test_an_infinite_coordinate_leaves_the_other_rows_encoding_alone() -> None:
    # The clamp ran over the whole batch: one row at inf moved every other point outside the region
    # to the box's edge before its projection, so one row changed how the others were encoded.
    schema = Schema((GeoPointColumn("p", lat="lat", lon="lon", region=PolygonRegion(L_SHAPE)),))
    encoder = Encoder(schema, on_invalid="clip")
    rng = np.random.default_rng(0)
    points = pd.DataFrame({"lat": rng.uniform(-5.0, 15.0, 500), "lon": rng.uniform(-5.0, 15.0, 500)})
    with_infinity = pd.concat([points, pd.DataFrame({"lat": [np.inf], "lon": [1.0]})], ignore_index=True)
    np.testing.assert_array_equal(encoder.encode(with_infinity)[:500], encoder.encode(points))


def test_a_geo_pair_is_two_drawn_coordinates_each_binned_evenly_in_the_box_with_its_place() -> None:
    schema = Schema((GeoPointColumn("home", nullable=True, lat="lat", lon="lon", region=BoundingBox(30, 40, -120, -110)),))
    encoder = Encoder(schema)
    assert [(s.column, s.width, s.activation, s.role) for s in encoder.layout] == [
        ("home", 1, "sigmoid", "missing"), ("lat", 100, "softmax", "value"), ("lat", 1, "tanh", "place"),
        ("lon", 100, "softmax", "value"), ("lon", 1, "tanh", "place")]
    frame = pd.DataFrame({"lat": [30.0, 30.15, 39.999, None], "lon": [-110.0, -119.95, -115.0, None]})
    cells, sizes, names = encoder.marginal_cells(encoder.encode_compact(frame))
    assert names == ["lat", "lon"] and sizes == [101, 101]  # 100 cells of 0.1 degree, then missing
    assert cells[:, 0].tolist() == [0, 1, 99, 100] and cells[:, 1].tolist() == [99, 0, 50, 100]
    decoded = encoder.decode(encoder.encode(frame))
    assert np.allclose(decoded[["lat", "lon"]].to_numpy()[:3], frame[["lat", "lon"]].to_numpy()[:3])


def test_unhashable_values_in_a_categorical_column_go_to_the_catch_all_like_unknown_ones() -> None:
    # They escaped as a bare TypeError; then as a SchemaError, which told of one row in discover mode.
    schema = Schema((CategoricalColumn("c", categories=("a", "b"), catch_all="<other>"),))
    frame = pd.DataFrame({"c": pd.Series([["a"], "a", {"b": 1}], dtype=object)})
    encoder = Encoder(schema, on_invalid="clip")
    assert encoder.decode(encoder.encode(frame))["c"].tolist() == ["<other>", "a", "<other>"]


def test_unhashable_values_under_on_invalid_raise_are_a_domain_error_naming_the_column() -> None:
    schema = Schema((CategoricalColumn("c", categories=("a", "b"), catch_all="<other>"),))
    with pytest.raises(DomainError, match="column 'c' holds 1 values outside its categories"):
        Encoder(schema, on_invalid="raise").encode(pd.DataFrame({"c": pd.Series([["a"], "a"], dtype=object)}))


def test_a_number_too_large_for_a_float_is_a_schema_error_naming_its_column() -> None:
    schema = Schema((IntegerColumn("n", lower=0, upper=10),))
    with pytest.raises(SchemaError, match="column 'n' must be numeric"):
        Encoder(schema).encode(pd.DataFrame({"n": pd.Series([10**400, 1], dtype=object)}))


@pytest.mark.parametrize("values", [
    pd.array(pa.array([2.5, float("nan"), None], pa.float64(), from_pandas=False), dtype=pd.ArrowDtype(pa.float64())),
    pd.arrays.FloatingArray(np.array([2.5, np.nan, 0.0]), mask=np.array([False, False, True])),
])
def test_nan_in_an_arrow_or_masked_float_column_is_missing_not_a_number(values: object) -> None:
    # There isna() does not count NaN: it passed the clamp into training, and one such row failed a fit.
    frame = pd.DataFrame({"x": values})
    assert frame["x"].isna().tolist() == [False, False, True]
    encoder = Encoder(Schema((ContinuousColumn("x", nullable=True, lower=0, upper=10),)), on_invalid="clip")
    encoded = np.asarray(encoder.encode(frame))
    assert np.isfinite(encoded).all()
    assert encoder.decode(encoded)["x"].isna().tolist() == [False, True, True]


def test_a_redacted_encoding_error_does_not_carry_the_original_as_its_context() -> None:
    # "from None" only hid it when printed: exc.__context__ still held "e.g. ['zzz']" for any caller to log.
    schema = Schema((CategoricalColumn("c", categories=("a", "b")),))
    with pytest.raises(DomainError, match="details are withheld") as caught:
        Encoder(schema).encode_compact(pd.DataFrame({"c": ["a", "zzz"]}), redact=True)
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_nan_in_an_arrow_coordinate_is_a_missing_point() -> None:
    schema = Schema((GeoPointColumn("shop", nullable=True, lat="lat", lon="lon",
                                    region=PointSetRegion(np.array([[1.0, 2.0], [3.0, 4.0]]))),))
    arrow = pd.ArrowDtype(pa.float64())
    frame = pd.DataFrame({"lat": pd.array(pa.array([1.0, float("nan")], from_pandas=False), dtype=arrow),
                          "lon": pd.array(pa.array([2.0, 4.0]), dtype=arrow)})
    encoder = Encoder(schema, on_invalid="clip")
    encoded = np.asarray(encoder.encode(frame))
    assert np.isfinite(encoded).all()
    assert encoder.decode(encoded)["lat"].isna().tolist() == [False, True]


def test_text_matches_a_number_or_boolean_level_by_its_text_where_levels_mix_kinds() -> None:
    # A private CSV or a partition field is read as text: "1" matched no category 1 of a mixed list.
    schema = Schema((CategoricalColumn("c", categories=(7, 2.5, "a"), catch_all="<other>"),))
    encoder = Encoder(schema, on_invalid="clip")
    frame = pd.DataFrame({"c": pd.Series(["7", "a", "2.5", "2"], dtype="str")})
    assert encoder.decode(encoder.encode(frame))["c"].tolist() == [7, "a", 2.5, "<other>"]
