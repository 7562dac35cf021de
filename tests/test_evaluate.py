"""Specifications for tabsynth.evaluate: marginal TVD, TSTR, out-of-domain checks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tabsynth.evaluate import (
    fidelity_report,
    marginal_tvd,
    out_of_domain_fraction,
    peak_rss_mb,
    sampling_floor,
    summarize_tvd,
    trtr,
    tstr,
)

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ADULT = DATASETS / "adult"


def _tvd(table: pd.DataFrame, columns: tuple[str, ...]) -> float:
    """TVD of one marginal, looked up by its column tuple."""
    row = table[table["columns"].map(lambda c: tuple(c) == columns)]
    assert len(row) == 1, columns
    return float(row["tvd"].iloc[0])


@pytest.fixture
def mixed() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2_000
    df = pd.DataFrame(
        {
            "num": rng.normal(size=n),
            "count": rng.integers(0, 5, n),
            "cat": pd.Series(rng.choice(["a", "b", "c"], n), dtype="str"),
            "flag": rng.random(n) < 0.3,
        }
    )
    df.loc[::10, "cat"] = None
    df.loc[::13, "num"] = np.nan
    return df


# ------------------------------------------------------------------ marginal TVD


def test_tvd_of_table_with_itself_is_zero(mixed: pd.DataFrame) -> None:
    for way in (1, 2):
        table = marginal_tvd(mixed, mixed.copy(), way=way)
        assert len(table) == (4 if way == 1 else 6)
        assert np.allclose(table["tvd"], 0.0)
    report = fidelity_report(mixed, mixed)
    assert report["tvd_1way_mean"] == 0.0 and report["tvd_2way_max"] == 0.0
    assert report["numeric_columns"] == ["num"]  # "count" has <= bins distinct values


def test_tvd_of_disjoint_categories_is_one() -> None:
    real = pd.DataFrame({"c": ["a", "b", "a"], "d": ["x", "x", "y"]})
    synthetic = pd.DataFrame({"c": ["p", "q", "q", "r"], "d": ["z", "z", "z", "w"]})
    assert np.allclose(marginal_tvd(real, synthetic)["tvd"], 1.0)
    assert np.allclose(marginal_tvd(real, synthetic, way=2)["tvd"], 1.0)


def test_one_way_hand_example() -> None:
    real = pd.DataFrame({"a": ["x", "x", "x", "y"]})
    synthetic = pd.DataFrame({"a": ["x", "y", "y", "z"]})
    # p = (3/4, 1/4, 0), q = (1/4, 2/4, 1/4): 0.5 * (1/2 + 1/4 + 1/4) = 0.5
    assert _tvd(marginal_tvd(real, synthetic), ("a",)) == pytest.approx(0.5)


def test_two_way_hand_example_sees_lost_correlation() -> None:
    real = pd.DataFrame({"a": ["x", "x", "y", "y"], "b": [1, 1, 2, 2]})
    synthetic = pd.DataFrame({"a": ["x", "y", "x", "y"], "b": [1, 1, 2, 2]})
    one = marginal_tvd(real, synthetic, way=1)
    assert np.allclose(one["tvd"], 0.0)  # same 1-way marginals
    two = marginal_tvd(real, synthetic, way=2)
    # real: (x,1)=(y,2)=1/2; synthetic: all four cells 1/4 -> 0.5 * (4 * 1/4) = 0.5
    assert _tvd(two, ("a", "b")) == pytest.approx(0.5)
    assert bool(two["categorical"].iloc[0])


def test_null_is_its_own_category() -> None:
    real = pd.DataFrame({"c": pd.Series(["a", None], dtype="str")})
    synthetic = pd.DataFrame({"c": pd.Series(["a", "a"], dtype="str")})
    assert _tvd(marginal_tvd(real, synthetic), ("c",)) == pytest.approx(0.5)


def test_numeric_binning_uses_real_quantiles() -> None:
    real = pd.DataFrame({"v": np.arange(1_000, dtype=float)})
    above = pd.DataFrame({"v": real["v"] + 1e6})  # all beyond the real max -> last bin
    below = pd.DataFrame({"v": real["v"] - 1e6})  # all below the real min -> first bin
    assert _tvd(marginal_tvd(real, above, bins=20), ("v",)) > 0.9
    assert _tvd(marginal_tvd(real, below, bins=20), ("v",)) > 0.9
    # Squeezed into the lower half of the real range: half of the real-quantile bins are
    # empty and the other half hold twice the mass. Pooled quantiles would not give 0.5.
    squeezed = pd.DataFrame({"v": real["v"] * 0.5})
    assert _tvd(marginal_tvd(real, squeezed, bins=20), ("v",)) == pytest.approx(0.5, abs=0.02)
    table = marginal_tvd(real, squeezed)
    assert not bool(table["categorical"].iloc[0])


def test_a_float_column_of_few_values_scores_synthetic_values_by_the_nearest_real_one() -> None:
    real = pd.DataFrame({"density": np.repeat([16.3, 73.0, 4187.9], [200, 300, 500])})
    close = pd.DataFrame({"density": real["density"] * 1.001})  # continuous values beside the real ones
    table = marginal_tvd(real, close)
    assert _tvd(table, ("density",)) == 0.0 and not bool(table["categorical"].iloc[0])
    shifted = pd.DataFrame({"density": np.repeat([16.3, 73.0, 4187.9], [500, 300, 200])})
    assert _tvd(marginal_tvd(real, shifted), ("density",)) == pytest.approx(0.3)


def test_arrow_durations_are_binned_as_numbers_like_numpy_timedeltas() -> None:
    # tabsynth samples an Arrow duration column back as one; scored as labels, every value was its own category.
    spans = pd.Series(pd.to_timedelta(np.random.default_rng(0).integers(0, 3600, 1000), unit="s"))
    real = pd.DataFrame({"span": spans})
    synthetic = pd.DataFrame({"span": (spans * 1.5).astype(pd.ArrowDtype(pa.duration("us")))})
    table = marginal_tvd(real, synthetic)
    assert not bool(table["categorical"].iloc[0])
    assert _tvd(table, ("span",)) == _tvd(marginal_tvd(real, pd.DataFrame({"span": spans * 1.5})), ("span",))
    assert out_of_domain_fraction(real, synthetic)["overall"] == out_of_domain_fraction(real, pd.DataFrame({"span": spans * 1.5}))["overall"]


def test_resample_of_real_has_small_tvd(mixed: pd.DataFrame) -> None:
    resample = mixed.sample(len(mixed), replace=True, random_state=1)
    report = fidelity_report(mixed, resample)
    assert 0 < report["tvd_1way_mean"] < 0.05
    assert report["tvd_2way_mean"] < 0.1
    assert report["n_2way_cat_pairs"] == 3  # count, cat, flag
    summary = summarize_tvd(marginal_tvd(mixed, resample, way=2))
    assert summary["n_marginals"] == 6 and summary["max"] >= summary["mean"]


def test_marginal_tvd_validates_arguments(mixed: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="way"):
        marginal_tvd(mixed, mixed, way=3)
    with pytest.raises(ValueError, match="missing from synthetic.*'cat'"):
        marginal_tvd(mixed, mixed.drop(columns="cat"))
    with pytest.raises(ValueError, match="bins"):
        marginal_tvd(mixed, mixed, bins=1)
    with pytest.raises(ValueError, match="synthetic has no rows"):
        marginal_tvd(mixed, mixed.iloc[:0])
    table = marginal_tvd(mixed, mixed, way=2, columns=["num", "cat"])
    assert list(table["columns"]) == [("num", "cat")]


def test_sampling_floor_of_an_even_binary_column_is_the_binomial_mean_deviation() -> None:
    # n rows drawn from a 50/50 column: 1-way TVD |X/n - 1/2| with X ~ Binomial(n, 1/2).
    real = pd.DataFrame({"flag": pd.Series(["a", "b"] * 2_500, dtype="str")})
    n = 100
    expected = sum(math.comb(n, k) * abs(k - n / 2) for k in range(n + 1)) / 2**n / n
    floor = sampling_floor(real, n, draws=400, seed=3)
    assert floor["tvd_1way_mean"] == pytest.approx(expected, abs=0.006)  # 4 standard errors of 400 draws
    assert floor["n"] == n and floor["draws"] == 400


def test_sampling_floor_falls_as_the_sample_grows(mixed: pd.DataFrame) -> None:
    small, large = (sampling_floor(mixed, n, draws=4) for n in (200, 20_000))
    for measure in ("tvd_1way_mean", "tvd_2way_mean", "tvd_2way_cat_mean"):
        assert large[measure] < small[measure] / 3  # TVD shrinks as 1 / sqrt(n): 100 times the rows, a tenth


def test_sampling_floor_is_reproducible_by_seed_without_touching_the_global_rng(mixed: pd.DataFrame) -> None:
    state = np.random.get_state()[1].copy()
    assert sampling_floor(mixed, 500, seed=7) == sampling_floor(mixed, 500, seed=7)
    assert sampling_floor(mixed, 500, seed=7) != sampling_floor(mixed, 500, seed=8)
    assert np.array_equal(np.random.get_state()[1], state)


def test_sampling_floor_reads_only_the_named_columns_given_as_an_iterator(mixed: pd.DataFrame) -> None:
    floor = sampling_floor(mixed, 500, columns=iter(["cat", "flag"]))
    assert floor == sampling_floor(mixed[["cat", "flag"]], 500)


def test_a_synthetic_column_that_real_lacks_is_named_in_a_warning_and_not_scored(mixed: pd.DataFrame) -> None:
    synthetic = mixed.assign(extra=1.0)
    with pytest.warns(UserWarning, match=r"not scored: \['extra'\]") as caught:
        report = fidelity_report(mixed, synthetic)
    assert caught[0].filename == __file__  # the caller's line, not the library's
    assert report["tvd_1way_mean"] == fidelity_report(mixed, mixed)["tvd_1way_mean"]


def test_sampling_floor_validates_arguments(mixed: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sampling_floor(mixed, 0)
    with pytest.raises(ValueError, match="draws must be an integer >= 1"):
        sampling_floor(mixed, draws=0)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sampling_floor(mixed, True)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        sampling_floor(mixed, 10.0)
    with pytest.raises(ValueError, match="columns missing from real"):
        sampling_floor(mixed, columns=["nope"])
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        sampling_floor(mixed, seed=-1)
    with pytest.raises(ValueError, match="real has no rows"):
        sampling_floor(mixed.iloc[:0])


# ------------------------------------------------------------------------ TSTR


def _toy_classification(seed: int, n: int = 1_500) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    group = rng.choice(["g1", "g2", "g3"], n)
    signal = 2 * x + (group == "g1") + rng.normal(scale=0.5, size=n)
    df = pd.DataFrame(
        {"x": x, "group": pd.Series(group, dtype="str"), "y": np.where(signal > 0, "yes", "no")}
    )
    df["y"] = df["y"].astype("str")
    df.loc[::9, "group"] = None
    df.loc[::11, "x"] = np.nan
    return df


def test_tstr_handles_nulls_unseen_categories_and_str_dtypes() -> None:
    train, test = _toy_classification(0), _toy_classification(1)
    test.loc[:50, "group"] = "never-seen"
    result = tstr(train, test, "y", models=("hgb", "logreg"))
    assert result["classes"] == ["no", "yes"] and result["positive_class"] == "yes"
    for model in ("hgb", "logreg"):
        assert result[model]["roc_auc"] > 0.85
        assert result[model]["accuracy"] > result["majority_accuracy"]


def test_tstr_single_class_synthetic_gives_nan_auc_with_note() -> None:
    train, test = _toy_classification(0), _toy_classification(1)
    train["y"] = "yes"
    result = tstr(train, test, "y")
    for model in ("hgb", "logreg"):
        assert math.isnan(result[model]["roc_auc"])
        assert "single target class" in result[model]["notes"][0]
        assert result[model]["accuracy"] == pytest.approx(np.mean(test["y"] == "yes"))


def test_tstr_multiclass_macro_auc() -> None:
    df = _toy_classification(0, n=2_000)
    df["y"] = pd.cut(df["x"].fillna(0), [-np.inf, -0.5, 0.5, np.inf], labels=["lo", "mid", "hi"])
    result = tstr(df.iloc[:1_500], df.iloc[1_500:], "y", models=("logreg",))
    assert result["positive_class"] is None and len(result["classes"]) == 3
    assert result["logreg"]["roc_auc"] > 0.8


def test_tstr_validates_arguments() -> None:
    df = _toy_classification(0, n=200)
    with pytest.raises(ValueError, match="target 'nope'"):
        tstr(df, df, "nope")
    with pytest.raises(ValueError, match="models"):
        tstr(df, df, "y", models=("svm",))
    with pytest.raises(ValueError, match=r"missing from synthetic: \['x'\]"):
        tstr(df.drop(columns="x"), df, "y")


def test_tstr_on_a_continuous_target_says_it_scores_classifiers() -> None:
    # It said no synthetic row held a class the real test shows.
    df = _toy_classification(0, n=200).assign(y=lambda d: d["x"].fillna(0.0) * 1.5)
    with pytest.raises(ValueError, match="target 'y' holds fractional numbers .* scores classifiers"):
        tstr(df, df, "y")
    whole = df.assign(y=(df["y"] > 0).astype(float))  # 0.0 / 1.0 labels stay a classification target
    assert tstr(whole, whole, "y", models=("logreg",))["classes"] == [0.0, 1.0]


@pytest.fixture(scope="module")
def adult() -> tuple[pd.DataFrame, pd.DataFrame]:
    if not ADULT.exists():
        pytest.skip(f"Adult data not found at {ADULT}")
    train = pd.read_parquet(ADULT / "train.parquet").sample(5_000, random_state=0)
    test = pd.read_parquet(ADULT / "test.parquet").sample(5_000, random_state=0)
    return train, test


def test_trtr_on_adult_is_strong(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    result = trtr(train, test, "income")
    assert result["positive_class"] == ">50K"
    assert result["hgb"]["roc_auc"] > 0.85
    assert result["logreg"]["roc_auc"] > 0.85
    assert result["hgb"]["accuracy"] > result["majority_accuracy"]


def test_tstr_with_shuffled_target_is_chance(adult: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = adult
    # One permutation can still correlate with the (very predictive) features by chance,
    # which the model then amplifies: single runs spread roughly 0.45-0.55, so average.
    aucs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        shuffled = train.assign(income=rng.permutation(train["income"].to_numpy()))
        aucs.append(tstr(shuffled, test, "income", models=("hgb",))["hgb"]["roc_auc"])
    assert all(abs(auc - 0.5) < 0.1 for auc in aucs)
    assert abs(np.mean(aucs) - 0.5) < 0.05


# --------------------------------------------------------------- out of domain


def test_out_of_domain_detects_planted_values(mixed: pd.DataFrame) -> None:
    clean = out_of_domain_fraction(mixed, mixed.sample(500, replace=True, random_state=0))
    assert clean["overall"] == 0.0 and clean["rows"] == 0.0

    synthetic = mixed.iloc[:100].copy()
    synthetic.loc[synthetic.index[:10], "cat"] = "never-seen"  # unseen category
    synthetic.loc[synthetic.index[10:15], "num"] = mixed["num"].max() + 1.0  # above range
    synthetic.loc[synthetic.index[15:17], "count"] = -3  # below range
    synthetic["flag"] = synthetic["flag"].astype(object)
    synthetic.loc[synthetic.index[17], "flag"] = None  # real "flag" has no nulls
    result = out_of_domain_fraction(mixed, synthetic)
    cols = result["columns"]
    assert cols["cat"] == pytest.approx(0.10)  # nulls are in real's domain for "cat"
    assert cols["num"] == pytest.approx(0.05)
    assert cols["count"] == pytest.approx(0.02)
    assert cols["flag"] == pytest.approx(0.01)
    assert result["overall"] == pytest.approx(18 / 400)
    assert result["rows"] == pytest.approx(0.18)


def test_peak_rss_is_positive() -> None:
    assert peak_rss_mb() > 10.0


def test_tstr_drops_synthetic_classes_the_real_test_never_shows() -> None:
    rng = np.random.default_rng(0)
    real = pd.DataFrame({"x": rng.normal(size=400), "y": np.where(rng.random(400) < 0.5, "a", "b")})
    synthetic = real.copy()
    synthetic.loc[0, "y"] = "<other>"
    result = tstr(synthetic, real, "y", models=("hgb",))
    assert result["classes"] == ["a", "b"]
    assert any("dropped 1 synthetic rows" in note for note in result["notes"])


def test_tstr_leaves_out_a_numeric_feature_that_is_null_in_every_synthetic_row() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    real = pd.DataFrame({"x": x, "empty": rng.normal(size=400), "y": np.where(x > 0, "a", "b")})
    synthetic = real.assign(empty=np.nan)
    result = tstr(synthetic, real, "y", models=("hgb",))
    assert result["hgb"]["roc_auc"] > 0.95
    assert any("'empty' is null in every training row" in note for note in result["notes"])
