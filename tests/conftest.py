"""Shared fixtures: the real datasets beside the project (tests skip when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tabsynth import Synthesizer
from tabsynth.privacy.accounting import compute_epsilon

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


def recomputed_training_epsilon(fitted: Synthesizer) -> tuple[float, float]:
    """The ledger's training epsilon and the same recomputed from the reported mechanism (noise
    multiplier, sample rate, steps, the whole-table Gaussian mechanisms, the accountant's delta) by the
    accountant the fit used."""
    report = fitted.privacy_report()
    training = report["ledger"]["entries"][-1]
    recomputed = compute_epsilon(report["noise_multiplier"], report["sample_rate"], report["steps"],
                                 training["details"]["accountant_delta"], fitted.settings.accountant,
                                 extra_gaussian=training["details"]["gaussian_noise_multiplier"])
    return training["epsilon"], recomputed
