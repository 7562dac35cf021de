"""Tests for the shipped demo datasets and their loader."""

from __future__ import annotations

import pandas as pd
import pytest

from tabsynth.datasets import DEMO_DATASETS, demo_path, load_demo

CPS_COLUMNS = ["age", "gender", "degree", "earnings"]
QUAKES_COLUMNS = ["lat", "lon", "depth", "mag", "stations"]

EXPECTED_ROWS = {"cps_1992": 7602, "cps_2004": 7986, "quakes": 1000}


def _kind(dtype: object) -> str:
    """Classify a pandas dtype as 'int', 'float' or 'string'."""
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_string_dtype(dtype):
        return "string"
    return str(dtype)


def test_registry_lists_the_three_demos() -> None:
    assert set(DEMO_DATASETS) == {"cps_1992", "cps_2004", "quakes"}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_demo_file_is_shipped(name: str) -> None:
    assert demo_path(name).is_file()


@pytest.mark.parametrize("name, rows", sorted(EXPECTED_ROWS.items()))
def test_demo_row_count(name: str, rows: int) -> None:
    assert len(load_demo(name)) == rows


@pytest.mark.parametrize("name", ["cps_1992", "cps_2004"])
def test_cps_columns_and_dtypes(name: str) -> None:
    df = load_demo(name)
    assert list(df.columns) == CPS_COLUMNS
    assert {c: _kind(t) for c, t in df.dtypes.items()} == {
        "age": "int",
        "gender": "string",
        "degree": "string",
        "earnings": "float",
    }
    assert df["age"].dtype == "int64"
    assert df["earnings"].dtype == "float64"


def test_quakes_columns_and_dtypes() -> None:
    df = load_demo("quakes")
    assert list(df.columns) == QUAKES_COLUMNS
    assert {c: str(t) for c, t in df.dtypes.items()} == {
        "lat": "float64",
        "lon": "float64",
        "depth": "int64",
        "mag": "float64",
        "stations": "int64",
    }


def test_cps_years_have_identical_columns() -> None:
    a, b = load_demo("cps_1992"), load_demo("cps_2004")
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.equals(b.dtypes)


def test_cps_categories() -> None:
    for name in ("cps_1992", "cps_2004"):
        df = load_demo(name)
        assert set(df["gender"]) == {"male", "female"}
        assert set(df["degree"]) == {"bachelor", "highschool"}
        assert df["age"].between(25, 34).all()
        assert (df["earnings"] > 0).all()


def test_demos_have_no_missing_values() -> None:
    for name in DEMO_DATASETS:
        assert not load_demo(name).isna().any().any()


def test_quakes_coordinates_near_fiji() -> None:
    df = load_demo("quakes")
    assert df["lat"].between(-40, -10).all()
    assert df["lon"].between(160, 190).all()


def test_unknown_name_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="no_such_demo") as excinfo:
        load_demo("no_such_demo")
    for valid in DEMO_DATASETS:
        assert valid in str(excinfo.value)


def test_demo_path_unknown_name_raises_value_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        demo_path("nope")


def test_missing_file_raises_file_not_found_with_regenerate_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import tabsynth.datasets as ds

    monkeypatch.setattr(ds, "DATASETS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="make_demo.py"):
        ds.load_demo("quakes")
