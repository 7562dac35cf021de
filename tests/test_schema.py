"""Schema: explicit column specs, JSON round-trip, inference from a public table, clear errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tabsynth import (
    BooleanColumn,
    BoundingBox,
    CategoricalColumn,
    ContinuousColumn,
    DatetimeColumn,
    DurationColumn,
    Encoder,
    GeoPointColumn,
    IntegerColumn,
    PointSetRegion,
    PolygonRegion,
    Schema,
    SchemaError,
)
from tabsynth.datasets import load_demo
from tabsynth.schema import (EVEN_KNOT_PARTS, MAX_KNOTS, SMALL_PUBLIC_ROWS, dtype_text, duration_text, read_dtype,
                             with_point_masses)

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]}


def every_kind_schema() -> Schema:
    return Schema((
        ContinuousColumn("income", nullable=True, lower=0.0, upper=1e6, knots=(0.0, 0.0, 100.0, 1e6)),
        IntegerColumn("age", lower=0, upper=99),
        IntegerColumn("children", lower=0, upper=9),
        BooleanColumn("owner", nullable=True),
        CategoricalColumn("colour", categories=("red", "green"), catch_all="other"),
        DatetimeColumn("visit", lower="2020-01-01", upper="2020-12-31", resolution="D"),
        DurationColumn("stay", nullable=True, lower="PT0S", upper="P90D", resolution="h"),
        GeoPointColumn("home", lat="home_lat", lon="home_lon", region=PolygonRegion(SQUARE)),
        GeoPointColumn("shop", lat="shop_lat", lon="shop_lon",
                       region=PointSetRegion(np.array([[1.0, 2.0], [3.0, 4.0]]))),
    ))


def test_json_round_trip_preserves_every_kind() -> None:
    schema = every_kind_schema()
    assert Schema.from_json(schema.to_json()) == schema


def test_json_is_plain_data() -> None:
    document = json.loads(every_kind_schema().to_json())
    assert document["format"] == "tabsynth.schema"
    assert [c["kind"] for c in document["columns"]][:3] == ["continuous", "integer", "integer"]


def test_column_order_defaults_to_the_columns_owned_in_sequence() -> None:
    schema = every_kind_schema()
    assert schema.names[-4:] == ("home_lat", "home_lon", "shop_lat", "shop_lon")


def test_integer_ranges_of_128_values_or_fewer_use_a_binary_code() -> None:
    assert IntegerColumn("a", lower=1, upper=128).uses_binary_code
    assert not IntegerColumn("a", lower=1, upper=129).uses_binary_code


@pytest.mark.parametrize("text, fragment", [
    ("not json", "not valid JSON"),
    ('{"format": "other"}', "not a tabsynth schema"),
    ('{"format": "tabsynth.schema", "version": 99, "columns": []}', "unsupported schema version"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": [{"kind": "weird", "name": "x"}]}',
     "column 'x': unknown kind"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "integer", "name": "x", "lower": 5, "upper": 1}]}', "column 'x': lower bound 5 exceeds"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "categorical", "name": "c", "categories": ["a"], "colour": 1}]}',
     "column 'c': unexpected fields ['colour']"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "geo", "name": "g", "region": {"type": "blob"}}]}', "column 'g'"),
    # Left out, the bounds took the dataclass's placeholder [0, 1] and every synthetic income fell in it.
    ('{"format": "tabsynth.schema", "version": 1, "columns": [{"kind": "continuous", "name": "income"}]}',
     "column 'income': missing ['lower', 'upper']"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": [{"kind": "categorical", "name": "sex"}]}',
     "column 'sex': missing ['categories']"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "continuous", "name": "x", "lower": "0", "upper": null}]}', "column 'x': malformed continuous spec"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "categorical", "name": "sex", "categories": "MF"}]}', "column 'sex': 'categories' must be a list"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "categorical", "name": "c", "categories": [["a"]]}]}', "column 'c': malformed categorical spec"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "boolean", "name": "b", "nullable": "yes"}]}', "column 'b': 'nullable' must be true or false"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": [{"kind": "boolean", "name": "b"}], "column_order": null}',
     "schema 'column_order' must be a list"),
    ('{"format": "tabsynth.schema", "version": 1, "columns": '
     '[{"kind": "integer", "name": "n", "lower": 0, "upper": ' + "9" * 400 + '}]}', "column 'n': malformed integer spec"),
])
def test_malformed_schema_json_names_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Schema.from_json(text)


def test_duplicate_categories_are_refused() -> None:
    with pytest.raises(SchemaError, match="column 'c'.*distinct"):
        CategoricalColumn("c", categories=("a", "a"))._check()


def test_knots_must_span_the_bounds() -> None:
    with pytest.raises(SchemaError, match="column 'x': the first and last knots"):
        Schema((ContinuousColumn("x", lower=0, upper=10, knots=(1.0, 10.0)),))


def test_integer_bounds_beyond_int64_are_refused_before_any_training() -> None:
    # Inferred from a public uint64 column of identifiers past 2^63, they crashed the decoder after the fit.
    identifiers = pd.DataFrame({"id": np.uint64(2**63) + np.arange(500, dtype=np.uint64)})
    with pytest.raises(SchemaError, match="column 'id': integer bounds .* beyond int64"):
        Schema.infer(identifiers)
    with pytest.raises(SchemaError, match="column 'id'"):
        Schema((IntegerColumn("id", lower=0, upper=2**64),))


def test_integer_bounds_that_float64_rounds_past_int64_are_refused() -> None:
    # 2^63 - 1 is 2^63 as a float64: decoded values wrapped to -2^63.
    with pytest.raises(SchemaError, match=r"column 'id': integer bounds .*magnitudes below 2\^63"):
        Schema((IntegerColumn("id", lower=0, upper=2**63 - 1),))
    Schema((IntegerColumn("id", lower=-2**63, upper=2**62),))


def test_a_column_described_twice_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"\['lat'\] are described more than once"):
        Schema((ContinuousColumn("lat", lower=0, upper=1),
                GeoPointColumn("p", lat="lat", lon="lon", region=BoundingBox(0, 1, 0, 1))))


def test_infer_recognises_each_kind() -> None:
    frame = pd.DataFrame({
        "score": [0.5, 1.5, 2.25, 3.0],
        "count": pd.array([1, 2, None, 4], dtype="Int64"),
        "flag": [True, False, True, True],
        "city": ["a", "b", "a", None],
        "when": pd.to_datetime(["2021-01-01", "2021-02-01", "2021-03-01", "2021-04-01"]),
        "latitude": [51.5, 48.8, 40.4, 52.5],
        "longitude": [-0.1, 2.3, -3.7, 13.4],
    })
    schema = Schema.infer(frame)
    assert isinstance(schema["score"], ContinuousColumn)
    assert isinstance(schema["count"], IntegerColumn) and schema["count"].nullable
    assert isinstance(schema["flag"], BooleanColumn)
    assert schema["city"] == CategoricalColumn("city", nullable=True, dtype="str", categories=("a", "b"))
    assert isinstance(schema["when"], DatetimeColumn) and schema["when"].resolution == "D"
    geo = schema["latitude"]
    assert isinstance(geo, GeoPointColumn) and (geo.lat, geo.lon) == ("latitude", "longitude")
    assert geo.region == BoundingBox(40.4, 52.5, -3.7, 13.4)


@pytest.mark.parametrize("stamps, resolution", [(["2021-01-01 10:00", "2021-01-02 11:30"], "m"),
                                                (["2021-01-01 10:00:00.250", "2021-01-02 00:00:00.000"], "ms")])
def test_infer_reads_timestamps_at_the_coarsest_exact_resolution(stamps: list[str], resolution: str) -> None:
    public = pd.DataFrame({"at": pd.to_datetime(stamps)})
    schema = Schema.infer(public)
    assert schema["at"].resolution == resolution
    encoder = Encoder(schema.with_dtypes(public))
    assert encoder.decode(encoder.encode(public))["at"].tolist() == public["at"].tolist()


def test_infer_reads_a_timedelta_column_as_durations_at_the_coarsest_exact_resolution() -> None:
    public = pd.DataFrame({"stay": pd.to_timedelta([0, 36, 12, None, 5 * 24], unit="h").astype("timedelta64[s]")})
    stay = Schema.infer(public)["stay"]
    assert isinstance(stay, DurationColumn) and stay.nullable and stay.dtype == "timedelta64[s]"
    assert (stay.resolution, stay.lower_ticks, stay.upper_ticks) == ("h", 0, 120)
    assert pd.Timedelta(stay.upper) == pd.Timedelta(days=5)


@pytest.mark.parametrize("lower, upper, fragment", [
    ("soon", "P1D", "bounds must be durations"),
    ("P2D", "P1D", "lower bound 172800 exceeds upper bound 86400"),
])
def test_a_duration_with_bad_bounds_is_refused_by_name(lower: str, upper: str, fragment: str) -> None:
    with pytest.raises(SchemaError, match=f"column 'stay': {fragment}"):
        Schema((DurationColumn("stay", lower=lower, upper=upper),))


@pytest.mark.parametrize("ticks, resolution", [(10**8, "D"), (-(2**62), "s"), (-1_500, "ms"), (3, "ns")])
def test_duration_text_reads_back_exactly_past_what_nanoseconds_hold(ticks: int, resolution: str) -> None:
    text = duration_text(ticks, resolution)
    assert DurationColumn("d", lower=text, upper=text, resolution=resolution).lower_ticks == ticks


def test_duration_bounds_read_iso_and_pandas_text_and_negative_spans() -> None:
    column = DurationColumn("wait", lower="-PT1M30S", upper="2 days 00:00:01", resolution="s")
    assert (column.lower_ticks, column.upper_ticks) == (-90, 2 * 86400 + 1)


def test_infer_finds_the_geo_pair_of_the_quakes_demo_in_0_to_360_longitudes() -> None:
    schema = Schema.infer(load_demo("quakes"))
    geo = schema["lat"]
    assert isinstance(geo, GeoPointColumn) and geo.lon == "lon"
    assert geo.region.bounds()[3] > 180


def test_infer_overrides_a_kind_or_a_whole_spec() -> None:
    frame = pd.DataFrame({"code": [101, 205, 101, 930], "score": [1.0, 2.0, 3.0, 4.0]})
    spec = ContinuousColumn("score", lower=0.0, upper=10.0)
    schema = Schema.infer(frame, overrides={"code": "categorical", "score": spec})
    assert schema["code"] == CategoricalColumn("code", dtype="int64", categories=(101, 205, 930))
    assert schema["score"] is spec


def test_infer_keeps_a_public_categorical_dtypes_levels_in_their_order() -> None:
    levels = ["low", "middle", "high", "unused"]
    public = pd.DataFrame({"v": pd.Categorical(["high", "low", "low", "middle"], categories=levels, ordered=True)})
    assert Schema.infer(public)["v"].categories == tuple(levels)


def test_infer_reads_a_timezone_aware_column_of_local_midnights_as_local_dates() -> None:
    # In UTC New York's midnights are 05:00, or 04:00 in summer: its ticks count wall-clock time instead.
    public = pd.DataFrame({"d": pd.to_datetime(["2020-03-01", "2020-03-05", "2020-03-09", "2020-11-02"]
                                               ).tz_localize("America/New_York")})
    schema = Schema.infer(public)
    assert (schema["d"].resolution, schema["d"].local) == ("D", True)
    encoder = Encoder(schema.with_dtypes(public))
    assert encoder.decode(encoder.encode(public))["d"].tolist() == public["d"].tolist()


def test_infer_from_a_public_table_of_few_rows_warns_how_much_its_bounds_may_leave_out() -> None:
    with pytest.warns(UserWarning, match=r"only 3 rows.*50% here"):
        Schema.infer(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))


def test_infer_from_a_public_table_of_few_categories_warns_of_categories_only() -> None:
    with pytest.warns(UserWarning, match=r"only 3 rows: categories held by few rows are missing;"):
        Schema.infer(pd.DataFrame({"c": ["a", "b", "a"]}))


def test_infer_from_a_public_table_of_enough_rows_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Schema.infer(pd.DataFrame({"a": np.arange(SMALL_PUBLIC_ROWS, dtype=float)}))


@pytest.mark.parametrize("dtype", [pd.ArrowDtype(pa.decimal128(12, 2)), pd.ArrowDtype(pa.decimal256(40, -3)),
                                   pd.ArrowDtype(pa.timestamp("us", tz="UTC")), pd.Int64Dtype(), np.dtype("float32"),
                                   pd.ArrowDtype(pa.string()), pd.ArrowDtype(pa.large_string()),
                                   pd.StringDtype("pyarrow"), pd.StringDtype("python"),
                                   pd.StringDtype("pyarrow", na_value=np.nan),
                                   pd.ArrowDtype(pa.dictionary(pa.int8(), pa.string())),
                                   pd.ArrowDtype(pa.dictionary(pa.int32(), pa.int64(), ordered=True))])
def test_a_dtypes_text_reads_back_as_the_dtype(dtype: object) -> None:
    assert read_dtype(dtype_text(dtype)) == dtype


def test_a_dtype_text_that_names_no_dtype_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        read_dtype(dtype_text(pd.ArrowDtype(pa.list_(pa.int64()))))


def test_infer_refuses_overrides_for_unknown_columns() -> None:
    with pytest.raises(SchemaError, match=r"\['nope'\]"):
        Schema.infer(pd.DataFrame({"a": [1, 2]}), overrides={"nope": "integer"})


def test_infer_folds_rare_levels_into_a_catch_all_beyond_max_categories() -> None:
    frame = pd.DataFrame({"c": ["a"] * 5 + ["b"] * 3 + ["c", "d"]})
    column = Schema.infer(frame, max_categories=2)["c"]
    assert column.categories == ("a", "b") and column.catch_all == "<other>"


@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_infer_cuts_a_numbers_range_into_even_parts_beside_its_quantile_knots(dtype: str) -> None:
    # A thin upper tail: the quantiles alone leave one segment over most of the range, where a later
    # year's values may move (an income after years of inflation).
    values = np.concatenate([np.random.default_rng(0).uniform(100, 200, 990), np.linspace(200, 1000, 10)])
    knots = np.array(Schema.infer(pd.DataFrame({"wage": values.astype(dtype)}))["wage"].knots)
    assert np.diff(knots).max() <= (knots[-1] - knots[0]) / EVEN_KNOT_PARTS + 1  # + 1: integers' rounding
    assert EVEN_KNOT_PARTS >= 4  # without the even knots one segment would span 80% of the range
    assert np.sum(knots <= 200) >= 30  # the quantile knots are all still there


def test_infer_gives_zero_inflated_columns_repeated_knots() -> None:
    frame = pd.DataFrame({"gain": [0] * 900 + list(range(1000, 101000, 1000))})
    knots = Schema.infer(frame)["gain"].knots
    assert knots[0] == 0 and knots.count(0.0) > len(knots) // 2 and knots[-1] == 100000


def test_infer_makes_a_value_held_by_many_rows_a_point_mass_among_the_quantile_knots() -> None:
    # Incomes spread over a range, with round values held by many rows (as surveys report them).
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 200_000, 9_300), [50_000.0] * 500, [100_000.0] * 150, [12_345.0] * 50])
    column = Schema.infer(pd.DataFrame({"income": values}))["income"]
    knots = np.array(column.knots)
    assert (knots == 50_000).sum() >= 2 and (knots == 100_000).sum() >= 2  # 5% and 1.5% of the rows
    assert (knots == 12_345).sum() < 2  # 0.5%: below POINT_MASS_SHARE, left to the quantiles
    encoder = Encoder(Schema((column,)))
    frame = pd.DataFrame({"income": [50_000.0, 100_000.0]})
    np.testing.assert_array_equal(encoder.decode(encoder.encode(frame))["income"].to_numpy(dtype=float),
                                  [50_000.0, 100_000.0])


def test_with_point_masses_adds_only_the_knots_a_mass_lacks() -> None:
    knots = with_point_masses(np.array([0.0, 0.0, 1.0, 5.0, 9.0]), np.array([0.0, 1.0, 3.0, 12.0]))
    assert knots.tolist() == [0.0, 0.0, 1.0, 1.0, 3.0, 3.0, 5.0, 9.0]  # 12 lies outside the knots' range


def test_with_point_masses_takes_the_heaviest_first_while_they_fit_under_max_knots() -> None:
    knots = np.arange(MAX_KNOTS - 2, dtype=float)  # room for two more knots
    grown = with_point_masses(knots, np.array([0.5, 7.0, 9.5]))  # 0.5 needs two, 7 one, 9.5 two: too many
    assert len(grown) == MAX_KNOTS and (grown == 0.5).sum() == 2 and (grown == 7.0).sum() == 1
    assert 9.5 not in grown


@pytest.mark.parametrize("values", [[16.3, 73.0, 2674.3, 2731.2, 4187.9], [0, 1000, 250000]])
def test_infer_makes_every_value_of_a_column_of_few_values_a_point_mass(values: list[float]) -> None:
    frame = pd.DataFrame({"density": np.random.default_rng(0).choice(values, 1000)})
    column = Schema.infer(frame)["density"]
    assert column.knots == tuple(float(v) for v in np.repeat(values, 2))
    encoder = Encoder(Schema((column,)))
    decoded = encoder.decode(encoder.encode(frame))["density"]
    np.testing.assert_array_equal(decoded.to_numpy(dtype=float), frame["density"].to_numpy(dtype=float))


def test_infer_splits_integer_knot_segments_too_wide_for_float32() -> None:
    frame = pd.DataFrame({"big": list(range(100)) + [2_000_000]})
    knots = np.array(Schema.infer(frame)["big"].knots)
    assert np.max(np.diff(knots)) * (len(knots) - 1) < 2**22


def test_infer_keeps_knots_bounded_when_no_float32_map_can_be_exact() -> None:
    frame = pd.DataFrame({"huge": list(range(100)) + [10**12]})
    knots = np.array(Schema.infer(frame)["huge"].knots)
    assert len(knots) <= 257 and knots[-1] == 10**12


@pytest.mark.parametrize("frame, fragment", [
    (pd.DataFrame(), "has no columns"),
    (pd.DataFrame({"a": pd.Series([], dtype="float64")}), "is empty"),
    (pd.DataFrame([[1, 2]], columns=["a", "a"]), r"duplicate column names: \['a'\]"),
])
def test_infer_rejects_tables_no_schema_can_describe(frame: pd.DataFrame, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        Schema.infer(frame)


def test_infer_rejects_a_column_of_only_nulls() -> None:
    with pytest.raises(SchemaError, match="column 'empty' holds only missing values"):
        Schema.infer(pd.DataFrame({"empty": [None, None], "a": [1, 2]}))
