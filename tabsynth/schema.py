"""The explicit domain of a table: one frozen spec per column, JSON round-trip, inference from public data.

A schema is the only thing the encoder learns from. It is written by hand, inferred from a table the
user declares public, or discovered under differential privacy (see ``tabsynth.privacy.discovery``);
never read off the private table.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from tabsynth.geo import BoundingBox, Region
from tabsynth.rules import Rule, RuleError

SCHEMA_FORMAT = "tabsynth.schema"
SCHEMA_VERSION = 1
MAX_BINARY_CODE_VALUES = 128
MAX_KNOTS = 257
# A value held by at least this share of a public column's rows becomes a point mass among its knots
# (round incomes, a code's busiest values): decoded exactly instead of spread over its knot cell.
POINT_MASS_SHARE = 0.01
# ``Schema.infer`` adds knots that cut a number's range into this many even parts to its quantile
# knots: a later year whose values moved into a range the public year barely held still finds cells
# there. CPS 1992 -> 2004 (hourly earnings up 44%): 1992's last quantile segment, [24.0, 44.2], holds
# 3% of 1992's rows and about 20% of 2004's; with the even knots the public release's 1-way / 2-way
# TVD at eps = 1 went from 0.049 / 0.103 and 0.046 / 0.096 to 0.026 / 0.067 and 0.028 / 0.067 (two
# seeds), and ACS Massachusetts 2018 -> 2019's from 0.019 / 0.059 and 0.019 / 0.057 to 0.019 / 0.059
# and 0.018 / 0.057, ACS national's from 0.012 / 0.050 and 0.012 / 0.049 to 0.012 / 0.050 and 0.012 /
# 0.050. Cutting the range into 16 parts: CPS 0.031 / 0.075 (both seeds), ACS Massachusetts 0.020 /
# 0.060 and 0.019 / 0.059.
EVEN_KNOT_PARTS = 8
# ``Schema.infer`` warns below this many public rows: a number's range from n rows of a like table
# leaves out about 2 / (n + 1) of its values (clamped to the bounds), 1% at 199 rows.
SMALL_PUBLIC_ROWS = 199
RESOLUTIONS = ("D", "h", "m", "s", "ms", "us", "ns")


class SchemaError(ValueError):
    """A schema, or a table checked against one, is malformed; the message names the column."""


@dataclass(frozen=True)
class Column:
    """Common fields: the DataFrame column name, whether it may be missing, the pandas dtype to restore."""

    name: str
    nullable: bool = False
    dtype: str | None = None
    kind: ClassVar[str] = ""

    @property
    def source_columns(self) -> tuple[str, ...]:
        """The DataFrame columns this spec owns (two for a geo point)."""
        return (self.name,)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}}

    def _check(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"column name must be a non-empty string, got {self.name!r}")


def _check_bounds(column: Column, lower: float, upper: float) -> None:
    if not (np.isfinite(lower) and np.isfinite(upper)):
        raise SchemaError(f"column {column.name!r}: bounds must be finite, got [{lower}, {upper}]")
    if lower > upper:
        raise SchemaError(f"column {column.name!r}: lower bound {lower} exceeds upper bound {upper}")


def _check_knots(column: Column, knots: tuple[float, ...] | None, lower: float, upper: float) -> None:
    if knots is None:
        return
    array = np.asarray(knots, dtype=np.float64)
    if len(array) < 2 or not np.isfinite(array).all() or np.any(np.diff(array) < 0):
        raise SchemaError(f"column {column.name!r}: knots must be >= 2 finite non-decreasing numbers")
    if array[0] != lower or array[-1] != upper:
        raise SchemaError(f"column {column.name!r}: the first and last knots must equal the bounds "
                          f"[{lower}, {upper}], got [{array[0]}, {array[-1]}]")


@dataclass(frozen=True)
class ContinuousColumn(Column):
    """A real number in [lower, upper]; optional quantile knots make skewed or zero-inflated columns learnable."""

    lower: float = 0.0
    upper: float = 1.0
    knots: tuple[float, ...] | None = None
    kind: ClassVar[str] = "continuous"

    def _check(self) -> None:
        super()._check()
        _check_bounds(self, self.lower, self.upper)
        _check_knots(self, self.knots, self.lower, self.upper)


@dataclass(frozen=True)
class IntegerColumn(Column):
    """An integer in [lower, upper]: a short binary code for at most 128 values (ages, hours, counts: each
    value its own marginal cell), else continuous then rounded."""

    lower: int = 0
    upper: int = 1
    knots: tuple[float, ...] | None = None
    kind: ClassVar[str] = "integer"

    @property
    def n_values(self) -> int:
        return self.upper - self.lower + 1

    @property
    def uses_binary_code(self) -> bool:
        return self.n_values <= MAX_BINARY_CODE_VALUES

    def _check(self) -> None:
        super()._check()
        # Values decode through float64, which rounds 2^63 - 1 up to 2^63: past int64 on the way back.
        if not (-2.0**63 <= float(self.lower) and float(self.upper) < 2.0**63):
            raise SchemaError(f"column {self.name!r}: integer bounds [{self.lower}, {self.upper}] lie beyond int64 as "
                              f"decoding's float64 holds it (magnitudes below 2^63); store such values as text "
                              f"(identifiers) or as floats (magnitudes)")
        _check_bounds(self, self.lower, self.upper)
        if int(self.lower) != self.lower or int(self.upper) != self.upper:
            raise SchemaError(f"column {self.name!r}: integer bounds must be whole numbers")
        _check_knots(self, self.knots, self.lower, self.upper)


@dataclass(frozen=True)
class BooleanColumn(Column):
    """True or False."""

    kind: ClassVar[str] = "boolean"


@dataclass(frozen=True)
class CategoricalColumn(Column):
    """One of an ordered list of categories; values outside it may map to a catch-all category."""

    categories: tuple[Any, ...] = ()
    catch_all: Any = None
    kind: ClassVar[str] = "categorical"

    @property
    def levels(self) -> tuple[Any, ...]:
        """Every value the encoder can emit: the categories, then the catch-all if any."""
        return self.categories + (() if self.catch_all is None else (self.catch_all,))

    def _check(self) -> None:
        super()._check()
        if not self.levels:
            raise SchemaError(f"column {self.name!r}: a categorical column needs at least one category")
        if len(set(self.levels)) != len(self.levels):
            raise SchemaError(f"column {self.name!r}: categories (and the catch-all) must be distinct")
        if any(is_null(c) for c in self.levels):
            raise SchemaError(f"column {self.name!r}: a category cannot be null; use nullable=True instead")


@dataclass(frozen=True)
class TickColumn(Column):
    """A point or span of time, counted in whole ticks of ``resolution``: the shared base of
    ``DatetimeColumn`` and ``DurationColumn``. Bounds are text; ``knots`` are in ticks."""

    lower: str = ""
    upper: str = ""
    resolution: str = "s"
    knots: tuple[float, ...] | None = None
    bound_text: ClassVar[str] = ""

    def ticks(self, value: Any) -> int:
        """``value`` as a whole number of resolution ticks (rounded down)."""
        raise NotImplementedError

    @property
    def lower_ticks(self) -> int:
        return self.ticks(self.lower)

    @property
    def upper_ticks(self) -> int:
        return self.ticks(self.upper)

    def _check(self) -> None:
        super()._check()
        if self.resolution not in RESOLUTIONS:
            raise SchemaError(f"column {self.name!r}: resolution must be one of {RESOLUTIONS}, "
                              f"got {self.resolution!r}")
        try:
            lower, upper = self.lower_ticks, self.upper_ticks
        except (ValueError, TypeError, OverflowError) as exc:
            raise SchemaError(f"column {self.name!r}: bounds must be {self.bound_text}: {exc}") from exc
        _check_bounds(self, lower, upper)
        _check_knots(self, self.knots, lower, upper)


@dataclass(frozen=True)
class DatetimeColumn(TickColumn):
    """A timestamp in [lower, upper] (ISO strings) at a resolution such as 'D' or 's'; timezone-aware dtypes kept.
    ``local``: a timezone-aware column's ticks count its wall-clock time, not UTC, so that local dates
    and hours keep their meaning (a local midnight is a whole day; daylight saving moves it in UTC)."""

    lower: str = "1970-01-01"
    upper: str = "1970-01-02"
    local: bool = False
    kind: ClassVar[str] = "datetime"
    bound_text: ClassVar[str] = "ISO timestamps"

    def ticks(self, value: Any) -> int:
        """A timestamp as a whole number of resolution units since the epoch (UTC, or wall-clock time if ``local``)."""
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_localize(None) if self.local else stamp.tz_convert("UTC").tz_localize(None)
        return int(np.datetime64(stamp.to_datetime64(), self.resolution).astype(np.int64))


def is_duration_dtype(dtype: Any) -> bool:
    """Whether a pandas dtype holds spans of time: numpy's timedelta64 or Arrow's duration (pandas'
    own test knows only the first; its datetime test already knows both kinds of timestamps)."""
    return pd.api.types.is_timedelta64_dtype(dtype) or (isinstance(dtype, pd.ArrowDtype)
                                                         and pa.types.is_duration(dtype.pyarrow_dtype))


def numpy_temporal_dtype(dtype: Any) -> Any:
    """For an Arrow dtype of timestamps, dates or durations, pandas' own dtype of the same unit (and
    zone): datetime64 (days as seconds) or timedelta64; any other dtype as it is."""
    if not isinstance(dtype, pd.ArrowDtype):
        return dtype
    arrow = dtype.pyarrow_dtype
    if pa.types.is_timestamp(arrow):
        return pd.DatetimeTZDtype(arrow.unit, arrow.tz) if arrow.tz else np.dtype(f"datetime64[{arrow.unit}]")
    if pa.types.is_date(arrow):
        return np.dtype("datetime64[s]")
    if pa.types.is_duration(arrow):
        return np.dtype(f"timedelta64[{arrow.unit}]")
    return dtype


def numpy_temporal(series: pd.Series) -> pd.Series:
    """An Arrow-backed series of timestamps, dates or durations in ``numpy_temporal_dtype``, which the
    encoder and discovery read; any other series as it is. The column's dtype stays the Arrow one:
    decoding casts back to it."""
    target = numpy_temporal_dtype(series.dtype)
    return series if target is series.dtype else series.astype(target)


def is_arrow_date(dtype: Any) -> bool:
    """Whether a pandas dtype is Arrow's calendar date (date32 / date64): storage that declares days."""
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_date(dtype.pyarrow_dtype)


def zone_of(dtype: Any) -> Any:
    """The time zone of a timestamp dtype, numpy-backed or Arrow (None: naive)."""
    if isinstance(dtype, pd.ArrowDtype):
        return getattr(dtype.pyarrow_dtype, "tz", None)
    return getattr(dtype, "tz", None)


def naive_stamps(stamps: pd.Series, local: bool) -> pd.Series:
    """Timestamps without a time zone: a timezone-aware series' wall-clock times (``local``) or UTC times."""
    if getattr(stamps.dt, "tz", None) is None:
        return stamps
    return stamps.dt.tz_localize(None) if local else stamps.dt.tz_convert("UTC").dt.tz_localize(None)


@dataclass(frozen=True)
class DurationColumn(TickColumn):
    """A span of time in [lower, upper] (text pandas reads as a Timedelta: ISO 8601 such as 'PT90S' or
    '-P1D', or '90s', '2 days') at a resolution such as 's' or 'D': a length of stay, a call's length."""

    lower: str = "P0D"
    upper: str = "P1D"
    kind: ClassVar[str] = "duration"
    bound_text: ClassVar[str] = "durations (ISO 8601 such as 'PT90S', or '90s', '2 days')"

    def ticks(self, value: Any) -> int:
        """A span as a whole number of resolution units (rounded down). ``duration_text``'s form is read
        exactly at any length; other text goes through pandas (spans of at most about 292 years)."""
        match = _ISO_DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if match:
            sign, days, hours, minutes, seconds, fraction = match.groups()
            whole = ((int(days) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
            nanoseconds = (whole * 10**9 + int((fraction or "").ljust(9, "0"))) * (-1 if sign else 1)
        else:
            span = pd.Timedelta(value)
            if span is pd.NaT:
                raise ValueError(f"{value!r} is not a duration")
            nanoseconds = span.value
        return nanoseconds // NANOSECONDS[self.resolution]


NANOSECONDS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_ISO_DURATION = re.compile(r"(-)?P(\d+)DT(\d+)H(\d+)M(\d+)(?:\.(\d{1,9}))?S")  # ``duration_text``'s form


def coarsest_exact_units(ticks: np.ndarray, unit: str) -> np.ndarray:
    """For each of ``ticks`` (whole ``unit``s since the epoch or of a span), the index in ``RESOLUTIONS``
    of the coarsest unit, days down to ``unit``, that holds it exactly."""
    units = RESOLUTIONS[: RESOLUTIONS.index(unit) + 1]
    coarsest = np.full(len(ticks), len(units) - 1)
    for i in range(len(units) - 2, -1, -1):  # coarser units overwrite finer ones
        coarsest[ticks % (NANOSECONDS[units[i]] // NANOSECONDS[unit]) == 0] = i
    return coarsest


def _resolution_of(values: np.ndarray) -> str:
    """The coarsest unit that holds every datetime64 or timedelta64 of ``values`` exactly (public data)."""
    unit = np.datetime_data(values.dtype)[0]
    return RESOLUTIONS[int(coarsest_exact_units(values.astype(np.int64), unit).max(initial=0))]


def duration_text(ticks: int, resolution: str) -> str:
    """A whole number of ``resolution`` ticks as ISO 8601 duration text (``-P1DT2H3M4.5S``) that
    ``DurationColumn`` reads back exactly, with integer arithmetic at any length."""
    rest = abs(int(ticks)) * NANOSECONDS[resolution]
    days, rest = divmod(rest, NANOSECONDS["D"])
    hours, rest = divmod(rest, NANOSECONDS["h"])
    minutes, rest = divmod(rest, NANOSECONDS["m"])
    seconds, nanoseconds = divmod(rest, NANOSECONDS["s"])
    fraction = f".{nanoseconds:09d}".rstrip("0") if nanoseconds else ""
    return f"{'-' if ticks < 0 else ''}P{days}DT{hours}H{minutes}M{seconds}{fraction}S"


@dataclass(frozen=True)
class GeoPointColumn(Column):
    """A latitude/longitude column pair that must lie in ``region``; ``name`` labels the pair."""

    lat: str = "lat"
    lon: str = "lon"
    region: Region = field(default_factory=lambda: BoundingBox(-90, 90, -180, 180))
    lat_dtype: str | None = None
    lon_dtype: str | None = None
    kind: ClassVar[str] = "geo"

    @property
    def source_columns(self) -> tuple[str, ...]:
        return (self.lat, self.lon)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["region"] = self.region.to_dict()
        return data

    def _check(self) -> None:
        super()._check()
        if self.lat == self.lon:
            raise SchemaError(f"geo column {self.name!r}: latitude and longitude must be different columns")
        if not isinstance(self.region, Region):
            raise SchemaError(f"geo column {self.name!r}: region must be a tabsynth.geo.Region")


COLUMN_KINDS: dict[str, type[Column]] = {
    cls.kind: cls for cls in (ContinuousColumn, IntegerColumn, BooleanColumn, CategoricalColumn,
                              DatetimeColumn, DurationColumn, GeoPointColumn)
}


@dataclass(frozen=True)
class Schema:
    """Every column of a table, in the table's column order; immutable and JSON round-trippable."""

    columns: tuple[Column, ...]
    column_order: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()  # edit rules every sampled record satisfies (see tabsynth.rules)

    def __post_init__(self) -> None:
        columns = tuple(self.columns)
        object.__setattr__(self, "columns", columns)
        if not columns:
            raise SchemaError("a schema needs at least one column")
        owned: list[str] = []
        for column in columns:
            if not isinstance(column, Column):
                raise SchemaError(f"schema columns must be Column specs, got {type(column).__name__}")
            column._check()
            owned.extend(column.source_columns)
        duplicates = sorted({n for n in owned if owned.count(n) > 1})
        if duplicates:
            raise SchemaError(f"columns {duplicates} are described more than once in the schema")
        specs = [c.name for c in columns]
        if len(set(specs)) != len(specs):
            raise SchemaError("schema column names must be distinct")
        order = tuple(self.column_order) or tuple(owned)
        if sorted(order) != sorted(owned):
            raise SchemaError(f"column_order {list(order)} must list exactly the columns {owned}")
        object.__setattr__(self, "column_order", order)
        rules = tuple(self.rules)
        object.__setattr__(self, "rules", rules)
        for rule in rules:
            if not isinstance(rule, Rule):
                raise SchemaError(f"schema rules must be tabsynth.rules.Rule objects, got {type(rule).__name__}")
            unknown = [c for c in rule.columns if c not in order]
            if unknown:
                raise SchemaError(f"rule '{rule}' names columns {unknown} that are not in the schema")
            target = next((c for c in columns if rule.then.column in c.source_columns), None)
            if rule.then.op == "is null" and target is not None and not target.nullable:
                raise SchemaError(f"rule '{rule}' makes column {rule.then.column!r} null, but the schema does not "
                                  f"declare it nullable")
            if rule.then.op == "==" and target is not None and not _holds_value(target, rule.then.value):
                hint = " (a boolean column takes true or false)" if isinstance(target, BooleanColumn) else ""
                raise SchemaError(f"rule '{rule}' sets column {rule.then.column!r} to {rule.then.value!r}, which is "
                                  f"not a value of its domain{hint}")

    def __getitem__(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name or name in column.source_columns:
                return column
        raise KeyError(f"no column {name!r} in the schema; columns: {list(self.column_order)}")

    def __contains__(self, name: object) -> bool:
        return name in self.column_order or any(c.name == name for c in self.columns)

    @property
    def names(self) -> tuple[str, ...]:
        """The DataFrame column names, in order."""
        return self.column_order

    def replace_column(self, column: Column) -> "Schema":
        """A copy with the spec of the same name swapped for ``column``."""
        if column.name not in {c.name for c in self.columns}:
            raise KeyError(f"no column {column.name!r} in the schema")
        return replace(self, columns=tuple(column if c.name == column.name else c for c in self.columns))

    def with_dtypes(self, frame: pd.DataFrame, *, fill: bool = True) -> "Schema":
        """A copy taking ``frame``'s column order, and (``fill``) its pandas dtypes where the schema records none.

        Dtypes are storage metadata, but a CSV reader infers them from values (a blank turns an int
        column into float64), so a declared or public dtype always wins over the frame's, and a private
        CSV's fill none (the decoder then picks a dtype by kind).
        """
        check_columns(self, frame)
        if not fill:
            return replace(self, column_order=tuple(frame.columns))
        updated = []
        for column in self.columns:
            if isinstance(column, GeoPointColumn):
                column = replace(column, lat_dtype=column.lat_dtype or dtype_text(frame[column.lat].dtype),
                                 lon_dtype=column.lon_dtype or dtype_text(frame[column.lon].dtype))
            elif column.dtype is None:
                column = replace(column, dtype=dtype_text(frame[column.name].dtype))
            updated.append(column)
        return replace(self, columns=tuple(updated), column_order=tuple(frame.columns))

    def with_storage_nullability(self, frame: pd.DataFrame, *, every: bool = False) -> "Schema":
        """A copy in which each column whose storage in ``frame`` can hold a null is nullable (``every``:
        all columns, for storage whose types a reader inferred from values, as a CSV's).

        For a schema inferred from a PUBLIC table applied to a private one: the public values say which
        columns had nulls last time, the private dtypes (storage metadata, not values) which may have
        them now. Columns of ``frame``'s absent from the schema are left to the column checks.
        """
        updated = []
        for column in self.columns:
            sources = [name for name in column.source_columns if name in frame.columns]
            if not column.nullable and sources and (every or any(can_hold_null(frame[n].dtype) for n in sources)):
                column = replace(column, nullable=True)
            updated.append(column)
        return replace(self, columns=tuple(updated))

    def with_rules(self, rules: Sequence[Rule]) -> "Schema":
        """A copy whose edit rules are ``rules`` (replacing any it had)."""
        return replace(self, rules=tuple(rules))

    # --- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {"format": SCHEMA_FORMAT, "version": SCHEMA_VERSION,
               "column_order": list(self.column_order), "columns": [c.to_dict() for c in self.columns]}
        if self.rules:
            out["rules"] = [rule.to_dict() for rule in self.rules]
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The schema as JSON text (no private data: it is built from declarations or public data)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Schema":
        if not isinstance(data, Mapping) or data.get("format") != SCHEMA_FORMAT:
            raise SchemaError(f"not a tabsynth schema: expected 'format': {SCHEMA_FORMAT!r}")
        if data.get("version") != SCHEMA_VERSION:
            raise SchemaError(f"unsupported schema version {data.get('version')!r}; "
                              f"this tabsynth reads version {SCHEMA_VERSION}")
        raw_columns = data.get("columns")
        if not isinstance(raw_columns, list):
            raise SchemaError("schema 'columns' must be a list")
        raw_rules = data.get("rules", [])
        if not isinstance(raw_rules, list):
            raise SchemaError("schema 'rules' must be a list")
        try:
            rules = tuple(Rule.from_dict(raw) for raw in raw_rules)
        except RuleError as exc:
            raise SchemaError(str(exc)) from exc
        column_order = data.get("column_order", [])
        if not isinstance(column_order, list) or not all(isinstance(name, str) for name in column_order):
            raise SchemaError(f"schema 'column_order' must be a list of column names, got {column_order!r}")
        return cls(tuple(_column_from_dict(raw) for raw in raw_columns), tuple(column_order), rules)

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        """Parse ``to_json`` output; a malformed document raises SchemaError naming what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    # --- inference from public data ---------------------------------------------------------

    @classmethod
    def infer(
        cls,
        public: pd.DataFrame,
        *,
        overrides: Mapping[str, Column | str] | None = None,
        geo: Mapping[str, tuple[str, str]] | None = None,
        detect_geo: bool = True,
        max_categories: int = 256,
        n_knots: int = 33,
        catch_all: Any = None,
    ) -> "Schema":
        """Describe a table the user declares PUBLIC; every choice can be overridden per column.

        ``overrides`` maps a column name to a full Column spec or to a kind name ("categorical",
        "integer", ...) to infer with; ``geo`` maps a pair name to (lat, lon) columns. Numeric columns
        get ``n_knots`` quantile knots plus knots cutting their range into ``EVEN_KNOT_PARTS`` even
        parts (robust to a later year's shift) and each value held by ``POINT_MASS_SHARE`` of their
        rows as a point mass (decoded exactly; dates too); strings with more than ``max_categories`` levels keep the most
        frequent and fold the rest into ``catch_all`` (default "<other>" then).
        """
        check_frame(public, "public")
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(public.columns) - set((geo or {}).keys()))
        if unknown:
            raise SchemaError(f"overrides name columns {unknown} that are not in the public table")
        pairs = dict(geo or {})
        if detect_geo and not geo:
            pairs.update(_detect_geo_pairs(public, exclude=overrides))
        paired = {c for pair in pairs.values() for c in pair}
        columns: list[Column] = []
        for name, (lat, lon) in pairs.items():
            for c in (lat, lon):
                if c not in public.columns:
                    raise SchemaError(f"geo pair {name!r} names column {c!r}, which is not in the table")
            columns.append(_infer_geo(public, name, lat, lon))
        for name in public.columns:
            if name in paired:
                continue
            override = overrides.get(name)
            if isinstance(override, Column):
                columns.append(override)
            else:
                columns.append(_infer_column(public[name], override, max_categories, n_knots, catch_all))
        if len(public) < SMALL_PUBLIC_ROWS:
            _warn_of_few_rows(len(public), [c for c in columns if not any(c is o for o in overrides.values())])
        return cls(tuple(columns), tuple(public.columns))


def _warn_of_few_rows(rows: int, inferred: Sequence[Column]) -> None:
    """``Schema.infer``'s warning for a public table of few ``rows``: what its ``inferred`` columns may miss."""
    gaps = []
    if any(not isinstance(c, (CategoricalColumn, BooleanColumn)) for c in inferred):
        gaps.append(f"a range from n rows leaves out about 2 / (n + 1) of a like table's values "
                    f"({2 / (rows + 1):.0%} here; clamped to the bounds)")
    if any(isinstance(c, CategoricalColumn) for c in inferred):
        gaps.append("categories held by few rows are missing")
    if gaps:
        warnings.warn(f"the public table has only {rows} rows: {', and '.join(gaps)}; declare the schema or give "
                      f"more public rows", UserWarning, stacklevel=3)


# --- table checks shared by the encoder and the synthesizer ---------------------------------


ORDERED_CATEGORY = "category[ordered]"  # dtype text of an ordered categorical


ARROW_STRING = "string[arrow]"  # dtype text of Arrow's own string dtype (its str() reads back as pandas')


def dtype_text(dtype: Any) -> str:
    """A pandas dtype as text that ``read_dtype`` reads back as the same dtype: ``str(dtype)``, except
    that a string dtype with NA semantics names its storage ("string" alone would read back as pyarrow's),
    Arrow's own string dtype is ``ARROW_STRING`` ("string[pyarrow]" reads back as pandas' string dtype)
    and an ordered categorical is ``ORDERED_CATEGORY`` (its levels come from the schema)."""
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_string(dtype.pyarrow_dtype):
        return ARROW_STRING
    if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA:
        return f"string[{dtype.storage}]"
    if isinstance(dtype, pd.CategoricalDtype) and dtype.ordered:
        return ORDERED_CATEGORY
    return str(dtype)


_ARROW_DECIMAL = re.compile(r"decimal(128|256)\((\d+), (-?\d+)\)\[pyarrow\]")
_ARROW_DICTIONARY = re.compile(r"dictionary<values=(\w+), indices=(\w+), ordered=([01])>\[pyarrow\]")


def read_dtype(text: str) -> Any:
    """The pandas dtype that ``dtype_text`` gave ``text`` for: ``pandas_dtype``'s reading, and an Arrow
    decimal's or dictionary's (whose parameters pandas does not read from text). TypeError for text that
    names none."""
    if text == ARROW_STRING:
        return pd.ArrowDtype(pa.string())
    decimal_type = _ARROW_DECIMAL.fullmatch(text)
    if decimal_type:
        bits, precision, scale = decimal_type.groups()
        return pd.ArrowDtype((pa.decimal128 if bits == "128" else pa.decimal256)(int(precision), int(scale)))
    dictionary_type = _ARROW_DICTIONARY.fullmatch(text)
    if dictionary_type:
        values, indices, ordered = dictionary_type.groups()
        try:
            return pd.ArrowDtype(pa.dictionary(pa.type_for_alias(indices), pa.type_for_alias(values), ordered == "1"))
        except (ValueError, TypeError) as exc:
            raise TypeError(f"dtype {text!r} cannot be read back: {exc}") from exc
    try:
        return pd.api.types.pandas_dtype(text)
    except NotImplementedError as exc:  # an Arrow type with other parameters
        raise TypeError(f"dtype {text!r} cannot be read back: {exc}") from exc


def is_label(value: Any) -> bool:
    """Whether a model file records ``value`` as a category label: text, a finite number or a boolean."""
    if isinstance(value, (float, np.floating)):
        return bool(np.isfinite(value))
    return isinstance(value, (str, int, np.integer, np.bool_))  # bool is an int


def label_conversion(value: Any) -> str:
    """For a value that is no label (``is_label``), the assignment that makes its column one tabsynth models."""
    if isinstance(value, (pd.Timestamp, np.datetime64, datetime.date)):  # a datetime is a date
        zoned = getattr(value, "tzinfo", None) is not None
        return "df[column] = pd.to_datetime(df[column]" + (", utc=True)" if zoned else ")")
    if isinstance(value, (datetime.timedelta, np.timedelta64)):
        return "df[column] = pd.to_timedelta(df[column])"
    if isinstance(value, decimal.Decimal):
        return "df[column] = df[column].astype(float)"
    if isinstance(value, (float, np.floating)):
        return "df[column] = df[column].replace([np.inf, -np.inf], np.nan)"
    if isinstance(value, bytes):
        return "df[column] = df[column].str.decode('utf-8')"
    return "df[column] = df[column].astype(str)"


def level_dtype(dtype: Any) -> Any:
    """The dtype of a categorical's or an Arrow dictionary's levels (None for other dtypes)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return dtype.categories.dtype
    if is_arrow_dictionary(dtype):
        return pd.ArrowDtype(dtype.pyarrow_dtype.value_type)
    return None


def declared_levels(series: pd.Series) -> list[Any] | None:
    """The levels a column's dtype declares, in order: a categorical's categories, an ordered Arrow
    dictionary's values; None for other dtypes (an unordered dictionary's values come in the order the
    rows first held them, which declares nothing)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return list(series.dtype.categories)
    return ordered_levels(series)


def ordered_levels(series: pd.Series) -> list[Any] | None:
    """The levels of a dtype that declares their order (an ordered categorical, an ordered Arrow
    dictionary: its batches' dictionaries unified), in that order; None for any other dtype."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return list(dtype.categories) if dtype.ordered else None
    if is_arrow_dictionary(dtype) and dtype.pyarrow_dtype.ordered:
        chunks = series.array.__arrow_array__().unify_dictionaries()
        return chunks.chunk(0).dictionary.to_pylist() if chunks.num_chunks else []
    return None


def is_arrow_dictionary(dtype: Any) -> bool:
    """Whether ``dtype`` is an Arrow dictionary (labels stored by index: learnt and sampled as categories)."""
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_dictionary(dtype.pyarrow_dtype)


def is_arrow_decimal(dtype: Any) -> bool:
    """Whether ``dtype`` is an Arrow decimal (numbers of a fixed scale: learnt and sampled as floats)."""
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype)


def decimal_storable(series: pd.Series, type_: pa.DataType) -> pd.Series:
    """Numbers ready to cast to the Arrow decimal ``type_``: rounded to its scale and clamped to what its
    precision holds (a cast would refuse a finer or larger number)."""
    exact = decimal.Decimal(10) ** (type_.precision - type_.scale) - decimal.Decimal(10) ** -type_.scale
    largest = float(exact)
    if decimal.Decimal(largest) > exact:  # past 15 digits the nearest float may lie above the largest decimal
        largest = float(np.nextafter(largest, 0.0))
    return series.clip(-largest, largest).round(type_.scale)


def can_hold_null(dtype: Any) -> bool:
    """Whether a pandas dtype can store a missing value: every dtype but numpy's integers and bool."""
    return not (isinstance(dtype, np.dtype) and dtype.kind in "iub")


def check_frame(frame: Any, argument: str) -> None:
    """Reject what no schema can describe: not a DataFrame, no rows, no columns, duplicate names."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{argument} must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.shape[1] == 0:
        raise SchemaError(f"{argument} has no columns")
    if len(frame) == 0:
        raise SchemaError(f"{argument} is empty (0 rows)")
    check_column_names(list(frame.columns), argument)


def check_column_names(names: list[Any], argument: str) -> None:
    """Column names must be unique strings."""
    duplicates = sorted({str(n) for n in names if names.count(n) > 1})
    if duplicates:
        raise SchemaError(f"{argument} has duplicate column names: {duplicates}")
    non_strings = [n for n in names if not isinstance(n, str)]
    if non_strings:
        raise SchemaError(f"{argument} column names must be strings, got {non_strings[:5]}")


def column_differences(expected: Sequence[str], actual: Sequence[str]) -> tuple[list[str], list[str]]:
    """(names ``actual`` lacks, names ``actual`` has beyond ``expected``), each in its list's order."""
    return [c for c in expected if c not in actual], [c for c in actual if c not in expected]


def check_columns(schema: Schema, frame: pd.DataFrame, argument: str = "table") -> None:
    """The frame must hold exactly the schema's columns (any order)."""
    missing, extra = column_differences(schema.column_order, list(frame.columns))
    if missing:
        raise SchemaError(f"{argument} lacks columns {missing} that the schema describes")
    if extra:
        raise SchemaError(f"{argument} has columns {extra} that the schema does not describe")


# --- helpers ----------------------------------------------------------------------------------


def is_null(value: Any) -> bool:
    """Whether one value is null (None, NaN, NaT, NA); False for a value ``pd.isna`` cannot judge
    (an array, a signalling decimal NaN, an object whose comparison raises)."""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError, ArithmeticError):
        return False


def missing_values(series: pd.Series) -> np.ndarray:
    """The rows whose value is null, or NaN in an Arrow or masked float column: there NaN is a value that
    ``isna`` does not count, and as a number it would pass every clamp into training (and fail it)."""
    try:
        missing = np.asarray(series.isna(), dtype=bool)
    except (TypeError, ValueError, ArithmeticError):  # a value isna cannot judge (a signalling decimal NaN)
        missing = np.fromiter(map(is_null, series), bool, len(series))
    if not isinstance(series.dtype, np.dtype) and pd.api.types.is_float_dtype(series.dtype):
        missing = missing | np.isnan(series.to_numpy(dtype=np.float64, na_value=np.nan))
    return missing


def positions_in(levels: pd.Index, values: Any) -> np.ndarray:
    """Each value's position among ``levels``, -1 where it is none of them (a value that cannot be
    hashed, a list, included: like any unknown value)."""
    try:
        return levels.get_indexer(values).astype(np.int64)
    except (TypeError, ValueError, ArithmeticError):
        return np.fromiter((_position_in(levels, value) for value in values), np.int64, len(values))


def _position_in(levels: pd.Index, value: Any) -> int:
    try:
        return int(levels.get_loc(value))
    except (KeyError, TypeError, ValueError, ArithmeticError, pd.errors.InvalidIndexError):
        return -1


def _jsonable(value: Any) -> Any:
    if isinstance(value, Region):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"schema values must be finite, got {value}")
    return value


def _holds_value(column: Column, value: Any) -> bool:
    """Whether a rule may set ``column`` to ``value`` (a category, a number within the bounds, a boolean);
    timestamps, durations and coordinates are not checked."""
    if isinstance(column, CategoricalColumn):
        return any(isinstance(value, (bool, np.bool_)) == isinstance(level, (bool, np.bool_)) and value == level
                   for level in column.levels)
    if isinstance(column, BooleanColumn):
        return isinstance(value, (bool, np.bool_))
    if isinstance(column, (IntegerColumn, ContinuousColumn)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            return False
        whole = not isinstance(column, IntegerColumn) or float(value).is_integer()
        return whole and column.lower <= value <= column.upper
    return True


def _column_from_dict(raw: Any) -> Column:
    if not isinstance(raw, Mapping):
        raise SchemaError(f"each schema column must be an object, got {raw!r}")
    name = raw.get("name", "<unnamed>")
    kind = raw.get("kind")
    cls = COLUMN_KINDS.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise SchemaError(f"column {name!r}: unknown kind {kind!r}; expected one of {sorted(COLUMN_KINDS)}")
    allowed = {f.name for f in fields(cls)}
    unexpected = sorted(set(raw) - allowed - {"kind"})
    if unexpected:
        raise SchemaError(f"column {name!r}: unexpected fields {unexpected} for kind {kind!r}")
    # A field left out would take the dataclass's placeholder (bounds [0, 1], 1970-01-01): silently wrong.
    required = [key for key in ("name", "lower", "upper", "categories", "lat", "lon")
                if key in allowed and key not in raw]
    if required:
        raise SchemaError(f"column {name!r}: missing {required} for kind {kind!r}")
    values = {k: v for k, v in raw.items() if k != "kind"}
    for key in ("categories", "knots"):
        if values.get(key) is not None:
            if not isinstance(values[key], list):
                raise SchemaError(f"column {name!r}: {key!r} must be a list, got {values[key]!r}")
            values[key] = tuple(values[key])
    if not isinstance(values.get("nullable", False), bool):
        raise SchemaError(f"column {name!r}: 'nullable' must be true or false, got {values['nullable']!r}")
    try:
        if "region" in values:
            values["region"] = Region.from_dict(values["region"])
        column = cls(**values)
        column._check()  # here, where a malformed field is named with its column
        return column
    except (TypeError, KeyError, ValueError, OverflowError) as exc:
        if isinstance(exc, SchemaError):
            raise
        raise SchemaError(f"column {name!r}: malformed {kind} spec: {exc}") from exc


_LAT = re.compile(r"(^|_)(lat|latitude)($|_)", re.IGNORECASE)
_LON = re.compile(r"(^|_)(lon|lng|long|longitude)($|_)", re.IGNORECASE)


def _detect_geo_pairs(frame: pd.DataFrame, exclude: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Find one latitude/longitude pair by column name and value range."""
    candidates = [c for c in frame.columns if c not in set(exclude) and pd.api.types.is_float_dtype(frame[c])]
    lats = [c for c in candidates if _LAT.search(c) and _within(frame[c], -90, 90)]
    lons = [c for c in candidates if _LON.search(c) and _within(frame[c], -180, 360)]
    if len(lats) == 1 and len(lons) == 1:
        prefix = _LAT.sub("", lats[0]).strip("_")
        return {prefix or "location": (lats[0], lons[0])}
    return {}


def _within(series: pd.Series, lower: float, upper: float) -> bool:
    values = series.dropna()
    return len(values) > 0 and bool(values.min() >= lower and values.max() <= upper)


def _infer_geo(frame: pd.DataFrame, name: str, lat: str, lon: str) -> GeoPointColumn:
    lats, lons = frame[lat].astype("float64"), frame[lon].astype("float64")
    nullable = bool(lats.isna().any() or lons.isna().any())
    region = BoundingBox(float(lats.min()), float(lats.max()), float(lons.min()), float(lons.max()))
    return GeoPointColumn(name, nullable=nullable, lat=lat, lon=lon, region=region,
                          lat_dtype=dtype_text(frame[lat].dtype), lon_dtype=dtype_text(frame[lon].dtype))


def quantile_knots(quantiles: np.ndarray, integral: bool = False) -> tuple[float, ...] | None:
    """Knots for the encoder's piecewise-linear map from sorted quantiles whose ends are the bounds.

    For integers, segments too wide for float32 to carry every whole number are split (equal steps)
    so that encode/decode round-trips exactly.
    """
    knots = np.maximum.accumulate(np.asarray(quantiles, dtype=np.float64))
    if len(knots) < 2 or knots[0] == knots[-1]:
        return None
    if integral:
        # Each segment gets 2/m of [-1, 1]; float32 resolves whole numbers while width * m < 2**22.
        # Past a range of 2**22 no map is exact, so segments are only kept from stretching > 2x linear.
        span = knots[-1] - knots[0]
        limit = 2.0**22 if 1.5 * span < 2.0**22 else 2.0 * span
        while len(knots) < MAX_KNOTS:
            widths = np.diff(knots)
            i = int(np.argmax(widths))
            if widths[i] * (len(knots) - 1) < limit:
                break
            pieces = min(int(np.ceil(widths[i] * (len(knots) - 1) / limit)) + 1, MAX_KNOTS - len(knots) + 1)
            inner = np.round(np.linspace(knots[i], knots[i + 1], pieces + 1)[1:-1])
            knots = np.concatenate([knots[: i + 1], inner, knots[i + 1:]])
    return tuple(float(k) for k in knots)


def _quantile_knots(values: np.ndarray, lower: float, upper: float, n_knots: int,
                    integral: bool = False) -> tuple[float, ...] | None:
    """Public knots of a number or datetime: ``n_knots`` quantiles, knots cutting the range into
    ``EVEN_KNOT_PARTS`` even parts, and each value held by ``POINT_MASS_SHARE`` of the rows as a point
    mass (the heaviest first, as many as fit under ``MAX_KNOTS``)."""
    if n_knots < 2 or lower == upper:
        return None
    knots = np.quantile(values, np.linspace(0, 1, n_knots))
    knots[0], knots[-1] = lower, upper
    even = np.linspace(lower, upper, EVEN_KNOT_PARTS + 1)
    even = np.round(even) if integral else even
    # Sorted in among the quantiles; a repeated quantile knot (a point mass) stays repeated.
    knots = np.sort(np.concatenate([knots, np.setdiff1d(even, knots)]))
    distinct, counts = np.unique(values, return_counts=True)
    heavy = np.flatnonzero(counts >= POINT_MASS_SHARE * len(values))
    return quantile_knots(with_point_masses(knots, distinct[heavy[np.argsort(-counts[heavy], kind="stable")]]),
                          integral)


def with_point_masses(knots: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Sorted ``knots`` in which each of ``masses`` inside their range is held at least twice: a point
    mass, which the encoder keeps as one cell that decodes to exactly that value. ``masses`` come
    heaviest first, and only as many join as fit under ``MAX_KNOTS``."""
    knots = np.sort(np.asarray(knots, dtype=np.float64))
    masses = np.asarray(masses, dtype=np.float64)
    masses = masses[(masses >= knots[0]) & (masses <= knots[-1])]
    masses = masses[np.sort(np.unique(masses, return_index=True)[1])]  # each once, in the given order
    missing = np.maximum(0, 2 - (np.searchsorted(knots, masses, side="right") - np.searchsorted(knots, masses)))
    fits = np.cumsum(missing) <= MAX_KNOTS - len(knots)
    return np.sort(np.concatenate([knots, np.repeat(masses[fits], missing[fits])]))


def _infer_column(series: pd.Series, kind: str | None, max_categories: int, n_knots: int,
                  catch_all: Any) -> Column:
    name, dtype = str(series.name), dtype_text(series.dtype)
    values = numpy_temporal(series.dropna())
    nullable = len(values) < len(series)
    if kind is not None and kind not in COLUMN_KINDS:
        raise SchemaError(f"column {name!r}: unknown kind {kind!r}; expected one of {sorted(COLUMN_KINDS)}")
    if len(values) == 0:
        raise SchemaError(f"column {name!r} holds only missing values in the public table; declare it")
    if kind is None:
        kind = _guess_kind(series, values, max_categories)
    common = {"name": name, "nullable": nullable, "dtype": dtype}
    if kind == "boolean":
        return BooleanColumn(**common)
    if kind == "datetime":
        stamps = pd.to_datetime(values)
        local = getattr(stamps.dt, "tz", None) is not None  # a timezone-aware column counts in wall-clock time
        wall = naive_stamps(stamps, local)
        resolution = _resolution_of(wall.to_numpy())
        column = DatetimeColumn(**common, lower=stamps.min().isoformat(), upper=stamps.max().isoformat(),
                                resolution=resolution, local=local)
        ticks = np.array([column.ticks(v) for v in (stamps.min(), stamps.max())])
        all_ticks = wall.to_numpy().astype(f"datetime64[{resolution}]").astype(np.int64).astype(np.float64)
        return replace(column, knots=_quantile_knots(all_ticks, ticks[0], ticks[1], n_knots, True))
    if kind == "duration":
        spans = pd.to_timedelta(values).to_numpy()
        resolution = _resolution_of(spans)
        ticks = spans.astype(f"timedelta64[{resolution}]").astype(np.int64)
        column = DurationColumn(**common, lower=duration_text(ticks.min(), resolution),
                                upper=duration_text(ticks.max(), resolution), resolution=resolution)
        return replace(column, knots=_inferred_knots(ticks.astype(np.float64), float(ticks.min()),
                                                     float(ticks.max()), n_knots, True))
    if kind == "categorical":
        # A public categorical dtype (or ordered Arrow dictionary) declares its levels, in order, used or
        # not (value_counts lists the unused ones too, last); else the values seen, sorted.
        declared = declared_levels(series)
        counts = values.value_counts(sort=True)
        levels = list(counts.index)
        if len(levels) > max_categories:
            levels, catch_all = levels[:max_categories], "<other>" if catch_all is None else catch_all
        levels = [v for v in declared if v in levels] if declared else sorted(levels, key=_sort_key)
        return CategoricalColumn(**common, categories=tuple(_python_scalar(v) for v in levels),
                                 catch_all=catch_all)
    numbers = pd.to_numeric(values).to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all():
        raise SchemaError(f"column {name!r} holds inf in the public table; remove it or declare the column")
    lower, upper = float(numbers.min()), float(numbers.max())
    if kind == "integer":
        if not np.all(numbers == np.round(numbers)):
            raise SchemaError(f"column {name!r} was declared integer but holds fractions")
        column = IntegerColumn(**common, lower=int(lower), upper=int(upper))
        knots = None if column.uses_binary_code else _inferred_knots(numbers, lower, upper, n_knots, True)
        return replace(column, knots=knots)
    return ContinuousColumn(**common, lower=lower, upper=upper,
                            knots=_inferred_knots(numbers, lower, upper, n_knots))


def _inferred_knots(numbers: np.ndarray, lower: float, upper: float, n_knots: int,
                    integral: bool = False) -> tuple[float, ...] | None:
    """Quantile knots; or, for a column of fewer distinct values than ``n_knots`` (a density per
    region, a rate in steps), each value twice: every value is then a point mass that decodes
    exactly, where quantile knots would leave a value met by one knot to be spread over its cells."""
    distinct = np.unique(numbers)
    if 2 <= len(distinct) < n_knots:
        return quantile_knots(np.repeat(distinct, 2), integral)
    return _quantile_knots(numbers, lower, upper, n_knots, integral)


def _guess_kind(series: pd.Series, values: pd.Series, max_categories: int) -> str:
    if pd.api.types.is_bool_dtype(series.dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return "datetime"
    if is_duration_dtype(series.dtype):
        return "duration"
    if isinstance(series.dtype, pd.CategoricalDtype):
        return "categorical"
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = values.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers)):
            return "continuous"
        return "integer"
    distinct = set(values.unique())
    if distinct <= {True, False}:
        return "boolean"
    return "categorical"


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


__all__ = [
    "BooleanColumn", "CategoricalColumn", "Column", "ContinuousColumn", "DatetimeColumn", "DurationColumn",
    "GeoPointColumn", "IntegerColumn", "Schema", "SchemaError", "check_columns", "check_frame", "is_arrow_date",
    "is_duration_dtype", "numpy_temporal", "numpy_temporal_dtype", "zone_of",
]
