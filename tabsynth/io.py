"""Tables in and out: read a DataFrame, a Parquet file or directory, or a CSV file in batches, and
write synthetic rows to Parquet row group by row group.

A ``TableSource`` never holds more than one batch of a file in memory, so a private table larger
than RAM can be scanned (pyarrow's dataset scanner), encoded batch by batch and row-sampled. CSV is
read whole with pandas: its types are inferred from values, which a batch reader cannot keep
consistent across batches; convert large tables to Parquet. Its text columns of ISO 8601 dates and
timestamps are read as timestamps. As its types come from values, a private CSV needs a schema or a
public table (``TableSource.types_from_values``). Parquet dates are read as timestamps and decimals as
floats, and written back with their own Arrow types.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import os
import re
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tabsynth.schema import (SchemaError, check_column_names, check_frame, decimal_storable, is_arrow_dictionary,
                             is_label, is_null, label_conversion, level_dtype)

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zip", ".csv.zst")
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
BATCH_ROWS = 65_536

TableLike = pd.DataFrame | str | os.PathLike


class TableReadError(SchemaError):
    """A table file is missing, unreadable, empty, or not Parquet/CSV."""


def is_csv(path: str | os.PathLike) -> bool:
    """True when the file name says CSV (optionally compressed)."""
    return Path(path).name.lower().endswith(CSV_SUFFIXES)


def new_file_mode() -> int:
    """The mode ``open`` gives a new file, 0o666 less the process umask (``tempfile.mkstemp``'s are 0o600).

    Linux states the umask in /proc; elsewhere it is read by setting and restoring it, through the
    strictest mask, so that a file another thread makes meanwhile is no more open than it would be."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            mask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


class TableSource:
    """A table read in batches of DataFrames; ``columns`` and ``dtypes`` are known without reading rows."""

    in_memory: bool = True
    # The dtypes were inferred from the values (a CSV file), not read from storage metadata: for a
    # private table they are private, so its kinds and dtypes must come from a schema or public data.
    types_from_values: bool = False
    columns: list[str]

    def count_rows(self) -> int:
        """The exact row count (private for a private table: use it only through a DP mechanism)."""
        raise NotImplementedError

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """The rows in order, as DataFrames of at most ``batch_rows`` rows with consistent dtypes."""
        raise NotImplementedError

    def empty(self) -> pd.DataFrame:
        """Zero rows with the table's columns and pandas dtypes."""
        raise NotImplementedError

    @property
    def arrow_schema(self) -> pa.Schema | None:
        """Column names and Arrow types of a file (no metadata), or None for a DataFrame."""
        return None

    @property
    def day_columns(self) -> frozenset[str]:
        """Columns stored as calendar dates (read as timestamps at midnight): storage metadata."""
        return frozenset()

    @property
    def untyped_columns(self) -> frozenset[str]:
        """Columns whose storage records no type, read as text: a partitioned dataset's partition fields."""
        return frozenset()

    def typed_by(self, types: Mapping[str, pa.DataType]) -> "TableSource":
        """This source with its untyped columns read as ``types`` gives them (public knowledge: a declared
        schema's or a public table's kinds); itself when that changes nothing."""
        return self

    def sample(self, rate: float, rng: np.random.Generator) -> pd.DataFrame:
        """Each row independently with probability ``rate`` (all rows at rate >= 1)."""
        if rate >= 1.0:
            return self.read()
        return self._concat(batch[rng.random(len(batch)) < rate] for batch in self.batches())

    def read(self) -> pd.DataFrame:
        """The whole table in memory."""
        return self._concat(self.batches())

    def _concat(self, frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
        """Batches as one frame; categoricals whose batches differ in categories stay categorical, their
        categories in the batches' order (an ordered one's order is its meaning)."""
        empty, frames = self.empty(), list(frames)
        frame = pd.concat([empty, *frames], ignore_index=True)
        for name, dtype in empty.dtypes.items():
            if isinstance(dtype, pd.CategoricalDtype) and frame[name].dtype != dtype:
                levels = dict.fromkeys(level for batch in frames for level in batch[name].cat.categories)
                frame[name] = frame[name].astype(pd.CategoricalDtype(list(levels), ordered=dtype.ordered))
        return frame


class FrameSource(TableSource):
    """An in-memory DataFrame, served in slices (no copies)."""

    def __init__(self, frame: pd.DataFrame, argument: str, *, types_from_values: bool = False,
                 public: bool = False, untyped: Collection[str] = ()) -> None:
        check_frame(frame, argument)
        check_object_values(frame, argument, public=public)
        self.frame = frame
        self.argument = argument
        self.types_from_values = types_from_values
        self.columns = list(frame.columns)
        self._untyped = frozenset(untyped)

    @property
    def untyped_columns(self) -> frozenset[str]:
        """A private CSV's columns, read as text (``open_table``)."""
        return self._untyped

    def typed_by(self, types: Mapping[str, pa.DataType]) -> "TableSource":
        wanted = {name: types[name] for name in self._untyped if name in types}
        if not wanted:
            return self
        typed = self.frame.assign(**{name: _parsed(self.frame[name], type_) for name, type_ in wanted.items()})
        return FrameSource(typed, self.argument, types_from_values=self.types_from_values,
                           untyped=self._untyped - set(wanted))

    def count_rows(self) -> int:
        return len(self.frame)

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        for start in range(0, len(self.frame), batch_rows):
            yield self.frame.iloc[start:start + batch_rows]

    def empty(self) -> pd.DataFrame:
        return self.frame.iloc[:0]

    def read(self) -> pd.DataFrame:
        return self.frame


class ParquetSource(TableSource):
    """A Parquet file or a directory of Parquet files (a partitioned dataset), scanned in batches."""

    in_memory = False

    def __init__(self, path: Path, argument: str, *, public: bool = False,
                 partition_types: Mapping[str, pa.DataType] | None = None) -> None:
        self.path = path
        self.argument = argument
        self.public = public
        self.partition_types = dict(partition_types or {})
        try:
            if public or not path.is_dir():
                # A single file's partitioning would come from the directories above it: none.
                self.dataset = ds.dataset(str(path), format="parquet", partitioning="hive" if path.is_dir() else None)
                keys = _directory_keys(path, self.dataset.files) if path.is_dir() else ()
                self.partition_fields: tuple[str, ...] = ()
            else:
                # A partition field's type would be inferred from its directory names, which are values of
                # the table (one row's directory could turn a column of numbers into text): in a private
                # table such fields are read as text, or as the type a schema gives them (``typed_by``).
                # A key the files also hold as a column is that column, typed by the files.
                self.dataset = ds.dataset(str(path), format="parquet")
                keys = _directory_keys(path, self.dataset.files)
                self.partition_fields = tuple(key for key in keys if key not in self.dataset.schema.names)
                if self.partition_fields:
                    declared = pa.schema([pa.field(name, self.partition_types.get(name, pa.string()))
                                          for name in self.partition_fields])
                    self.dataset = ds.dataset(str(path), format="parquet",
                                              partitioning=ds.partitioning(declared, flavor="hive"))
        except (OSError, ValueError, pa.ArrowException) as exc:
            if public or not path.is_dir():
                raise TableReadError(f"cannot read {argument} {path} as Parquet: {exc}") from exc
            failure = type(exc).__name__
        else:
            failure = None
        # Raised outside the handler, so that pyarrow's message is not even the __context__: it names the
        # directory that failed to parse, or a file's path, whose key=value directories are private values.
        if failure is not None and self.partition_types:
            raise TableReadError(f"{argument} {path}: a partition directory's value does not parse as the type "
                                 f"the schema gives its field ({sorted(self.partition_types)}); details are "
                                 f"withheld because they would reveal private values")
        if failure is not None:
            raise TableReadError(f"cannot read {argument} {path} as a Parquet dataset ({failure}); details are "
                                 f"withheld because a file's path names private partition values")
        unified = _check_parts_agree(path, self.dataset, argument, set(keys))
        if unified is not None:  # files of one kind per column but of different widths or precisions
            self.dataset = ds.dataset(str(path), format="parquet", schema=unified,
                                      partitioning=self.dataset.partitioning)
        self._read_schema = _readable_schema(self.dataset.schema, f"{argument} {path}")
        # An index pandas stored in the file: a named one is a column of the table like any other (the
        # frame's index, it was missing from the model's columns and its output failed); an unnamed one
        # (``__index_level_0__``: row labels of a filtered frame) is no data and is left out.
        self._unnamed_index, self._unindexed = _without_pandas_index(self.dataset.schema)
        try:
            self._types = _NULLABLE_DTYPES.get if self.dataset.schema.pandas_metadata is None else None
            # A field the file declares non-null keeps numpy's dtype: storage metadata, like nullability itself.
            required = [f for f in self.dataset.schema if not f.nullable and f.type in _NULLABLE_DTYPES]
            self._required = {} if self._types is None else {f.name: f.type.to_pandas_dtype() for f in required}
            try:
                self._empty = self._frame(self.dataset.schema.empty_table())
            except TypeError as first:
                # pandas metadata naming a dtype pandas cannot read back: an Arrow dictionary's, which pandas
                # writes for a frame read with dtype_backend="pyarrow" (pd.read_parquet then fails too).
                self._types = _arrow_dictionary_dtype
                try:
                    self._empty = self._frame(self.dataset.schema.empty_table())
                except TypeError:
                    raise TableReadError(f"cannot read {argument} {path}: its pandas metadata names a dtype "
                                         f"pandas cannot read back ({first})") from first
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise TableReadError(f"cannot read {argument} {path} as Parquet: {exc}") from exc
        self.columns = list(self._empty.columns)
        if not self.columns:
            raise TableReadError(f"{argument} {path} has no columns"
                                 + (" (no Parquet files in it?)" if path.is_dir() else ""))
        check_column_names(self.columns, argument)
        self._rows = self.dataset.count_rows()  # from the files' metadata; read once
        if self._rows == 0:
            raise TableReadError(f"{argument} {path} is empty (0 rows)")

    def count_rows(self) -> int:
        return self._rows

    def batches(self, batch_rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        try:
            # pyarrow's default threaded read-ahead (16 batches of 4 files at once) runs ahead of the
            # encoder and holds gigabytes of decoded batches; a single-threaded scan is bounded and as fast.
            for batch in self.dataset.to_batches(batch_size=batch_rows, batch_readahead=1, fragment_readahead=1,
                                                 use_threads=False):
                if batch.num_rows:
                    # Through a table so that the dataset's pandas metadata restores nullable ints, categories.
                    yield self._frame(pa.Table.from_batches([batch], schema=self.dataset.schema))
            return
        except (OSError, pa.ArrowException) as exc:
            if self.public:
                raise TableReadError(f"cannot read {self.path}: {exc}") from exc
            # pyarrow's message quotes the value that failed (one past an integer type or a timestamp unit
            # the files' types were unified to): withheld, and unchained, as it is a private value.
            failure = type(exc).__name__
        raise TableReadError(f"cannot read {self.argument} {self.path} ({failure}: a value does not convert to the "
                             f"dataset's type, or a file is unreadable); details are withheld because they could "
                             f"reveal private values: check the files' types and integrity")

    def _frame(self, table: pa.Table) -> pd.DataFrame:
        """``table`` as pandas: the dataset's pandas metadata restores its dtypes; without it, integer and
        boolean columns become nullable dtypes unless the file declares them non-null."""
        if self._read_schema is not None:
            table = table.cast(self._read_schema)
        if self._unindexed is not None:
            table = table.drop_columns(self._unnamed_index).replace_schema_metadata(self._unindexed)
        frame = table.to_pandas(types_mapper=self._types)
        return frame.astype(self._required) if self._required else frame

    def empty(self) -> pd.DataFrame:
        return self._empty

    @property
    def arrow_schema(self) -> pa.Schema:
        schema = plain_schema(self.dataset.schema)
        return pa.schema([f for f in schema if f.name not in self._unnamed_index])

    @property
    def day_columns(self) -> frozenset[str]:
        return frozenset(f.name for f in self.dataset.schema if pa.types.is_date(f.type))

    @property
    def untyped_columns(self) -> frozenset[str]:
        return frozenset(name for name in self.partition_fields if name not in self.partition_types)

    def typed_by(self, types: Mapping[str, pa.DataType]) -> "TableSource":
        # Partition fields take numbers and booleans; a time stays text, as pyarrow would parse it.
        wanted = {name: types[name] for name in self.untyped_columns
                  if name in types and not pa.types.is_temporal(types[name])}
        if not wanted:
            return self
        return ParquetSource(self.path, self.argument, public=self.public,
                             partition_types={**self.partition_types, **wanted})


# pandas' nullable dtype per Arrow integer or boolean type, for files without pandas metadata (pyarrow,
# Spark, DuckDB): an integer column with nulls then stays integer instead of turning float64 in the
# batches that hold a null.
_NULLABLE_DTYPES = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                    pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                    pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _type_kind(type_: pa.DataType) -> str:
    """What a column of ``type_`` holds, as far as files of one dataset may differ in it: integers of any
    width are one kind, as are strings large or not and dictionaries of either."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    for kind, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("decimal", pa.types.is_decimal), ("null", pa.types.is_null),
                       ("timestamp", pa.types.is_timestamp), ("duration", pa.types.is_duration),
                       ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)
                        or pa.types.is_string_view(t)), ("boolean", pa.types.is_boolean)):
        if test(type_):
            return kind
    return str(type_)


def _check_parts_agree(root: Path, dataset: ds.Dataset, argument: str, partitions: set[str]) -> pa.Schema | None:
    """A dataset of several files must hold the same columns of the same kinds in each: pyarrow reads
    them all by the first file's schema, so a column only some files had was dropped or read as nulls,
    and a type that disagreed failed mid-scan without naming the column (or quoting a private value).
    Returns the dataset's schema with each column's types unified (the widest integer, the larger
    decimal, a null column as the others' type) where the files differ in those only; else None.
    (File metadata only: a file is named with its partition values left out, which are private.)"""
    if not root.is_dir():
        return None
    expected = {f.name: f.type for f in dataset.schema if f.name not in partitions}
    distinct: dict[tuple, pa.Schema] = {}  # by fields, metadata aside (pandas' differs from file to file)
    for fragment in dataset.get_fragments():
        where = f"{argument} {root}: the file {_file_name(fragment.path, root)}"
        physical = _physical_schema(fragment, where)
        fields_key = tuple((f.name, f.type, f.nullable) for f in physical)
        if fields_key in distinct:
            continue
        fields = {f.name: f.type for f in physical if f.name not in partitions}
        if set(fields) != set(expected):
            missing, extra = sorted(set(expected) - set(fields)), sorted(set(fields) - set(expected))
            raise TableReadError(f"{where} has columns that differ from the first file's ("
                                 + "; ".join(part for part in (f"lacks {missing}" if missing else "",
                                                               f"adds {extra}" if extra else "") if part)
                                 + "); give every file of a dataset the same columns")
        kinds = {name: (_type_kind(fields[name]), _type_kind(type_)) for name, type_ in expected.items()}
        differing = [f"{name!r} as {fields[name]} (the first file: {expected[name]})"
                     for name, (kind, first) in kinds.items() if kind != first and "null" not in (kind, first)]
        if differing:
            raise TableReadError(f"{where} holds {', '.join(differing)}; give every file of a dataset the "
                                 f"same column types")
        distinct[fields_key] = physical
    schemas = [pa.schema([physical.field(name) for name in expected]) for physical in distinct.values()]
    if all(schema.equals(schemas[0]) for schema in schemas[1:]):  # the first file's schema is the dataset's
        return None
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowException, TypeError) as exc:
        raise TableReadError(f"{argument} {root}: its files' column types do not agree: {exc}") from exc
    partition_fields = [f for f in dataset.schema if f.name in partitions]
    return pa.schema([unified.field(name) for name in expected] + partition_fields, metadata=dataset.schema.metadata)


def _file_name(path: str, root: Path) -> str:
    """A dataset file's path under ``root`` with its partition values left out (they are private)."""
    return "/".join(part.split("=", 1)[0] + "=..." if "=" in part else part
                    for part in Path(os.path.relpath(path, root)).parts)


def _physical_schema(fragment: ds.Fragment, where: str) -> pa.Schema:
    """A file's schema, read from its footer; pyarrow's message on failure names the file's whole path."""
    try:
        return fragment.physical_schema
    except (OSError, pa.ArrowException) as exc:
        failure = type(exc).__name__
    raise TableReadError(f"cannot read {where}: not a readable Parquet file ({failure})")


def _arrow_dictionary_dtype(type_: pa.DataType) -> pd.ArrowDtype | None:
    """Arrow dictionaries as pandas' Arrow dtype (a ``to_pandas`` types mapper); other types as pandas' metadata says."""
    return pd.ArrowDtype(type_) if pa.types.is_dictionary(type_) else None


def _without_pandas_index(schema: pa.Schema) -> tuple[list[str], dict[bytes, bytes] | None]:
    """The columns of an unnamed index pandas stored, and the schema's metadata with its index
    described as none (None when pandas stored no index as columns)."""
    metadata = schema.pandas_metadata
    stored = [name for name in (metadata or {}).get("index_columns", []) if isinstance(name, str)]
    if not stored:
        return [], None
    unnamed = [name for name in stored if re.fullmatch(r"__index_level_\d+__", name) and name in schema.names]
    described = {**metadata, "index_columns": [],
                 "columns": [c for c in metadata.get("columns", []) if c.get("field_name") not in unnamed]}
    return unnamed, {**(schema.metadata or {}), b"pandas": json.dumps(described).encode()}


def _directory_keys(root: Path, files: Iterable[str]) -> tuple[str, ...]:
    """The keys of the ``key=value`` directories that ``files`` lie in under ``root``, decoded as pyarrow
    decodes them: a Hive-partitioned dataset's partition fields (and any column the files also hold)."""
    directories = dict.fromkeys(os.path.dirname(file) for file in files)
    keys = (urllib.parse.unquote(part.split("=", 1)[0]) for directory in directories
            for part in Path(os.path.relpath(directory, root)).parts if "=" in part)
    return tuple(dict.fromkeys(keys))


def _readable_schema(schema: pa.Schema, argument: str) -> pa.Schema | None:
    """The schema to cast a file's batches to before pandas, or None when none is needed: dates become
    timestamps of seconds and decimals float64 (pandas would give objects that read as categories).
    Types that no column kind describes are refused here, before any row is read."""
    unsupported = [f"{f.name!r} ({f.type})" for f in schema if _unsupported(f.type)]
    if unsupported:
        raise TableReadError(f"{argument} has columns of types tabsynth cannot model: {', '.join(unsupported)}; "
                             f"drop them or convert them to numbers, text, booleans, timestamps or durations")
    fields = [f.with_type(pa.timestamp("s")) if pa.types.is_date(f.type)
              else f.with_type(pa.float64()) if pa.types.is_decimal(f.type) else f for f in schema]
    converted = pa.schema(fields, metadata=schema.metadata)
    return None if converted.equals(schema) else converted


def _unsupported(type_: pa.DataType) -> bool:
    """Arrow types no column kind describes: times of day, bytes, nested values, intervals."""
    return (pa.types.is_time(type_) or pa.types.is_binary(type_)
            or pa.types.is_large_binary(type_) or pa.types.is_fixed_size_binary(type_) or pa.types.is_nested(type_)
            or pa.types.is_interval(type_))


def check_object_values(frame: pd.DataFrame, argument: str, *, public: bool) -> None:
    """Object columns of dates, timestamps (say of mixed time zones), decimals, times or bytes would be
    modelled as categories of unordered labels (and fold into the catch-all); refuse them with the
    conversion that makes them numbers, timestamps or durations. Strings, mixed labels and missing values
    pass. So do categoricals and Arrow dictionaries of labels (strings, finite numbers, booleans); one
    of other levels (timestamps, decimals, intervals, bytes) is refused, as a model file records its
    levels as JSON values. Raw bytes are refused too.

    A private table (not ``public``) is judged by its dtypes alone: one row of a date in a column of
    nulls must not decide whether the fit runs. Its object values are left to DP discovery, which
    refuses the column when it releases such a value (``discovery``), or to the declared schema."""
    for name in frame.columns:
        dtype = frame[name].dtype
        inferred = pd.api.types.infer_dtype(frame[name], skipna=True) if public and dtype == object else None
        if isinstance(dtype, np.dtype) and dtype.kind in "SV" or inferred == "bytes":
            raise SchemaError(f"{argument} column {name!r} holds raw bytes (dtype {dtype}), which no column kind "
                              f"describes; drop it or decode it to text: df[column] = df[column].str.decode('utf-8')")
        problem = _unrecordable_levels(dtype, public)
        if problem is not None:
            described, conversion = problem
            raise SchemaError(f"{argument} column {name!r} is a categorical of {described}, which a model file "
                              f"cannot record as labels; convert it to {conversion}")
        if inferred in ("date", "datetime", "decimal", "timedelta"):
            example = next(value for value in frame[name] if not is_null(value))
            raise SchemaError(f"{argument} column {name!r} holds Python {inferred} objects, which tabsynth would "
                              f"treat as unordered labels; convert it first: {label_conversion(example)} "
                              f"(Parquet files are converted when read)")
        if inferred in ("time", "period", "interval", "complex"):
            raise SchemaError(f"{argument} column {name!r} holds {inferred} objects, which no column kind "
                              f"describes; drop it or convert it to numbers, text, booleans, timestamps or durations")


def _unrecordable_levels(dtype: object, public: bool) -> tuple[str, str] | None:
    """For a categorical or Arrow dictionary dtype with a level that a model file cannot record as a JSON
    label (a timestamp, a decimal, an interval, bytes, an infinite number): what those levels are and
    the conversion to apply; None when every level can be recorded. An Arrow dictionary's levels are
    data, so its value type decides; so does a private categorical's levels' dtype (object levels
    pass: which of them are labels is a fact about the rows)."""
    if isinstance(dtype, pd.CategoricalDtype) and public:
        level = next((level for level in dtype.categories if not is_label(level)), None)
        described = f"levels such as {level!r}"
    elif isinstance(dtype, pd.CategoricalDtype):
        levels = dtype.categories.dtype
        labels = levels == object or pd.api.types.is_numeric_dtype(levels) or pd.api.types.is_string_dtype(levels)
        level, described = (None if labels else levels), f"{levels} levels"
    elif is_arrow_dictionary(dtype):
        value_type = dtype.pyarrow_dtype.value_type
        labels = (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
                  or pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
                  or pa.types.is_boolean(value_type))
        level, described = (None if labels else value_type), f"{value_type} values"
    else:
        return None
    if level is None:
        return None
    levels = level_dtype(dtype)
    if getattr(levels, "kind", "O") in "mM":
        conversion = f"its values, a timestamp or duration column: df[column] = df[column].astype('{levels}')"
    elif isinstance(level, (datetime.date, datetime.timedelta)):
        parse = "pd.to_timedelta" if isinstance(level, datetime.timedelta) else "pd.to_datetime"
        conversion = f"its values: df[column] = {parse}(df[column].astype(object))"
    elif isinstance(level, decimal.Decimal) or pa.types.is_decimal(getattr(levels, "pyarrow_dtype", pa.null())):
        conversion = "numbers: df[column] = df[column].astype(float)"
    else:
        conversion = "text: df[column] = df[column].astype(str)"
    return described, conversion


def open_table(data: TableLike, argument: str, *, public: bool = False) -> TableSource:
    """A source for a DataFrame, a Parquet file or directory, or a CSV file (read whole). The types of a
    partitioned dataset's partition fields are inferred from their directory names only for a
    ``public`` table; otherwise they are text (``TableSource.untyped_columns``)."""
    if isinstance(data, pd.DataFrame):
        return FrameSource(data, argument, public=public)
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"{argument} must be a pandas DataFrame or the path of a Parquet/CSV table, "
                        f"got {type(data).__name__}")
    path = Path(data)
    if not path.exists():
        raise TableReadError(f"{argument} not found: {path}")
    if path.is_file() and is_csv(path):
        return _csv_source(path, argument, public)
    if path.is_file() and not path.name.lower().endswith(PARQUET_SUFFIXES):
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            raise TableReadError(f"cannot read {argument} {path}: name CSV files *.csv and Parquet files "
                                 f"*.parquet ({exc})") from exc
    return ParquetSource(path, argument, public=public)


# A date, or a date and time of day (to the minute or finer) with an optional UTC offset: ISO 8601 as
# pandas, Arrow, spreadsheets and databases write it.
_ISO_TIME = r"[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
_ISO_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)"
_ISO_TIMESTAMP = rf"\d{{4}}-\d{{2}}-\d{{2}}(?:{_ISO_TIME}{_ISO_OFFSET}?)?"


def _csv_source(path: Path, argument: str, public: bool) -> FrameSource:
    """A CSV file, read whole. A public one's types come from its values (ISO 8601 text as timestamps).
    A private one is read as text: its types would come from its values too, and one row could turn a
    column of numbers or dates into text; the schema or public table types it (``typed_by``)."""
    try:
        # A private CSV's only null is an empty field: "NA" or "null" may be a category's label.
        frame = pd.read_csv(path, low_memory=False,
                            **({} if public else {"dtype": str, "keep_default_na": False, "na_values": [""]}))
    except (OSError, ValueError) as exc:
        if public:
            raise TableReadError(f"cannot read {argument} {path} as CSV: {exc}") from exc
        failure = type(exc).__name__
    else:
        if public:
            return FrameSource(with_iso_timestamps(frame), f"{argument} {path}", types_from_values=True, public=True)
        return FrameSource(frame, f"{argument} {path}", types_from_values=True, untyped=frame.columns)
    raise TableReadError(f"cannot read {argument} {path} as CSV ({failure}); details are withheld because they "
                         f"could quote private rows")


_BOOLEAN_TEXT = {"true": True, "t": True, "1": True, "yes": True, "false": False, "f": False, "0": False,
                 "no": False}


def _parsed(text: pd.Series, type_: pa.DataType) -> pd.Series:
    """A private CSV column's text as ``type_`` (the schema's kind) holds it; text that does not parse
    is missing, an outcome for that row alone (refusing it would tell of the row)."""
    if pa.types.is_boolean(type_):
        return text.str.strip().str.lower().map(_BOOLEAN_TEXT).astype("boolean")
    if pa.types.is_integer(type_) or pa.types.is_floating(type_):
        numbers = pd.to_numeric(text, errors="coerce")  # integers: rounded as they are encoded
        return pd.Series(numbers.to_numpy(dtype=np.float64, na_value=np.nan), index=text.index, name=text.name)
    if pa.types.is_timestamp(type_):  # text with an offset is that instant; text without, a wall-clock time
        offset = text.str.contains(f"{_ISO_TIME}{_ISO_OFFSET}$", regex=True).fillna(False).astype(bool)
        instants = pd.to_datetime(text.where(offset), errors="coerce", format="ISO8601", utc=True)
        wall = pd.to_datetime(text.where(~offset), errors="coerce", format="ISO8601")
        if type_.tz:
            instants = instants.dt.tz_convert(type_.tz)
            wall = wall.dt.tz_localize(type_.tz, ambiguous="NaT", nonexistent="NaT")
        else:
            instants = instants.dt.tz_localize(None)
        return wall.where(~offset, instants)
    if pa.types.is_duration(type_):
        return pd.to_timedelta(text, errors="coerce")
    return text


def with_iso_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each text column whose every value is an ISO 8601 date or timestamp (and not all
    null) as timestamps: what a CSV reader leaves as text and the schema would model as unordered
    labels. Timestamps with UTC offsets become UTC; a column that does not parse stays text."""
    converted = {}
    for name in frame.columns:
        column = frame[name]
        if not (pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype)):
            continue
        values = column.dropna()
        if pd.api.types.infer_dtype(values) != "string" or not values.str.fullmatch(_ISO_TIMESTAMP).all():
            continue
        offsets = values.str.contains(f"{_ISO_TIME}{_ISO_OFFSET}$", regex=True)
        try:
            converted[name] = pd.to_datetime(column, format="ISO8601", utc=bool(offsets.any()))
        except (ValueError, OverflowError):  # a month 13, a year past pandas' range: leave it as text
            continue
    return frame.assign(**converted) if converted else frame


# --- Arrow schemas ------------------------------------------------------------------------------


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """Names, types and nullability only. Schema metadata must go: pandas' records the row count."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def schema_to_text(schema: pa.Schema) -> str:
    """An Arrow schema as base64 IPC bytes, for JSON metadata."""
    return base64.b64encode(plain_schema(schema).serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    """The inverse of ``schema_to_text``; reads flatbuffers only, never executes code."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text.encode("ascii"), validate=True)))


def to_arrow(frame: pd.DataFrame, schema: pa.Schema | None) -> pa.Table:
    """A synthetic DataFrame as an Arrow table, cast to ``schema`` (the input's types) when given."""
    if schema is None:
        return pa.Table.from_pandas(frame, preserve_index=False)
    columns = [_dictionary_array(frame[f.name], f.type) if pa.types.is_dictionary(f.type)
               else pa.array(_storable(frame[f.name], f.type), from_pandas=True).cast(f.type) for f in schema]
    # pandas metadata of the synthetic frame (dtypes only) lets pandas restore nullable ints and the like.
    # A column whose dtype pandas would store as another kind of Arrow type (dates and decimals, read
    # back as Python objects; a public table's booleans or time zone beside the input's) is described as
    # the written column reads, or pandas could not read the file back or would shift its time zone.
    stored = frame.head(1).copy()
    natural = pa.Schema.from_pandas(stored, preserve_index=False)
    for f, column in zip(schema, columns):
        if not _same_storage(natural.field(f.name).type, f.type):
            # by position: a batch's index need not start at 0
            stored[f.name] = column.slice(0, 1).to_pandas().to_numpy()
    metadata = pa.Schema.from_pandas(stored, preserve_index=False).metadata
    return pa.Table.from_arrays(columns, schema=plain_schema(schema).with_metadata(metadata))


def storable_frame(frame: pd.DataFrame, schema: pa.Schema | None) -> pd.DataFrame:
    """A synthetic frame with each column's values as the input's Arrow type stores them (``_storable``),
    for outputs that keep values but not types (CSV); the frame itself without ``schema``."""
    if schema is None:
        return frame
    stored = frame.copy(deep=False)
    for f in schema:
        if not pa.types.is_dictionary(f.type):
            stored[f.name] = _storable(frame[f.name], f.type)
    return stored


def _same_storage(written: pa.DataType, input_type: pa.DataType) -> bool:
    """Whether pandas' metadata for a column it would store as ``written`` also describes ``input_type``:
    the same kind of values (integers of any width, strings large or not, any dictionary), and for
    timestamps the same time zone."""
    if pa.types.is_dictionary(written) or pa.types.is_dictionary(input_type):
        return pa.types.is_dictionary(written) and pa.types.is_dictionary(input_type)
    if pa.types.is_timestamp(written) or pa.types.is_timestamp(input_type):
        return pa.types.is_timestamp(written) and pa.types.is_timestamp(input_type) and written.tz == input_type.tz
    return _type_kind(written) == _type_kind(input_type)


def _storable(series: pd.Series, type_: pa.DataType) -> pd.Series:
    """A synthetic column ready to cast to the input's Arrow type: timestamps of a date column floored to
    the day; numbers of a decimal column rounded to its scale and clamped to what its precision holds;
    numbers of an integer column (a public table's or a schema's kind may be real) rounded and clamped to
    what the type holds; nothing but nulls for a column of Arrow's null type."""
    if pa.types.is_date(type_) and pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series.dt.floor("D")
    if (pa.types.is_timestamp(type_) and pd.api.types.is_datetime64_any_dtype(series.dtype)
            or pa.types.is_duration(type_) and pd.api.types.is_timedelta64_dtype(series.dtype)):
        return series.dt.floor(type_.unit)  # a public table's finer unit would not cast to the input's
    if pa.types.is_decimal(type_) and pd.api.types.is_numeric_dtype(series.dtype):
        return decimal_storable(series, type_)
    if pa.types.is_integer(type_) and pd.api.types.is_numeric_dtype(series.dtype) \
            and not pd.api.types.is_bool_dtype(series.dtype):
        limits = np.iinfo(type_.to_pandas_dtype())
        if pd.api.types.is_integer_dtype(series.dtype):
            return series.clip(limits.min, limits.max)
        high = float(limits.max) if int(float(limits.max)) <= limits.max else np.nextafter(float(limits.max), 0.0)
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        whole = np.clip(np.round(np.where(missing, 0.0, values)), float(limits.min), high)
        integers = whole.astype(np.uint64 if pa.types.is_unsigned_integer(type_) else np.int64)
        return pd.Series(pd.arrays.IntegerArray(integers, missing), index=series.index)
    if pa.types.is_boolean(type_) and pd.api.types.is_numeric_dtype(series.dtype) \
            and not pd.api.types.is_bool_dtype(series.dtype):  # a public table's 0/1 beside private booleans
        return series.astype("boolean")
    if pa.types.is_null(type_):
        return pd.Series([None] * len(series), index=series.index, dtype=object)
    return series


def _dictionary_array(series: pd.Series, type_: pa.DictionaryType) -> pa.Array:
    """A dictionary column of the given index and value types."""
    array = pa.array(series, from_pandas=True)
    if not pa.types.is_dictionary(array.type):
        array = array.dictionary_encode()
    return array.cast(type_)


def write_parquet(batches: Iterable[pd.DataFrame], path: Path, schema: pa.Schema | None,
                  on_rows: Callable[[int], None] | None = None) -> int:
    """Write DataFrames to one Parquet file, one row group each; returns the number of rows.

    A background thread writes (compresses) batch i while the caller produces batch i + 1: at most
    two batches are in memory at once.
    """
    writer: pq.ParquetWriter | None = None
    pending: Future[None] | None = None
    rows = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tabsynth-parquet") as executor:
        try:
            for frame in batches:
                table = to_arrow(frame, schema)
                if writer is None:
                    writer = pq.ParquetWriter(str(path), table.schema)
                if pending is not None:
                    pending.result()
                pending = executor.submit(writer.write_table, table, row_group_size=len(table))
                rows += len(table)
                if on_rows is not None:
                    on_rows(len(table))
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                pending.exception()  # wait for the last write before closing, whatever happened
            if writer is not None:
                writer.close()
    return rows


__all__ = ["BATCH_ROWS", "CSV_SUFFIXES", "PARQUET_SUFFIXES", "FrameSource", "ParquetSource", "TableReadError",
           "TableSource", "is_csv", "open_table", "plain_schema", "schema_from_text", "schema_to_text",
           "new_file_mode", "storable_frame", "to_arrow", "with_iso_timestamps", "write_parquet"]
