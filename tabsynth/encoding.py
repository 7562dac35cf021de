"""Schema-driven map between a DataFrame and the GAN's vector space, and back.

The encoder is fitted by the schema alone: it never learns anything from the table it encodes. Its
``layout`` records, per column, which slice of the vector the column owns and which output
activation the generator needs there (CTGAN's "output info", made explicit).

Two representations of a table exist. The *encoded* (dense) vector is what the networks see: a
one-hot block per categorical and per binned number's cell, a bit per binary digit. The *compact*
form keeps one float32 field per categorical (its code), per binary code (its integer offset), per
boolean and missing flag, two per binned number (its cell and its place in the cell) and one per
other number and geo coordinate (its scaled value): it is what the training store holds and what
sampling decodes, so the one-hot expansion only ever exists for a batch. ``CompactLayout`` maps
between the two, in torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch

from tabsynth.schema import (
    ORDERED_CATEGORY,
    BooleanColumn,
    CategoricalColumn,
    Column,
    ContinuousColumn,
    DatetimeColumn,
    DurationColumn,
    GeoPointColumn,
    IntegerColumn,
    Schema,
    SchemaError,
    TickColumn,
    check_columns,
    check_frame,
    decimal_storable,
    is_arrow_decimal,
    is_arrow_dictionary,
    is_duration_dtype,
    missing_values,
    naive_stamps,
    numpy_temporal,
    numpy_temporal_dtype,
    positions_in,
    read_dtype,
    zone_of,
)

Activation = Literal["tanh", "sigmoid", "softmax"]
Role = Literal["value", "missing", "place"]
InvalidPolicy = Literal["raise", "clip"]


class DomainError(SchemaError):
    """A value lies outside the schema's domain and the encoder was told to raise."""


@dataclass(frozen=True)
class Span:
    """A slice [start, end) of the encoded vector owned by one column, with its output activation.

    ``role`` is "missing" for the one-dimensional missing-value indicator, "place" for a number's
    place inside its cell (encoded and decoded, but not modelled: the networks see zeros there and
    sampling draws it uniformly), else "value". ``values``: for a binary code, how many integers it
    codes (its bits' integer is clipped below that); the generator draws such a code as one of its
    values, not bit by bit.
    """

    column: str
    start: int
    end: int
    activation: Activation
    role: Role = "value"
    values: int | None = None

    @property
    def width(self) -> int:
        return self.end - self.start

    @property
    def fields(self) -> int:
        return compact_fields(self.activation, self.width)


def compact_fields(activation: Activation, width: int) -> int:
    """Compact fields of a span: one per scaled number, one for a whole bit group or one-hot block."""
    return width if activation == "tanh" else 1


@dataclass(frozen=True)
class CellSpec:
    """Where one one-way marginal's cells sit in the encoded vector, for differentiable estimates.

    ``kind`` "softmax": a one-hot block [start, end), one cell per category; "bits": the integer of
    the sigmoid bits [start, end), clipped to ``cells - 1``; "unit": the tanh dimension ``start``
    cut at the interior ``edges``. ``missing`` is the dense index of the missing flag (its cell
    comes last), or None. ``binned``: the cells are neighbouring intervals of a number line (so
    they may be merged into coarser runs), not exact values. The cells are those of
    ``Encoder.marginal_cells``.
    """

    name: str
    kind: Literal["softmax", "bits", "unit"]
    start: int
    end: int
    cells: int
    missing: int | None = None
    edges: tuple[float, ...] = ()
    binned: bool = False

    @property
    def size(self) -> int:
        """Number of cells, the missing one included."""
        return self.cells + int(self.missing is not None)


class CompactLayout:
    """Index maps between the encoded vector and the compact fields of a layout.

    tanh spans copy their values; a sigmoid span (missing flag, boolean, binary code) is the integer
    sum of its bits times 2^i; a softmax span is its category code (-1: none, an all-zero block).
    ``number_*`` index the tanh spans the generator models, ``place_*`` the places in cells it does not.
    """

    def __init__(self, layout: Sequence[Span]) -> None:
        tanh_dense, tanh_compact, bit_dense, bit_field, bit_shift, softmax = [], [], [], [], [], []
        place_dense, place_compact = [], []
        field = 0
        for span in layout:
            if span.activation == "tanh":
                tanh_dense += range(span.start, span.end)
                tanh_compact += range(field, field + span.width)
                if span.role == "place":
                    place_dense += range(span.start, span.end)
                    place_compact += range(field, field + span.width)
            elif span.activation == "sigmoid":
                bit_dense += range(span.start, span.end)
                bit_field += [field] * span.width
                bit_shift += range(span.width)
            else:
                softmax.append((span.start, span.end, field))
            field += span.fields
        self.dense_dim = max((s.end for s in layout), default=0)
        self.dim = field
        self.tanh_dense = torch.tensor(tanh_dense, dtype=torch.long)
        self.tanh_compact = torch.tensor(tanh_compact, dtype=torch.long)
        self.place_dense = torch.tensor(place_dense, dtype=torch.long)
        self.place_compact = torch.tensor(place_compact, dtype=torch.long)
        places = set(place_dense)
        modelled = [i for i, dense in enumerate(tanh_dense) if dense not in places]
        self.number_dense, self.number_compact = self.tanh_dense[modelled], self.tanh_compact[modelled]
        self.bit_dense = torch.tensor(bit_dense, dtype=torch.long)
        self.bit_field = torch.tensor(bit_field, dtype=torch.long)
        self.bit_shift = torch.tensor(bit_shift, dtype=torch.long)
        # (bits, sigmoid spans) matrix of 2^i: the integers of all sigmoid spans are one matrix product.
        self.bit_fields, column = torch.unique(self.bit_field, return_inverse=True)
        self.bit_weights = torch.zeros((len(bit_dense), len(self.bit_fields)))
        self.bit_weights[torch.arange(len(bit_dense)), column] = 2.0 ** self.bit_shift.float()
        self.softmax = softmax
        self.softmax_starts = torch.tensor([start for start, _, _ in softmax], dtype=torch.long)
        self.softmax_widths = torch.tensor([end - start for start, end, _ in softmax], dtype=torch.long)
        self.softmax_fields = torch.tensor([f for _, _, f in softmax], dtype=torch.long)

    def to(self, device: torch.device | str) -> "CompactLayout":
        """A copy whose index tensors live on ``device`` (no transfers per batch)."""
        moved = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(device))
        return moved

    def expand(self, compact: torch.Tensor, places: bool = True) -> torch.Tensor:
        """Compact rows -> encoded rows, on the tensor's device; ``places=False`` leaves the places in
        cells at 0, as the networks see them."""
        device = compact.device
        out = torch.zeros((compact.shape[0], self.dense_dim), dtype=torch.float32, device=device)
        dense, fields = (self.tanh_dense, self.tanh_compact) if places else (self.number_dense, self.number_compact)
        if len(dense):
            out[:, dense.to(device)] = compact[:, fields.to(device)]
        if len(self.bit_dense):
            integers = compact[:, self.bit_field.to(device)].round().long()
            out[:, self.bit_dense.to(device)] = ((integers >> self.bit_shift.to(device)) & 1).float()
        if self.softmax:
            codes = compact[:, self.softmax_fields.to(device)].round().long()
            valid = codes >= 0
            codes = torch.minimum(codes.clamp(min=0), self.softmax_widths.to(device) - 1)
            out.scatter_(1, self.softmax_starts.to(device) + codes, valid.float())
        return out

    def compress(self, dense: torch.Tensor) -> torch.Tensor:
        """Encoded rows (any real values) -> compact rows: bits by > 0.5, categories by argmax."""
        device = dense.device
        out = torch.zeros((dense.shape[0], self.dim), dtype=torch.float32, device=device)
        if len(self.tanh_dense):
            out[:, self.tanh_compact.to(device)] = dense[:, self.tanh_dense.to(device)].float()
        if len(self.bit_dense):
            self.add_bits(out, dense[:, self.bit_dense.to(device)] > 0.5)
        for start, end, field in self.softmax:
            out[:, field] = dense[:, start:end].argmax(1).float()
        return out

    def add_bits(self, out: torch.Tensor, bits: torch.Tensor) -> None:
        """Write the integers of sigmoid spans, given their bits (rows x all bit positions), into ``out``."""
        out[:, self.bit_fields.to(out.device)] = bits.float() @ self.bit_weights.to(out.device)


class PiecewiseLinear:
    """Monotone map of [lower, upper] onto [-1, 1] through quantile knots.

    Knot i lands at -1 + 2i/m, so each inter-knot segment gets an equal share of [-1, 1]. A value
    repeated across several knots (a point mass such as Adult's capital_gain = 0) owns the whole
    flat interval between its first and last knot: every vector in it decodes to exactly that value.
    """

    def __init__(self, knots: np.ndarray) -> None:
        self.knots = np.asarray(knots, dtype=np.float64)
        self.positions = np.linspace(-1.0, 1.0, len(self.knots))
        unique, first = np.unique(self.knots, return_index=True)
        last = len(self.knots) - 1 - np.unique(self.knots[::-1], return_index=True)[1]
        self.unique = unique
        self.low = self.positions[first]
        self.high = self.positions[last]

    def forward(self, x: np.ndarray) -> np.ndarray:
        if len(self.unique) == 1:
            return np.zeros_like(x)
        idx = np.clip(np.searchsorted(self.unique, x, side="right") - 1, 0, len(self.unique) - 2)
        left, right = self.unique[idx], self.unique[idx + 1]
        start, stop = self.high[idx], self.low[idx + 1]
        y = start + (x - left) / (right - left) * (stop - start)
        exact = np.searchsorted(self.unique, x)
        exact = np.clip(exact, 0, len(self.unique) - 1)
        on_knot = self.unique[exact] == x
        return np.where(on_knot, (self.low[exact] + self.high[exact]) / 2, y)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, self.positions, self.knots)


def _scaler(lower: float, upper: float, knots: tuple[float, ...] | None) -> PiecewiseLinear:
    return PiecewiseLinear(np.asarray(knots if knots is not None else (lower, upper), dtype=np.float64))


class Encoder:
    """Encode a DataFrame into a float32 tensor and decode any tensor back into a valid DataFrame.

    ``on_invalid`` decides what happens to values outside the declared domain at encode time:
    "raise" (default) or "clip" (numbers clamp to their bounds, a fraction in an integer column
    rounds, a timestamp finer than its column's resolution falls to the start of its tick, unknown
    categories go to the catch-all, geo points move into their region). NaN in a non-nullable column
    always raises.
    """

    def __init__(self, schema: Schema, on_invalid: InvalidPolicy = "raise") -> None:
        if not isinstance(schema, Schema):
            raise TypeError(f"schema must be a tabsynth.Schema, got {type(schema).__name__}")
        if on_invalid not in ("raise", "clip"):
            raise ValueError(f"on_invalid must be 'raise' or 'clip', got {on_invalid!r}")
        self.schema = schema
        self.on_invalid = on_invalid
        self._codecs = [_codec_for(column) for column in schema.columns]
        spans: list[Span] = []
        offset = field = 0
        specs: list[CellSpec] = []
        for codec in self._codecs:
            codec.field = field
            missing = None
            if codec.column.nullable:
                spans.append(Span(codec.column.name, offset, offset + 1, "sigmoid", "missing"))
                missing = offset
                offset += 1
            specs += [replace(spec, missing=missing) for spec in codec.cell_specs(offset)]
            for (width, activation, role), name in zip(codec.value_spans(), codec.span_columns(), strict=True):
                values = codec.code_values if role == "value" and activation == "sigmoid" else None
                spans.append(Span(name, offset, offset + width, activation, role, values))
                offset += width
            field += int(codec.column.nullable) + codec.fields
        self.layout: tuple[Span, ...] = tuple(spans)
        self.cell_specs: tuple[CellSpec, ...] = tuple(specs)
        self.dim = offset
        self.compact = CompactLayout(self.layout)

    @property
    def compact_dim(self) -> int:
        """Number of compact fields per row."""
        return self.compact.dim

    def encode(self, frame: pd.DataFrame) -> torch.Tensor:
        """One float32 row per record; column order in ``frame`` does not matter."""
        check_frame(frame, "table")
        check_columns(self.schema, frame)
        return torch.from_numpy(self.encode_numpy(frame))

    def encode_numpy(self, frame: pd.DataFrame, redact: bool = False) -> np.ndarray:
        """``encode`` as a numpy array (see ``encode_compact`` for ``redact``)."""
        return self.expand(self.encode_compact(frame, redact=redact)).numpy()

    def encode_compact(self, frame: pd.DataFrame, redact: bool = False) -> np.ndarray:
        """Compact float32 rows (codes, offsets, flags, scaled numbers). ``redact=True`` (for private
        tables) keeps counts and values out of error messages: they name the column only."""
        out = np.zeros((len(frame), self.compact_dim), dtype=np.float32)
        for codec in self._codecs:
            try:
                self._encode_column(codec, frame, out)
                continue
            except SchemaError as exc:
                if not redact:
                    raise
                failure = type(exc)
            # Raised outside the handler: the original error (its values, the batch in its frames) is
            # then not even the redacted one's __context__.
            kind = ("its domain (a value outside its bounds or categories)" if issubclass(failure, DomainError)
                    else "the schema (a missing value where the schema declares none, as a schema "
                         "inferred from a public table without nulls there does, a point with one coordinate "
                         "missing under on_invalid='raise', or a value of the wrong type)")
            raise failure(f"column {codec.column.name!r} of the private table violates {kind}; details "
                          f"are withheld because they would reveal private values (check the table "
                          f"locally with tabsynth.Encoder(schema).encode(df))")
        return out

    def _encode_column(self, codec: "_Codec", frame: pd.DataFrame, out: np.ndarray) -> None:
        missing = codec.missing_mask(frame, self.on_invalid)
        if missing.any() and not codec.column.nullable:
            raise SchemaError(f"column {codec.column.name!r} holds {int(missing.sum())} missing values "
                              f"(NaN/None) but the schema does not declare it nullable")
        field = codec.field
        if codec.column.nullable:
            out[:, field] = missing
            field += 1
        present = ~missing
        block = out[:, field:field + codec.fields]
        block[missing] = codec.absent
        block[present] = codec.encode(frame, present, self.on_invalid)

    def expand(self, compact: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Compact rows -> encoded (one-hot) rows, as a float32 tensor on the input's device."""
        return self.compact.expand(torch.as_tensor(compact, dtype=torch.float32))

    def compress(self, vectors: torch.Tensor | np.ndarray) -> np.ndarray:
        """Encoded rows (any real values, NaN and inf included) -> compact rows."""
        array = vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else torch.as_tensor(np.asarray(vectors))
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {tuple(array.shape)}")
        array = torch.nan_to_num(array.float(), nan=0.0, posinf=1.0, neginf=-1.0)
        return self.compact.compress(array).numpy()

    def marginal_cells(self, compact: np.ndarray) -> tuple[np.ndarray, list[int], list[str]]:
        """Each row's cell in every one-way marginal, read off compact rows; the cells come from the
        schema alone (categories, binary codes, knot segments), missing values get the last cell.

        Returns (cells of shape (n, k), number of cells per marginal, marginal names).
        """
        array = np.asarray(compact)
        # Column-major: raking and counting read one marginal at a time.
        cells = np.empty((len(array), len(self.cell_specs)), dtype=np.int64, order="F")
        sizes, names = [], []
        for codec in self._codecs:
            field = codec.field
            missing = array[:, field] > 0.5 if codec.column.nullable else None
            field += int(codec.column.nullable)
            for name, (column_cells, n_cells) in codec.cells(array[:, field:field + codec.fields]).items():
                if missing is not None:
                    column_cells = np.where(missing, n_cells, column_cells)
                    n_cells += 1
                cells[:, len(sizes)] = column_cells
                sizes.append(n_cells)
                names.append(name)
        return cells, sizes, names

    def decode(self, vectors: torch.Tensor | np.ndarray) -> pd.DataFrame:
        """A DataFrame in the schema's column order and dtypes; every value inside the domain."""
        return self.decode_compact(self.compress(vectors))

    def decode_compact(self, compact: np.ndarray) -> pd.DataFrame:
        """``decode`` for compact rows."""
        array = np.asarray(compact)
        if array.ndim != 2 or array.shape[1] != self.compact_dim:
            raise ValueError(f"compact rows must have shape (n, {self.compact_dim}), got {array.shape}")
        array = array.astype(np.float64, copy=False)
        if not np.isfinite(array).all():  # checked first: the replacement costs ten times the check
            array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=-1.0)
        columns: dict[str, pd.Series] = {}
        for codec in self._codecs:
            field = codec.field
            if codec.column.nullable:
                missing = array[:, field] > 0.5
                field += 1
            else:
                missing = np.zeros(len(array), dtype=bool)
            columns.update(codec.decode(array[:, field:field + codec.fields], missing))
        return pd.DataFrame({name: columns[name] for name in self.schema.column_order})


# --- per-kind codecs ------------------------------------------------------------------------


class _Codec:
    """Encodes the present (non-missing) values of one schema column into its compact fields, which
    the layout expands into the encoded blocks of ``value_spans``."""

    activation: Activation = "tanh"
    width = 1
    field = 0
    absent = 0.0  # compact value of a missing row
    code_values: int | None = None  # a binary code's number of integers

    def __init__(self, column: Column) -> None:
        self.column = column

    def value_spans(self) -> list[tuple[int, Activation, Role]]:
        """(width, activation, role) of each encoded block of a present value, in order (one by default)."""
        return [(self.width, self.activation, "value")]

    def span_columns(self) -> list[str]:
        """The column each value span belongs to (the schema column's name, but for a geo pair's coordinates)."""
        return [self.column.name] * len(self.value_spans())

    @property
    def fields(self) -> int:
        return sum(compact_fields(activation, width) for width, activation, _ in self.value_spans())

    def missing_mask(self, frame: pd.DataFrame, policy: InvalidPolicy) -> np.ndarray:
        """The rows whose value is missing."""
        return missing_values(frame[self.column.name])

    def encode(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        """Compact fields (rows x ``fields``) of the present values."""
        raise NotImplementedError

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        """Columns from compact fields; ``missing`` rows become nulls."""
        raise NotImplementedError

    def cells(self, block: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        """One-way marginal cells of compact fields: name -> (cell per row, number of cells)."""
        raise NotImplementedError

    def cell_specs(self, start: int) -> list[CellSpec]:
        """The same cells as ``cells``, located in the encoded vector whose value span begins at ``start``."""
        raise NotImplementedError


def _unit_cells(values: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Cells of values in [-1, 1] between sorted edges (the outer edges being -1 and 1)."""
    return np.searchsorted(edges[1:-1], np.clip(values, -1.0, 1.0), side="right"), len(edges) - 1


NUMBER_CELLS = 100  # one-way cells of a number without knots: cheap to measure, and fine enough to see its shape
UNIFORM_EDGES = np.linspace(-1.0, 1.0, NUMBER_CELLS + 1)


def _unit_spec(name: str, index: int, edges: np.ndarray) -> CellSpec:
    return CellSpec(name, "unit", index, index + 1, len(edges) - 1, edges=tuple(float(e) for e in edges[1:-1]),
                    binned=True)


def _numbers(frame: pd.DataFrame, name: str, present: np.ndarray) -> np.ndarray:
    series = frame[name][present]
    if len(series) and (pd.api.types.is_datetime64_any_dtype(series.dtype) or is_duration_dtype(series.dtype)):
        # to_numeric would read them as nanoseconds
        raise SchemaError(f"column {name!r} must be numeric, but holds {series.dtype} values")
    try:
        return pd.to_numeric(series).to_numpy(dtype=np.float64, copy=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise SchemaError(f"column {name!r} must be numeric: {exc}") from exc


def _whole(name: str, values: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
    """An integer column's values: fractional ones are rounded to the nearest whole number (halves to even) under
    ``policy`` "clip" (the integer domain's nearest value), an error under "raise"."""
    fractional = np.isfinite(values) & (values != np.round(values))
    if not fractional.any():
        return values
    if policy == "raise":
        raise DomainError(f"column {name!r} is an integer column but holds {int(fractional.sum())} fractional "
                          f"values; pass on_invalid='clip' to round them")
    return np.round(values)  # halves to even


def _enforce_range(name: str, values: np.ndarray, lower: float, upper: float,
                   policy: InvalidPolicy) -> np.ndarray:
    outside = ~((values >= lower) & (values <= upper))
    if outside.any():
        if policy == "raise":
            example = values[outside][0]
            raise DomainError(f"column {name!r} has {int(outside.sum())} values outside its bounds "
                              f"[{lower}, {upper}] (e.g. {example}); pass on_invalid='clip' to clamp them")
        values = np.clip(values, lower, upper)
    return values


def _integer_slots(scaler: PiecewiseLinear, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per binned cell of an integer column: its first integer and how many it owns, so that a place
    drawn uniformly in the cell gives each of them an equal share. An integer on the boundary of two
    cells belongs to a point mass there, else to the right cell (the upper bound to the last); rounding
    a uniform place instead gave a knot's integer half a share from each side (a discovered schema with
    knots 39, 40, 41 drew hours per week 40 and 41 equally, the data 47% and 0.1%)."""
    low, high = scaler.inverse(edges[:-1]), scaler.inverse(edges[1:])
    point = np.isclose(low, high, rtol=0.0, atol=1e-9)
    first = np.where(point, np.round(low), np.ceil(low - 1e-9))
    first += np.concatenate([[False], point[:-1]]) & _is_whole(low) & ~point  # its left boundary is a point mass's
    last = np.where(point, np.round(low), np.floor(high + 1e-9))
    right_owned = _is_whole(high) & ~point
    right_owned[-1] = False  # the upper bound is the last cell's
    last -= right_owned
    return first, np.maximum(last - first + 1, 0)


def _is_whole(values: np.ndarray) -> np.ndarray:
    return np.isclose(values, np.round(values), rtol=0.0, atol=1e-9)


class _NumberCodec(_Codec):
    """Continuous numbers, wide integers and datetimes, scaled to [-1, 1] through the knots.

    [-1, 1] is cut into cells by the schema alone: knot segments (a point mass, a value repeated
    across knots, is one cell however many knots it spans), or ``NUMBER_CELLS`` uniform cells
    without knots. How the generator emits the number depends on those cells:

    - *Equal-mass knots* (quantiles, no point mass) spread the data evenly over [-1, 1] in narrow
      cells: one tanh output, so a row's numbers are a deterministic function of the noise and
      monotone relations between numbers come for free (on California housing's counts, 2-way TVD
      0.22-0.26 against 0.28-0.32 when binned).
    - *Binned* otherwise (no knots, or a point mass): the cell is picked like a category and the
      place in it is drawn uniformly (encoded and decoded exactly, not modelled). A tanh output
      deep inside a wide cell, such as a mass of zeros spanning half the range, gets no gradient
      from the marginal fit and stays there; a cell's probability always does (CTGAN's
      mode-specific encoding, with modes from the schema). On Adult: 2-way TVD 0.048 against 0.058.
    """

    def __init__(self, column: Column, lower: float, upper: float, knots: tuple[float, ...] | None,
                 integral: bool) -> None:
        super().__init__(column)
        self.lower, self.upper, self.integral = lower, upper, integral
        self.scaler = _scaler(lower, upper, knots)
        edges = np.unique(np.concatenate([self.scaler.low, self.scaler.high]))
        self.edges = edges if len(edges) > 2 else UNIFORM_EDGES
        # Binned: no interior knot (even cells over the bounds), or a point mass among the knots.
        self.binned = len(edges) <= 2 or len(self.scaler.unique) < len(self.scaler.knots)
        self.width = len(self.edges) - 1 if self.binned else 1
        self.first, self.count = _integer_slots(self.scaler, self.edges) if integral and self.binned else (None, None)

    def value_spans(self) -> list[tuple[int, Activation, Role]]:
        return [(self.width, "softmax", "value"), (1, "tanh", "place")] if self.binned else [(1, "tanh", "value")]

    def values(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        values = _numbers(frame, self.column.name, present)
        return _whole(self.column.name, values, policy) if self.integral else values

    def encode(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        values = self.values(frame, present, policy)
        return self.fields_of(_enforce_range(self.column.name, values, self.lower, self.upper, policy))

    def fields_of(self, values: np.ndarray) -> np.ndarray:
        """Compact fields of values inside the bounds: the scaled number, or its cell and place."""
        scaled = self.scaler.forward(values)
        if not self.binned:
            return scaled[:, None]
        cell = _unit_cells(scaled, self.edges)[0]
        if self.first is not None:  # the centre of the value's slot among its cell's integers
            count = np.maximum(self.count[cell], 1)
            place = 2.0 * (np.clip(values - self.first[cell], 0, count - 1) + 0.5) / count - 1.0
            return np.column_stack([cell, place])
        low, high = self.edges[cell], self.edges[cell + 1]
        return np.column_stack([cell, np.clip(2.0 * (scaled - low) / (high - low) - 1.0, -1.0, 1.0)])

    def cell_codes(self, block: np.ndarray) -> np.ndarray:
        if not self.binned:
            return _unit_cells(block[:, 0], self.edges)[0]
        return np.clip(np.rint(block[:, 0]), 0, len(self.edges) - 2).astype(np.int64)

    def cells(self, block: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        return {self.column.name: (self.cell_codes(block), len(self.edges) - 1)}

    def cell_specs(self, start: int) -> list[CellSpec]:
        if not self.binned:
            return [_unit_spec(self.column.name, start, self.edges)]
        return [CellSpec(self.column.name, "softmax", start, start + self.width, self.width, binned=True)]

    def numbers(self, block: np.ndarray) -> np.ndarray:
        if self.first is not None:
            cell = self.cell_codes(block)
            count = self.count[cell]
            slot = np.floor((np.clip(block[:, 1], -1.0, 1.0) + 1.0) / 2.0 * count)
            values = self.first[cell] + np.clip(slot, 0, np.maximum(count - 1, 0))
            return np.clip(values, self.lower, self.upper)
        if self.binned:
            cell = self.cell_codes(block)
            low, high = self.edges[cell], self.edges[cell + 1]
            scaled = low + (np.clip(block[:, 1], -1.0, 1.0) + 1.0) / 2.0 * (high - low)
        else:
            scaled = np.clip(block[:, 0], -1.0, 1.0)
        values = np.clip(self.scaler.inverse(scaled), self.lower, self.upper)
        return np.round(values) if self.integral else values

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        kind = "int" if self.integral else "float"
        return {self.column.name: _restore(self.numbers(block), missing, self.column.dtype, kind)}


class _DatetimeCodec(_NumberCodec):
    column: DatetimeColumn

    def __init__(self, column: DatetimeColumn) -> None:
        super().__init__(column, column.lower_ticks, column.upper_ticks, column.knots, integral=True)

    def values(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        """Ticks of the column's resolution; a finer timestamp falls to the start of its tick under
        ``policy`` "clip" (a time of day to its date), an error under "raise"."""
        series = numpy_temporal(frame[self.column.name][present])
        if _holds_numbers(series) or is_duration_dtype(series.dtype):
            # to_datetime would read numbers as nanoseconds since 1970
            raise SchemaError(f"column {self.column.name!r} must hold timestamps, but holds {series.dtype} values")
        try:
            stamps = pd.to_datetime(series)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"column {self.column.name!r} must hold timestamps: {exc}") from exc
        stamps = naive_stamps(stamps, self.column.local)
        # In pandas' own unit (ns, us, s): dates beyond 1677-2262 need a coarse one.
        return _ticks(self.column, stamps.to_numpy(), "datetime64", "timestamps", policy)

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        stamps = pd.Series(_tick_values(self.numbers(block), "datetime64", self.column.resolution))
        stamps[missing] = pd.NaT
        dtype = _recorded_dtype(self.column.dtype)
        if dtype is None or not pd.api.types.is_datetime64_any_dtype(dtype):  # e.g. dates read from text
            return {self.column.name: stamps}
        zone = zone_of(dtype)
        if zone is not None:
            stamps = (stamps.dt.tz_localize(zone, nonexistent="shift_forward",
                                            ambiguous=np.zeros(len(stamps), dtype=bool))  # wall-clock times
                      if self.column.local else stamps.dt.tz_localize("UTC"))
        return {self.column.name: _in_dtype(stamps, dtype)}


class _DurationCodec(_NumberCodec):
    column: DurationColumn

    def __init__(self, column: DurationColumn) -> None:
        super().__init__(column, column.lower_ticks, column.upper_ticks, column.knots, integral=True)

    def values(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        """Ticks of the column's resolution; a finer span falls to the start of its tick under
        ``policy`` "clip", an error under "raise"."""
        series = numpy_temporal(frame[self.column.name][present])
        if _holds_numbers(series) or pd.api.types.is_datetime64_any_dtype(series.dtype):
            # to_timedelta would read numbers as nanoseconds
            raise SchemaError(f"column {self.column.name!r} must hold durations, but holds {series.dtype} values")
        try:
            spans = pd.to_timedelta(series)
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"column {self.column.name!r} must hold durations: {exc}") from exc
        return _ticks(self.column, spans.to_numpy(), "timedelta64", "durations", policy)

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        spans = pd.Series(_tick_values(self.numbers(block), "timedelta64", self.column.resolution))
        spans[missing] = pd.NaT
        dtype = _recorded_dtype(self.column.dtype)
        return {self.column.name: _in_dtype(spans, dtype) if dtype is not None and is_duration_dtype(dtype) else spans}


def _recorded_dtype(text: str | None) -> Any:
    """The pandas dtype that a column's recorded dtype text names; None without one, or for text
    pandas cannot read (a declared schema's "date"), which leaves the decoded values as they are."""
    try:
        return read_dtype(text) if text else None
    except TypeError:
        return None


def _in_dtype(times: pd.Series, dtype: Any) -> pd.Series:
    """Timestamps or durations in ``dtype``, through pandas' own dtype of its unit first: that cast
    truncates a finer resolution to the unit, which Arrow's would refuse as a loss of data."""
    return times.astype(numpy_temporal_dtype(dtype)).astype(dtype)


def _holds_numbers(series: pd.Series) -> bool:
    """Whether the present values of ``series`` are numbers (by dtype, or by value in an object or
    categorical column), which pandas' time parsers would read as nanoseconds."""
    if not len(series):
        return False  # an all-null column: a float or Int64 dtype says nothing
    if pd.api.types.is_numeric_dtype(series.dtype):
        return True
    if pd.api.types.is_object_dtype(series.dtype) or isinstance(series.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(series, skipna=True) in ("integer", "floating", "mixed-integer-float",
                                                                 "decimal", "boolean")
    return False


def _ticks(column: TickColumn, values: np.ndarray, family: str, what: str, policy: InvalidPolicy) -> np.ndarray:
    """``values`` (numpy ``family``: datetime64 or timedelta64) as whole ticks of the column's
    resolution, rounded down; under ``policy`` "raise", a value finer than a tick is an error."""
    ticks = values.astype(f"{family}[{column.resolution}]")  # rounds down, before 1970 and below 0 too
    finer = int(np.count_nonzero(ticks.astype(values.dtype) != values))
    if policy == "raise" and finer:
        raise DomainError(f"column {column.name!r} has {finer} {what} finer than its resolution "
                          f"{column.resolution!r}; pass on_invalid='clip' to truncate them to it")
    return ticks.astype(np.int64).astype(np.float64)


def _tick_values(ticks: np.ndarray, family: str, resolution: str) -> np.ndarray:
    """Whole ``resolution`` ticks as numpy ``family`` values in a unit pandas holds (it has no D, h or m)."""
    values = ticks.astype(np.int64).astype(f"{family}[{resolution}]")
    return values.astype(f"{family}[s]") if resolution in ("D", "h", "m") else values


class _BinaryCodeCodec(_Codec):
    """An integer range of at most 128 values as ceil(log2(range)) sigmoid bits of (value - lower)."""

    activation: Activation = "sigmoid"
    column: IntegerColumn

    def __init__(self, column: IntegerColumn) -> None:
        super().__init__(column)
        self.width = max(1, int(np.ceil(np.log2(column.n_values))))
        self.code_values = column.n_values

    def encode(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        values = _whole(self.column.name, _numbers(frame, self.column.name, present), policy)
        values = _enforce_range(self.column.name, values, self.column.lower, self.column.upper, policy)
        return (values - self.column.lower)[:, None]

    def offsets(self, block: np.ndarray) -> np.ndarray:
        # A code past the range maps to the nearest allowed value, the upper bound.
        return np.clip(np.rint(block[:, 0]), 0, self.column.n_values - 1).astype(np.int64)

    def cells(self, block: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        return {self.column.name: (self.offsets(block), self.column.n_values)}

    def cell_specs(self, start: int) -> list[CellSpec]:
        return [CellSpec(self.column.name, "bits", start, start + self.width, self.column.n_values)]

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        values = self.column.lower + self.offsets(block)
        return {self.column.name: _restore(values.astype(np.float64), missing, self.column.dtype, "int")}


class _BooleanCodec(_Codec):
    activation: Activation = "sigmoid"

    def encode(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        series = frame[self.column.name][present]
        valid = series.isin([True, False]).to_numpy()
        if not valid.all():
            raise SchemaError(f"column {self.column.name!r} is boolean but holds "
                              f"{series[~valid].iloc[0]!r}")
        return series.to_numpy(dtype=np.float32)[:, None]

    def cells(self, block: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        return {self.column.name: ((block[:, 0] > 0.5).astype(np.int64), 2)}

    def cell_specs(self, start: int) -> list[CellSpec]:
        return [CellSpec(self.column.name, "bits", start, start + 1, 2)]

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        return {self.column.name: _restore(block[:, 0] > 0.5, missing, self.column.dtype, "bool")}


class _CategoricalCodec(_Codec):
    """One-hot over the categories (and catch-all); the generator emits Gumbel-softmax here."""

    activation: Activation = "softmax"
    column: CategoricalColumn
    absent = -1.0

    def __init__(self, column: CategoricalColumn) -> None:
        super().__init__(column)
        self.levels = list(column.levels)
        self.width = len(self.levels)
        self.index = pd.Index(self.levels, dtype=object)
        self.string_levels = pa.array(self.levels, pa.string()) if all(isinstance(v, str) for v in self.levels) else None
        # Levels mixing text and numbers or booleans, read from storage of text (a private CSV, a partition
        # field): a text value that is no level matches a non-text level by its text ("1" matches 1).
        others = [(str(v), i) for i, v in enumerate(self.levels) if not isinstance(v, str)]
        texts = dict(others)
        mixed = 0 < len(others) < len(self.levels)
        self.level_texts = texts if mixed and len(texts) == len(others) else None

    def lookup(self, series: pd.Series) -> np.ndarray:
        """Each value's index among the levels, -1 where it is not one (Arrow strings: looked up in Arrow,
        without a Python object per value)."""
        dtype = series.dtype
        if self.string_levels is not None and isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow":
            found = pc.index_in(pa.array(series), value_set=self.string_levels)
            return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        positions = positions_in(self.index, series.astype(object) if isinstance(dtype, pd.CategoricalDtype) else series)
        if self.level_texts is not None and pd.api.types.is_string_dtype(dtype) and (positions < 0).any():
            unknown = np.flatnonzero(positions < 0)
            positions[unknown] = [self.level_texts.get(value, -1) if isinstance(value, str) else -1
                                  for value in series.iloc[unknown]]
        return positions

    def codes(self, series: pd.Series, policy: InvalidPolicy) -> np.ndarray:
        codes = self.lookup(series)
        unknown = codes < 0
        if unknown.any():
            if policy == "raise" or self.column.catch_all is None:
                examples = _distinct(series[unknown].iloc[:1000])[:5]
                hint = ("; pass on_invalid='clip' to map them to the catch-all"
                        if self.column.catch_all is not None else "; declare a catch_all category to absorb them")
                raise DomainError(f"column {self.column.name!r} holds {int(unknown.sum())} values outside "
                                  f"its categories, e.g. {examples}{hint}")
            codes[unknown] = len(self.levels) - 1
        return codes

    def encode(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        return self.codes(frame[self.column.name][present], policy)[:, None]

    def category_codes(self, block: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(block[:, 0]), 0, self.width - 1).astype(np.int64)

    def cells(self, block: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        return {self.column.name: (self.category_codes(block), self.width)}

    def cell_specs(self, start: int) -> list[CellSpec]:
        return [CellSpec(self.column.name, "softmax", start, start + self.width, self.width)]

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        return {self.column.name: _restore_categories(self.category_codes(block), missing, self.column)}


def _distinct(values: pd.Series) -> list[Any]:
    """The distinct values; all of them where some are unhashable (lists, dicts)."""
    try:
        return list(pd.unique(values))
    except TypeError:
        return values.tolist()


class _GeoCodec(_Codec):
    """A latitude/longitude pair: each coordinate binned in ``NUMBER_CELLS`` even cells of the region's
    bounding box, drawn like a category, with a uniform place in its cell (a number without knots);
    decoding projects into the region.

    Drawn cells let the generator place the pair's joint mass and a conditioning edge join the two
    coordinates; a tanh output per coordinate lost their dependence (California housing at eps
    1000: latitude x longitude TVD 0.57, as if independent; binned 0.15).
    """

    column: GeoPointColumn

    def __init__(self, column: GeoPointColumn) -> None:
        super().__init__(column)
        min_lat, max_lat, min_lon, max_lon = column.region.bounds()
        self.axes = tuple(_NumberCodec(ContinuousColumn(name, lower=low, upper=high), low, high, None, integral=False)
                          for name, low, high in ((column.lat, min_lat, max_lat), (column.lon, min_lon, max_lon)))
        self.split = self.axes[0].fields  # compact fields of the latitude, then of the longitude

    def value_spans(self) -> list[tuple[int, Activation, Role]]:
        return [span for axis in self.axes for span in axis.value_spans()]

    def span_columns(self) -> list[str]:
        return [axis.column.name for axis in self.axes for _ in axis.value_spans()]

    def missing_mask(self, frame: pd.DataFrame, policy: InvalidPolicy) -> np.ndarray:
        """The rows without a point: both coordinates missing, or (under ``policy`` "clip") either."""
        lat_missing = missing_values(frame[self.column.lat])
        lon_missing = missing_values(frame[self.column.lon])
        half = lat_missing != lon_missing
        if half.any() and policy == "raise":
            raise SchemaError(f"geo column {self.column.name!r}: {int(half.sum())} rows have only one of "
                              f"{self.column.lat!r} and {self.column.lon!r} missing; pass on_invalid='clip' to "
                              f"count them as missing points")
        return lat_missing | lon_missing

    def encode(self, frame: pd.DataFrame, present: np.ndarray, policy: InvalidPolicy) -> np.ndarray:
        lat = _numbers(frame, self.column.lat, present)
        lon = _numbers(frame, self.column.lon, present)
        finite = np.isfinite(lat) & np.isfinite(lon)
        if not finite.all():
            if policy == "raise":
                raise DomainError(f"geo column {self.column.name!r} has {int((~finite).sum())} points whose "
                                  f"coordinates are not finite numbers (inf); pass on_invalid='clip' to clamp them "
                                  f"to the region's bounding box, as numbers beyond their bounds are")
            # As a number's infinity is clamped to its bound: the point then moves into the region like any
            # other outside it. (Refusing it would let one row fail a fit that declared nothing.)
            for values, axis in ((lat, self.axes[0]), (lon, self.axes[1])):  # those values only: per row
                infinite = ~np.isfinite(values)
                values[infinite] = np.clip(values[infinite], axis.lower, axis.upper)
        inside = self.column.region.contains(lat, lon)
        if not inside.all():
            if policy == "raise":
                raise DomainError(f"geo column {self.column.name!r} has {int((~inside).sum())} points outside "
                                  f"its region (e.g. lat={lat[~inside][0]}, lon={lon[~inside][0]}); "
                                  f"pass on_invalid='clip' to move them inside")
            lat[~inside], lon[~inside] = self.column.region.project(lat[~inside], lon[~inside])
        return np.column_stack([axis.fields_of(np.clip(values, axis.lower, axis.upper))
                                for axis, values in zip(self.axes, (lat, lon))])

    def _blocks(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return block[:, :self.split], block[:, self.split:]

    def cells(self, block: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
        out: dict[str, tuple[np.ndarray, int]] = {}
        for axis, part in zip(self.axes, self._blocks(block)):
            out.update(axis.cells(part))
        return out

    def cell_specs(self, start: int) -> list[CellSpec]:
        lat_width = sum(width for width, _, _ in self.axes[0].value_spans())
        return [*self.axes[0].cell_specs(start), *self.axes[1].cell_specs(start + lat_width)]

    def decode(self, block: np.ndarray, missing: np.ndarray) -> dict[str, pd.Series]:
        lat, lon = (axis.numbers(part) for axis, part in zip(self.axes, self._blocks(block)))
        outside = ~self.column.region.contains(lat, lon)
        if outside.any():
            lat[outside], lon[outside] = self.column.region.project(lat[outside], lon[outside])
        return {self.column.lat: _restore(lat, missing, self.column.lat_dtype, "float"),
                self.column.lon: _restore(lon, missing, self.column.lon_dtype, "float")}


def _codec_for(column: Column) -> _Codec:
    if isinstance(column, IntegerColumn):
        if column.uses_binary_code:
            return _BinaryCodeCodec(column)
        return _NumberCodec(column, column.lower, column.upper, column.knots, integral=True)
    if isinstance(column, ContinuousColumn):
        return _NumberCodec(column, column.lower, column.upper, column.knots, integral=False)
    if isinstance(column, DatetimeColumn):
        return _DatetimeCodec(column)
    if isinstance(column, DurationColumn):
        return _DurationCodec(column)
    if isinstance(column, BooleanColumn):
        return _BooleanCodec(column)
    if isinstance(column, CategoricalColumn):
        return _CategoricalCodec(column)
    if isinstance(column, GeoPointColumn):
        return _GeoCodec(column)
    raise SchemaError(f"column {column.name!r}: no encoding for kind {column.kind!r}")


# --- dtype restoration ----------------------------------------------------------------------

_NULLABLE_OF = {"int": "Int64", "float": "float64", "bool": "boolean"}


def _restore(values: np.ndarray, missing: np.ndarray, dtype: str | None, kind: str) -> pd.Series:
    """Values with nulls where ``missing``, in ``dtype`` when it can hold them, else its nullable kin."""
    if kind == "int":
        series = pd.Series(pd.array(values.astype(np.int64), dtype="Int64"))
    elif kind == "bool":
        series = pd.Series(pd.array(values.astype(bool), dtype="boolean"))
    else:
        series = pd.Series(values.astype(np.float64))
    if missing.any():
        series[missing] = None
    target = dtype or (_NULLABLE_OF[kind] if missing.any() else {"int": "int64", "bool": "bool",
                                                                  "float": "float64"}[kind])
    return _cast(series, target, _NULLABLE_OF[kind])


def _restore_categories(codes: np.ndarray, missing: np.ndarray, column: CategoricalColumn) -> pd.Series:
    """Category codes (nulls where ``missing``) as a Series in the column's recorded dtype: the levels
    are cast once and then taken by code."""
    levels = list(column.levels)
    if column.dtype in ("category", ORDERED_CATEGORY):
        dtype = pd.CategoricalDtype(levels, ordered=column.dtype == ORDERED_CATEGORY)
        return pd.Series(pd.Categorical.from_codes(np.where(missing, -1, codes), dtype=dtype))
    dictionary = _arrow_dictionary(codes, missing, levels, column.dtype)
    if dictionary is not None:
        return dictionary
    with_null = int(missing.any())
    table = pd.Series(levels + [None] * with_null, dtype=object)  # a trailing null for missing rows
    if column.dtype is not None and column.dtype != "object":
        fallback = "Int64" if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in levels) else "object"
        table = _cast(table, column.dtype, fallback)
    return pd.Series(table.array.take(np.where(missing, len(levels), codes)), dtype=table.dtype)  # object stays object


def _arrow_dictionary(codes: np.ndarray, missing: np.ndarray, levels: list[Any], dtype: str | None) -> pd.Series | None:
    """Codes as an Arrow dictionary column of the recorded type whose dictionary is the levels, in their
    order (an ordered dictionary's order is its meaning); None when the dtype is no Arrow dictionary or
    its value type cannot hold every level (numbers and a text catch-all: the caller falls back)."""
    try:
        target = read_dtype(dtype) if dtype else None
    except TypeError:
        return None
    if not is_arrow_dictionary(target):
        return None
    type_ = target.pyarrow_dtype
    try:
        values = pa.array(levels, type=type_.value_type)
        indices = pa.array(np.where(missing, 0, codes), type=type_.index_type, mask=missing)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return pd.Series(pd.array(pa.DictionaryArray.from_arrays(indices, values, ordered=type_.ordered), dtype=target))


def _cast(series: pd.Series, dtype: str, fallback: str) -> pd.Series:
    """Cast to the recorded dtype; one that cannot hold the generated nulls falls back to a nullable one."""
    try:
        target = read_dtype(dtype)
    except TypeError:
        return series.astype(fallback)
    if is_arrow_decimal(target) and pd.api.types.is_numeric_dtype(series.dtype):
        series = decimal_storable(series, target.pyarrow_dtype)
    if series.isna().any() and (getattr(target, "kind", "O") in "iub" and not isinstance(
            target, pd.api.extensions.ExtensionDtype)):
        return series.astype(fallback)
    try:
        return series.astype(target)
    except (TypeError, ValueError):
        return series.astype(fallback)


__all__ = ["DomainError", "Encoder", "PiecewiseLinear", "Span"]
