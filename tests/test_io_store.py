"""Reading tables in batches, the compact training store, and Parquet output in the input's types."""

from __future__ import annotations

import datetime
import decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tabsynth import (BooleanColumn, CategoricalColumn, ContinuousColumn, Encoder, IntegerColumn, Schema, SchemaError,
                      Synthesizer)
from tabsynth.datasets import load_demo
from tabsynth.io import (FrameSource, ParquetSource, TableReadError, open_table, plain_schema, schema_from_text,
                         schema_to_text, write_parquet)
from tabsynth.store import CompactStore


def typed_frame(n: int = 500) -> pd.DataFrame:
    """Every Arrow type a release must keep: dictionary, nullable int, timestamp with zone, string, int32."""
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "state": pd.Categorical(rng.choice(["CA", "NY", "TX"], n)),
        "children": pd.array(np.where(rng.random(n) < 0.2, None, rng.integers(0, 5, n)), dtype="Int64"),
        "visited": pd.to_datetime(rng.integers(1_500_000_000, 1_600_000_000, n), unit="s").tz_localize("UTC"),
        "name": pd.Series(rng.choice(["ann", "bob", None], n), dtype="str"),
        "score": rng.integers(0, 100, n).astype("int32"),
        "income": rng.normal(50_000, 10_000, n),
    })


def test_a_parquet_directory_is_read_in_batches_with_the_files_dtypes(tmp_path: Path) -> None:
    frame = typed_frame()
    frame.iloc[:200].to_parquet(tmp_path / "a.parquet")
    frame.iloc[200:].to_parquet(tmp_path / "b.parquet")
    source = open_table(tmp_path, "private table")
    assert isinstance(source, ParquetSource) and not source.in_memory
    assert source.count_rows() == 500 and source.columns == list(frame.columns)
    batches = list(source.batches(batch_rows=64))
    assert max(len(b) for b in batches) <= 64
    assert all(list(b.dtypes) == list(frame.dtypes) for b in batches)
    pd.testing.assert_frame_equal(source.read(), frame)


def hive_dataset(root: Path, groups: dict[str, int]) -> Path:
    """A Hive-partitioned dataset: ``groups`` maps each directory value of ``grp`` to its row count."""
    rng = np.random.default_rng(0)
    for value, rows in groups.items():
        (root / f"grp={value}").mkdir(parents=True)
        pq.write_table(pa.table({"x": rng.normal(size=rows)}), root / f"grp={value}" / "part.parquet")
    return root


def test_a_private_datasets_partition_fields_are_text_whatever_their_directory_names(tmp_path: Path) -> None:
    # pyarrow would infer int32 from "grp=1" and "grp=2", and text once one row sits under "grp=x":
    # one row would set the column's kind, and with it the model's shape and the output's type.
    numbers = open_table(hive_dataset(tmp_path / "a", {"1": 300, "2": 200}), "df")
    one_more = open_table(hive_dataset(tmp_path / "b", {"1": 300, "2": 200, "x": 1}), "df")
    for source in (numbers, one_more):
        assert source.untyped_columns == {"grp"}
        assert source.arrow_schema.field("grp").type == pa.string()
        assert source.empty()["grp"].dtype == numbers.empty()["grp"].dtype
    assert sorted(numbers.read()["grp"].unique()) == ["1", "2"]


def test_a_public_datasets_partition_fields_keep_their_inferred_types(tmp_path: Path) -> None:
    source = open_table(hive_dataset(tmp_path, {"1": 300, "2": 200}), "public", public=True)
    assert source.untyped_columns == frozenset() and pd.api.types.is_integer_dtype(source.empty()["grp"].dtype)


def test_partition_fields_read_as_text_take_the_public_tables_kind(tmp_path: Path) -> None:
    private = hive_dataset(tmp_path, {"1": 300, "2": 200})
    rng = np.random.default_rng(1)
    public = pd.DataFrame({"x": rng.normal(size=400), "grp": rng.choice([1, 2], 400)})
    synth = Synthesizer(seed=0, epochs=1, marginal_steps=5).fit(private, epsilon=1.0, public=public)
    assert isinstance(synth.schema_["grp"], IntegerColumn)
    assert set(synth.sample(50, seed=0)["grp"]) <= {1, 2}


def test_a_file_pandas_wrote_from_arrow_dictionaries_is_read_although_pandas_cannot(tmp_path: Path) -> None:
    # A frame read with dtype_backend="pyarrow" and written back: its pandas metadata names a dtype
    # that pd.read_parquet itself fails on ("data type 'dictionary<...>[pyarrow]' not understood").
    labels = pa.array(["a", "b", "a", "c"] * 50).dictionary_encode()
    frame = pd.DataFrame({"d": pd.Series(pd.arrays.ArrowExtensionArray(labels)), "x": np.arange(200.0)})
    frame.to_parquet(tmp_path / "t.parquet")
    source = open_table(tmp_path / "t.parquet", "private table")
    assert source.empty().dtypes.to_dict() == frame.dtypes.to_dict()
    pd.testing.assert_frame_equal(source.read(), frame)


def test_an_unnamed_index_pandas_stored_is_left_out_and_a_named_level_kept(tmp_path: Path) -> None:
    # The row labels of a filtered frame (__index_level_0__) were in the output's schema but not in the
    # frame, and the output failed after training.
    frame = pd.DataFrame({"a": np.arange(10), "b": list("abcdefghij")})
    frame[frame["a"] % 2 == 0].to_parquet(tmp_path / "filtered.parquet")
    source = open_table(tmp_path / "filtered.parquet", "private table")
    assert source.columns == source.arrow_schema.names == ["a", "b"]
    levels = frame.set_index(["a", pd.Index(range(10))])
    levels.index = levels.index.set_names(["a", None])
    levels.to_parquet(tmp_path / "levels.parquet")
    source = open_table(tmp_path / "levels.parquet", "private table")
    assert sorted(source.columns) == sorted(source.arrow_schema.names) == ["a", "b"]


@pytest.mark.parametrize(("directories", "public_values", "expected"), [
    (("1", "2"), pd.Categorical([1, 2]), CategoricalColumn),
    (("true", "false"), [True, False], BooleanColumn),
])
def test_partition_fields_take_the_public_tables_categories_of_numbers_and_booleans(
        tmp_path: Path, directories: tuple[str, str], public_values: object, expected: type) -> None:
    # Read as text, they matched no category of numbers ('1' is not 1) and no boolean.
    private = hive_dataset(tmp_path, {directories[0]: 300, directories[1]: 200})
    public = pd.DataFrame({"x": np.random.default_rng(1).normal(size=400),
                           "grp": pd.Series(public_values).repeat(200).reset_index(drop=True)})
    synth = Synthesizer(seed=0, epochs=1, marginal_steps=5).fit(private, epsilon=1.0, public=public)
    assert isinstance(synth.schema_["grp"], expected)
    assert set(synth.sample(50, seed=0)["grp"].dropna()) <= set(pd.Series(public_values))


def test_a_partition_value_that_does_not_parse_as_its_schema_type_is_refused_without_quoting_it(
        tmp_path: Path) -> None:
    private = hive_dataset(tmp_path, {"1": 300, "2": 200, "ZZ_UNIQUE": 1})
    public = pd.DataFrame({"x": np.random.default_rng(1).normal(size=400), "grp": [1, 2] * 200})
    with pytest.raises(TableReadError, match="does not parse as the type the schema gives its field") as caught:
        Synthesizer(seed=0, epochs=1, marginal_steps=5).fit(private, epsilon=1.0, public=public)
    assert "ZZ_UNIQUE" not in str(caught.value)


def test_an_integer_column_with_nulls_from_a_file_without_pandas_metadata_stays_integer(tmp_path: Path) -> None:
    # As pyarrow, Spark or DuckDB write it: pandas would read the column as float64 wherever a batch holds a null.
    ages = pa.array([30, None, 41, 52] * 50, pa.int32())
    pq.write_table(pa.table({"age": ages, "flag": pa.array([True, None, False, True] * 50)}), tmp_path / "t.parquet")
    source = open_table(tmp_path / "t.parquet", "private table")
    assert source.empty().dtypes.to_dict() == {"age": pd.Int32Dtype(), "flag": pd.BooleanDtype()}
    batch = next(source.batches(batch_rows=64))
    assert batch["age"].dtype == pd.Int32Dtype() and batch["age"].isna().sum() == 16


def test_a_column_the_file_declares_non_null_keeps_numpys_dtype(tmp_path: Path) -> None:
    # Storage metadata, as nullability is: a declared non-null integer gets no missing flag downstream.
    schema = pa.schema([pa.field("age", pa.int32(), nullable=False), pa.field("n", pa.int64())])
    pq.write_table(pa.table({"age": pa.array([30, 41], pa.int32()), "n": pa.array([1, None])}, schema=schema),
                   tmp_path / "t.parquet")
    source = open_table(tmp_path / "t.parquet", "private table")
    assert source.empty().dtypes.to_dict() == {"age": np.dtype("int32"), "n": pd.Int64Dtype()}
    assert next(source.batches()).dtypes.to_dict() == {"age": np.dtype("int32"), "n": pd.Int64Dtype()}


def test_an_ordered_categorical_read_in_batches_keeps_its_order(tmp_path: Path) -> None:
    levels = ["low", "mid", "high"]  # not alphabetical
    frame = pd.DataFrame({"grade": pd.Categorical(np.tile(levels, 100), categories=levels, ordered=True)})
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=64)
    read = open_table(tmp_path / "t.parquet", "t").read()
    assert read["grade"].dtype.ordered and list(read["grade"].dtype.categories) == levels
    assert read["grade"].tolist() == frame["grade"].tolist()


def test_the_stored_arrow_schema_carries_no_row_count(tmp_path: Path) -> None:
    typed_frame().to_parquet(tmp_path / "t.parquet")
    schema = open_table(tmp_path / "t.parquet", "t").arrow_schema
    assert schema.metadata is None  # pandas' metadata records the RangeIndex stop, i.e. the row count
    assert schema_from_text(schema_to_text(schema)).equals(schema)


def test_missing_empty_and_misnamed_tables_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TableReadError, match="private table not found"):
        open_table(tmp_path / "nope.parquet", "private table")
    typed_frame().iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(TableReadError, match="empty"):
        open_table(tmp_path / "empty.parquet", "private table")
    (tmp_path / "data.txt").write_text("a,b\n1,2\n")
    with pytest.raises(TableReadError, match=r"\*\.csv"):
        open_table(tmp_path / "data.txt", "private table")
    with pytest.raises(TypeError, match="DataFrame or the path"):
        open_table(42, "df")


def test_poisson_row_sample_keeps_each_row_at_the_rate() -> None:
    frame = pd.DataFrame({"x": np.arange(20_000)})
    sample = FrameSource(frame, "t").sample(0.1, np.random.default_rng(1))
    assert abs(len(sample) - 2000) < 4 * np.sqrt(2000 * 0.9)
    assert FrameSource(frame, "t").sample(1.5, np.random.default_rng(1)) is frame


def test_written_parquet_has_the_inputs_arrow_types(tmp_path: Path) -> None:
    frame = typed_frame()
    frame.to_parquet(tmp_path / "in.parquet")
    arrow = open_table(tmp_path / "in.parquet", "t").arrow_schema
    synthetic = typed_frame(300).sample(frac=1.0, random_state=1)
    for name in ("children", "score"):  # decoders may hand back wider integer dtypes
        synthetic[name] = synthetic[name].astype("Int64")
    rows = write_parquet([synthetic.iloc[:100], synthetic.iloc[100:]], tmp_path / "out.parquet", arrow)
    assert rows == 300
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 2
    assert plain_schema(pq.read_schema(tmp_path / "out.parquet")).equals(arrow)
    back = pd.read_parquet(tmp_path / "out.parquet")
    assert back["children"].dtype == "Int64" and back["children"].isna().any()


def database_table(n: int = 400) -> pa.Table:
    """Types a database export holds: a DATE and a DECIMAL column, as pyarrow writes them (no pandas metadata)."""
    rng = np.random.default_rng(0)
    days = rng.integers(0, 3650, n)
    return pa.table({"opened": pa.array(np.datetime64("2010-01-01", "D") + days.astype("timedelta64[D]"), pa.date32()),
                     "balance": pa.array([decimal.Decimal(f"{v:.2f}") for v in rng.gamma(2, 50, n)],
                                         pa.decimal128(7, 2))})


def test_parquet_dates_and_decimals_are_read_as_timestamps_and_floats(tmp_path: Path) -> None:
    # pandas would give objects, which read as unordered labels.
    table = database_table()
    pq.write_table(table, tmp_path / "t.parquet")
    source = open_table(tmp_path / "t.parquet", "private table")
    frame = source.read()
    assert frame.dtypes.to_dict() == {"opened": np.dtype("datetime64[s]"), "balance": np.dtype("float64")}
    assert source.day_columns == {"opened"}
    np.testing.assert_array_equal(frame["opened"].to_numpy().astype("datetime64[D]"),
                                  table["opened"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(frame["balance"], [float(v) for v in table["balance"].to_pylist()], rtol=0, atol=1e-9)


def test_dates_and_decimals_are_written_back_with_their_arrow_types(tmp_path: Path) -> None:
    pq.write_table(database_table(), tmp_path / "in.parquet")
    arrow = open_table(tmp_path / "in.parquet", "t").arrow_schema
    opened = pd.to_datetime(["2012-05-01 17:30", "1969-12-31 23:00"]).astype("datetime64[s]")
    synthetic = pd.DataFrame({"opened": opened,
                              "balance": [12.346, 1e9]},  # a time of day; a number past decimal(7, 2)
                             index=[500, 501])  # a later batch of a sample
    write_parquet([synthetic], tmp_path / "out.parquet", arrow)
    back = pq.read_table(tmp_path / "out.parquet")
    assert plain_schema(back.schema).equals(arrow)
    assert back["opened"].to_pylist() == [datetime.date(2012, 5, 1), datetime.date(1969, 12, 31)]
    assert back["balance"].to_pylist() == [decimal.Decimal("12.35"), decimal.Decimal("99999.99")]
    assert pd.read_parquet(tmp_path / "out.parquet").dtypes.to_dict() == {"opened": object, "balance": object}


def test_a_wide_decimal_is_clamped_below_its_largest_value_not_rounded_past_it(tmp_path: Path) -> None:
    # 9,999,999,999,999,999.99 has no float: the nearest one, 1e16, would overflow decimal(18, 2).
    arrow = pa.schema([pa.field("amount", pa.decimal128(18, 2))])
    write_parquet([pd.DataFrame({"amount": [1e17, -1e17, 5.5]})], tmp_path / "out.parquet", arrow)
    values = pq.read_table(tmp_path / "out.parquet")["amount"].to_pylist()
    assert values == [decimal.Decimal("9999999999999998.00"), decimal.Decimal("-9999999999999998.00"),
                      decimal.Decimal("5.50")]


def test_real_numbers_for_an_integer_column_are_rounded_and_clamped_to_its_arrow_type(tmp_path: Path) -> None:
    # A public table or schema may make an int8 column real and wider: the cast failed after training.
    arrow = pa.schema([pa.field("age", pa.int64()), pa.field("v", pa.int8())])
    write_parquet([pd.DataFrame({"age": [26.5, 27.4, np.nan], "v": pd.array([142, -3, -900], dtype="Int64")})],
                  tmp_path / "out.parquet", arrow)
    back = pq.read_table(tmp_path / "out.parquet")
    assert plain_schema(back.schema).equals(arrow)
    assert back["age"].to_pylist() == [26, 27, None] and back["v"].to_pylist() == [127, -3, -128]


def test_pandas_reads_an_output_back_in_the_inputs_types_whatever_the_synthetic_dtypes(tmp_path: Path) -> None:
    # A public table's 0/1 integers beside private booleans wrote metadata pandas could not read back;
    # its UTC beside the input's Berlin time read back in UTC.
    arrow = pa.schema([pa.field("flag", pa.bool_()), pa.field("at", pa.timestamp("us", tz="Europe/Berlin"))])
    synthetic = pd.DataFrame({"flag": pd.array([1, 0], dtype="Int64"),
                              "at": pd.to_datetime(["2020-01-01 10:00", "2020-06-01 12:00"]).tz_localize("UTC")})
    write_parquet([synthetic], tmp_path / "out.parquet", arrow)
    back = pd.read_parquet(tmp_path / "out.parquet")
    assert back["flag"].tolist() == [True, False]
    assert str(back["at"].dt.tz) == "Europe/Berlin" and back["at"].iloc[0] == synthetic["at"].iloc[0]


def test_a_column_of_arrows_null_type_is_written_as_nulls(tmp_path: Path) -> None:
    arrow = pa.schema([pa.field("nothing", pa.null()), pa.field("x", pa.float64())])
    write_parquet([pd.DataFrame({"nothing": ["<other>", None], "x": [1.0, 2.0]})], tmp_path / "out.parquet", arrow)
    assert pq.read_table(tmp_path / "out.parquet")["nothing"].null_count == 2


def test_files_of_a_dataset_with_different_columns_or_kinds_are_refused_naming_the_file(tmp_path: Path) -> None:
    # pyarrow reads every file by the first one's schema: a column the others lack was dropped
    # silently, and a kind that disagrees failed mid-scan naming neither column nor file.
    columns, kinds = tmp_path / "columns", tmp_path / "kinds"
    columns.mkdir(), kinds.mkdir()
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), columns / "p1.parquet")
    pq.write_table(pa.table({"a": [3, 4], "c": ["x", "y"]}), columns / "p2.parquet")
    with pytest.raises(TableReadError, match=r"the file p2.parquet has columns .* \(lacks \['b'\]; adds \['c'\]\)"):
        open_table(columns, "private table")
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int32())}), kinds / "p1.parquet")
    pq.write_table(pa.table({"a": pa.array([3, 4], pa.int64())}), kinds / "p2.parquet")
    assert open_table(kinds, "private table").count_rows() == 4  # integers of two widths are one kind
    pq.write_table(pa.table({"a": ["u", "v"]}), kinds / "p3.parquet")
    with pytest.raises(TableReadError, match=r"the file p3.parquet holds 'a' as string \(the first file: int32\)"):
        open_table(kinds, "private table")


def test_a_private_value_past_the_datasets_unified_type_is_not_quoted_in_the_read_error(tmp_path: Path) -> None:
    # pyarrow's cast error quoted it ("Integer value 18446744073709551000 not in range"), and the CLI printed it.
    pq.write_table(pa.table({"a": pa.array([1, 2], pa.int64())}), tmp_path / "p1.parquet")
    pq.write_table(pa.table({"a": pa.array([3, 18_446_744_073_709_551_000], pa.uint64())}), tmp_path / "p2.parquet")
    with pytest.raises(TableReadError, match="details are withheld") as caught:
        open_table(tmp_path, "private table").read()
    assert "18446744073709551000" not in str(caught.value) and caught.value.__context__ is None


def test_an_unreadable_file_of_a_private_dataset_is_named_without_its_partition_values(tmp_path: Path) -> None:
    (tmp_path / "city=Zanzibar").mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), tmp_path / "city=Zanzibar" / "p1.parquet")
    (tmp_path / "city=Zanzibar" / "p2.parquet").write_bytes(b"not parquet")
    with pytest.raises(TableReadError) as caught:
        open_table(tmp_path, "private table")
    assert "Zanzibar" not in str(caught.value) and caught.value.__context__ is None


def test_a_named_index_pandas_stored_is_a_column_in_the_files_order(tmp_path: Path) -> None:
    # It was read as the frame's index: the model's columns then missed it and its output failed.
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=pd.Index([7, 8, 9], name="pid"))
    frame.to_parquet(tmp_path / "t.parquet")
    source = open_table(tmp_path / "t.parquet", "private table")
    assert source.columns == source.arrow_schema.names
    assert source.read()["pid"].tolist() == [7, 8, 9]


def test_parquet_columns_no_kind_describes_are_refused_by_name(tmp_path: Path) -> None:
    table = pa.table({"ok": pa.array([1, 2]), "at": pa.array([1, 2], pa.time32("s")),
                      "tags": pa.array([["a"], ["b", "c"]]), "raw": pa.array([b"x", b"y"])})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(TableReadError,
                       match=r"'at' \(time32\[ms\]\), 'tags' \(list<element: string>\), 'raw' \(binary\)"):
        open_table(tmp_path / "t.parquet", "private table")


def test_parquet_durations_are_read_as_timedeltas_and_written_back_as_durations(tmp_path: Path) -> None:
    pq.write_table(pa.table({"took": pa.array([90, None, 3600], pa.duration("ms"))}), tmp_path / "in.parquet")
    source = open_table(tmp_path / "in.parquet", "private table")
    frame = source.read()
    assert frame["took"].dtype == np.dtype("timedelta64[ms]")
    write_parquet([frame], tmp_path / "out.parquet", source.arrow_schema)
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.schema.field("took").type == pa.duration("ms")
    assert back["took"].to_pylist() == pq.read_table(tmp_path / "in.parquet")["took"].to_pylist()


@pytest.mark.parametrize(("values", "hint"), [
    ([datetime.date(2020, 1, 2), None], r"pd.to_datetime\(df\[column\]\)"),
    ([decimal.Decimal("1.50"), decimal.Decimal("2.25")], r"df\[column\].astype\(float\)"),
    ([datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone.utc),
      datetime.datetime(2020, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))],
     r"pd.to_datetime\(df\[column\], utc=True\)"),
    ([datetime.timedelta(hours=1), None], r"pd.to_timedelta\(df\[column\]\)"),
    ([datetime.time(8, 30), datetime.time(9)], "no column kind describes"),
])
def test_public_object_columns_of_dates_decimals_or_times_are_refused_with_the_conversion(values: list,
                                                                                        hint: str) -> None:
    frame = pd.DataFrame({"label": ["a", "b"], "value": pd.Series(values, dtype=object)})
    with pytest.raises(SchemaError, match=rf"public column 'value' .*{hint}"):
        open_table(frame, "public", public=True)


@pytest.mark.parametrize("values", [[datetime.date(2020, 1, 2), None], [decimal.Decimal("1.5"), "a"],
                                    [datetime.time(8, 30), None], [["a"], "b"]])
def test_a_private_tables_object_values_are_not_judged_when_it_is_opened(values: list) -> None:
    # Whether the fit runs must not depend on one row's type: DP discovery or the schema decides.
    frame = pd.DataFrame({"label": ["a", "b"], "value": pd.Series(values, dtype=object)})
    assert open_table(frame, "private table").read() is frame


@pytest.mark.parametrize(("values", "hint"), [
    (pd.Categorical(pd.to_datetime(["2020-01-01", "2021-01-01"])), r"timestamp or duration column: df\[column\] = "
                                                                    r"df\[column\].astype\('datetime64\[us\]'\)"),
    (pd.array(pa.array([datetime.date(2020, 1, 2)] * 2).dictionary_encode(),
              dtype=pd.ArrowDtype(pa.dictionary(pa.int32(), pa.date32()))), r"astype\('date32\[day\]\[pyarrow\]'\)"),
    (pd.cut([0.5, 1.5], [0, 1, 2]), r"text: df\[column\] = df\[column\].astype\(str\)"),
    (pd.Categorical(pd.period_range("2020-01", periods=2, freq="M")), r"text: df\[column\]"),
    (pd.array(pa.array([decimal.Decimal("1.5")] * 2).dictionary_encode(),
              dtype=pd.ArrowDtype(pa.dictionary(pa.int32(), pa.decimal128(3, 1)))), r"decimal128\(3, 1\) values.*numbers"),
])
def test_categoricals_of_timestamps_periods_or_intervals_are_refused_with_the_conversion(values: object,
                                                                                        hint: str) -> None:
    frame = pd.DataFrame({"label": ["a", "b"], "value": values})
    with pytest.raises(SchemaError, match=rf"private table column 'value' is a categorical of .*{hint}"):
        open_table(frame, "private table")


@pytest.mark.parametrize(("values", "hint"), [
    (pd.Categorical([decimal.Decimal("1.5"), decimal.Decimal("2")]), r"numbers: df\[column\] = df\[column\].astype\(float\)"),
    (pd.Categorical([1.0, np.inf]), r"levels such as inf.*text"),
])
def test_public_categoricals_of_decimals_or_infinities_are_refused_with_the_conversion(values: object,
                                                                                      hint: str) -> None:
    frame = pd.DataFrame({"label": ["a", "b"], "value": values})
    with pytest.raises(SchemaError, match=rf"public column 'value' is a categorical of .*{hint}"):
        open_table(frame, "public", public=True)


def test_a_private_categoricals_object_levels_are_not_judged_when_it_is_opened() -> None:
    frame = pd.DataFrame({"label": ["a", "b"], "value": pd.Categorical([decimal.Decimal("1.5"), "x"])})
    assert open_table(frame, "private table").read() is frame


@pytest.mark.parametrize(("values", "public"), [(np.array([b"x", b"y"]), False), (np.array([b"x", b"y"]), True),
                                               (pd.Series([b"x", None], dtype=object), True)])
def test_a_column_of_raw_bytes_is_refused_with_the_decoding(values: object, public: bool) -> None:
    # A private table's dtype of bytes says so without a row; an object column's bytes are its values.
    frame = pd.DataFrame({"label": ["a", "b"]}).assign(value=values)
    with pytest.raises(SchemaError, match=r"column 'value' holds raw bytes \(dtype (\|S1|object)\).*str.decode"):
        open_table(frame, "table", public=public)


def schema() -> Schema:
    return Schema((CategoricalColumn("c", nullable=True, categories=("a", "b", "c")),
                   IntegerColumn("small", lower=0, upper=4),
                   ContinuousColumn("x", lower=0.0, upper=1.0)))


def test_a_public_csvs_columns_of_iso_dates_and_timestamps_are_read_as_timestamps(tmp_path: Path) -> None:
    pd.DataFrame({"day": ["2020-01-03", "2021-12-31", None], "time": ["2020-01-03 10:00", "2020-01-03T11:30:05",
                                                                      "2020-02-01 00:00:01.5"],
                  "utc": ["2020-01-03T10:00:00+02:00", "2020-01-03T10:00:00Z", None],
                  "label": ["2020-01-03", "soon", "2020-01-01"], "month_13": ["2020-13-01", "2020-01-01", None]}
                 ).to_csv(tmp_path / "t.csv", index=False)
    frame = open_table(tmp_path / "t.csv", "public", public=True).read()
    assert frame["day"].tolist()[:2] == [pd.Timestamp("2020-01-03"), pd.Timestamp("2021-12-31")]
    assert pd.isna(frame["day"].iloc[2]) and frame["time"].iloc[2] == pd.Timestamp("2020-02-01 00:00:01.5")
    assert frame["utc"].iloc[0] == pd.Timestamp("2020-01-03 08:00", tz="UTC")
    assert not pd.api.types.is_datetime64_any_dtype(frame["label"])  # one value is no date: text
    assert not pd.api.types.is_datetime64_any_dtype(frame["month_13"])


def test_a_private_csv_is_read_as_text_and_typed_by_the_schemas_kinds(tmp_path: Path) -> None:
    # Its types came from its values: one row of "A17" among zip codes of digits turned them into text.
    pd.DataFrame({"zip": ["02139", "A17", None], "n": ["1", "2.5", "x"], "day": ["2020-01-03", "soon", None],
                  "flag": ["True", "false", "maybe"], "took": ["1 hours", "30s", "?"]}).to_csv(tmp_path / "t.csv",
                                                                                           index=False)
    source = open_table(tmp_path / "t.csv", "private table")
    assert source.untyped_columns == {"zip", "n", "day", "flag", "took"}
    assert source.read()["zip"].tolist()[:2] == ["02139", "A17"]
    typed = source.typed_by({"n": pa.float64(), "day": pa.timestamp("ns"), "flag": pa.bool_(),
                             "took": pa.duration("ns")}).read()
    assert typed["n"].tolist()[:2] == [1.0, 2.5] and pd.isna(typed["n"].iloc[2])  # text that does not parse: missing
    assert typed["day"].iloc[0] == pd.Timestamp("2020-01-03") and typed["day"].isna().tolist()[1:] == [True, True]
    assert typed["flag"].tolist()[:2] == [True, False] and pd.isna(typed["flag"].iloc[2])
    assert typed["took"].iloc[0] == pd.Timedelta(hours=1) and pd.isna(typed["took"].iloc[2])
    assert typed["zip"].tolist()[:2] == ["02139", "A17"]


def test_a_private_csvs_text_in_a_zoned_column_is_wall_clock_time_unless_it_carries_an_offset(tmp_path: Path) -> None:
    pd.DataFrame({"at": ["2020-06-01", "2020-06-01T12:00:00+00:00", "2020-03-29T02:30"]}).to_csv(tmp_path / "t.csv",
                                                                                                 index=False)
    typed = open_table(tmp_path / "t.csv", "private table").typed_by({"at": pa.timestamp("ns", "Europe/Berlin")})
    at = typed.read()["at"]
    assert at.iloc[0] == pd.Timestamp("2020-06-01", tz="Europe/Berlin")  # was read as UTC: 02:00 in Berlin
    assert at.iloc[1] == pd.Timestamp("2020-06-01 14:00", tz="Europe/Berlin")
    assert pd.isna(at.iloc[2])  # a wall-clock time the clocks skipped


def test_a_private_csvs_only_null_is_an_empty_field(tmp_path: Path) -> None:
    pd.DataFrame({"code": ["NA", "null", None, "x"]}).to_csv(tmp_path / "t.csv", index=False)
    assert open_table(tmp_path / "t.csv", "private table").read()["code"].tolist()[:2] == ["NA", "null"]
    assert pd.isna(open_table(tmp_path / "t.csv", "private table").read()["code"].iloc[2])


def test_a_null_a_declared_schema_forbids_names_the_column_and_the_likely_cause_but_no_count() -> None:
    public = pd.DataFrame({"x": [1.0, 2.0, 3.0] * 20, "c": ["a", "b", "a"] * 20})
    private = public.copy()
    private.loc[[3, 7], "x"] = np.nan
    schema = Schema.infer(public)  # declared by the user: x is not nullable
    with pytest.raises(SchemaError, match=r"column 'x' of the private table violates the schema \(a missing value") as info:
        Synthesizer(steps=1, marginal_steps=2, seed=0).fit(private, epsilon=1.0, schema=schema)
    assert "2" not in str(info.value)


def test_a_public_table_without_nulls_admits_private_nulls_where_the_private_dtype_can_hold_them() -> None:
    # Census-style: a field left blank only this year. Nullability comes from the private dtypes
    # (float64, str can hold nulls; int64 cannot), never from whether the private values have any.
    public = pd.DataFrame({"x": [1.0, 2.0, 3.0] * 200, "c": ["a", "b", "a"] * 200, "n": [1, 2, 3] * 200})
    private = public.copy()
    private.loc[::3, "x"] = np.nan
    private.loc[1::3, "c"] = None
    fitted = Synthesizer(steps=2, marginal_steps=2, seed=0).fit(private, epsilon=1.0, public=public)
    nullable = {c.name: c.nullable for c in fitted.schema_.columns}
    assert nullable == {"x": True, "c": True, "n": False}
    assert list(fitted.sample(50, seed=0).columns) == ["x", "c", "n"]


def test_a_private_csv_needs_a_schema_or_a_public_table(tmp_path: Path) -> None:
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "c": ["a", "b", "a"]}).to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(SchemaError, match="CSV file: its column types would be inferred from the private values"):
        Synthesizer().fit(tmp_path / "p.csv", epsilon=1.0)


def test_a_private_csvs_value_inferred_dtypes_do_not_reach_the_model(tmp_path: Path) -> None:
    # A blank makes pandas read the integer column as float64: the model must not record that.
    pd.DataFrame({"n": [1, None, 3, 2] * 50, "c": ["a", "b", "a", "b"] * 50}).to_csv(tmp_path / "p.csv", index=False)
    schema = Schema([IntegerColumn("n", lower=0, upper=5, nullable=True),
                     CategoricalColumn("c", categories=("a", "b"))])
    synth = Synthesizer(steps=1, marginal_steps=2, seed=0).fit(tmp_path / "p.csv", epsilon=1.0, schema=schema)
    assert synth.schema_["n"].dtype is None and synth.schema_["c"].dtype is None
    assert pd.api.types.is_integer_dtype(synth.sample(50, seed=0)["n"])


def test_compact_rows_expand_to_the_encoded_vectors_and_compress_back() -> None:
    encoder = Encoder(schema())
    frame = pd.DataFrame({"c": ["a", None, "c", "b"], "small": [0, 4, 2, 3], "x": [0.0, 0.5, 1.0, 0.25]})
    compact = encoder.encode_compact(frame)
    assert compact.shape == (4, encoder.compact_dim) == (4, 5)  # missing flag, code, offset, cell, place
    dense = encoder.expand(compact).numpy()
    assert dense.shape == (4, encoder.dim)
    assert dense[1, 1:4].sum() == 0  # a missing category has an all-zero block
    np.testing.assert_array_equal(encoder.compress(dense)[[0, 2, 3]], compact[[0, 2, 3]])
    pd.testing.assert_frame_equal(encoder.decode_compact(compact), encoder.decode(dense))


def test_a_disk_store_serves_the_same_rows_as_memory_and_removes_its_scratch_file(tmp_path: Path) -> None:
    frame = load_demo("cps_2004")
    frame.to_parquet(tmp_path / "private.parquet")
    encoder = Encoder(Schema.infer(frame))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    index = np.array([0, 5, 5, len(frame) - 1, 17])
    with CompactStore.build(encoder, open_table(frame, "df")) as memory, \
            CompactStore.build(encoder, open_table(tmp_path / "private.parquet", "df"), scratch_dir=scratch) as disk:
        assert len(disk) == len(memory) == len(frame)
        assert any(scratch.iterdir())
        np.testing.assert_array_equal(disk.take(index), memory.take(index))
        np.testing.assert_array_equal(np.concatenate(list(disk.chunks(1000))), memory.take(np.arange(len(frame))))
    assert not any(scratch.iterdir())


def test_a_store_that_fails_mid_table_leaves_no_scratch_file(tmp_path: Path) -> None:
    frame = pd.DataFrame({"c": ["a"] * 70_000 + ["zzz"], "small": 1, "x": 0.5})
    frame.to_parquet(tmp_path / "private.parquet")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(SchemaError, match="'c'"):
        CompactStore.build(Encoder(schema()), open_table(tmp_path / "private.parquet", "df"), scratch_dir=scratch)
    assert not any(scratch.iterdir())
