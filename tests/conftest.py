"""Shared fixtures: the real datasets beside the project (tests skip when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def shared_table(relative: str) -> pd.DataFrame:
    """Read a table from ../shared/datasets, skipping the test when it is not there."""
    path = SHARED_DATASETS / relative
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return pd.read_parquet(path)


@pytest.fixture(scope="session")
def adult_train() -> pd.DataFrame:
    return shared_table("adult/train.parquet")


@pytest.fixture(scope="session")
def adult_test() -> pd.DataFrame:
    return shared_table("adult/test.parquet")
