"""Synthesizer: fit/sample end to end, the budget holds, nothing private leaks, save/load."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import re
import warnings
from dataclasses import replace
from pathlib import Path

import dp_accounting
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from safetensors import safe_open

from tabsynth import (BoundingBox, CategoricalColumn, ContinuousColumn, Encoder, GeoPointColumn, IntegerColumn, Schema,
                      SchemaError, Synthesizer)
from tabsynth.synthesizer import _check_same_kinds, _null_free_columns
from tabsynth.datasets import load_demo
from tabsynth.privacy import DiscoveryWarning
from tabsynth.privacy.accounting import PRV_EPS_ERROR, zcdp_budget
from tabsynth.privacy.marginals import measure_marginals
from tabsynth.synthesizer import ModelFileError, TrainingDivergedError, _checked

from conftest import recomputed_training_epsilon

FAST = dict(marginal_steps=5, steps=3, batch_size=64, generator_hidden=(16,), discriminator_hidden=(16,), noise_dim=8, seed=0,
            warm_start_epochs=0.02)


HOME = GeoPointColumn("home", nullable=True, lat="lat", lon="lon", region=BoundingBox(30, 40, -120, -110))


def test_a_geo_pair_shares_one_missing_flag_between_its_two_marginals() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    frame = pd.DataFrame({"lat": rng.uniform(31, 39, n), "lon": rng.uniform(-119, -111, n)})
    schema = Schema((HOME,))
    synth = Synthesizer(**{**FAST, "marginal_steps": 50}).fit(frame, epsilon=1.0, schema=schema)
    listed = synth.privacy_report()["ledger"]["entries"][-1]["details"]["columns_drawn_without_nulls"]
    assert set(listed) <= {"home"}  # the pair's name, not its coordinates'
    if listed:
        assert synth.sample(2000, seed=0)[["lat", "lon"]].isna().sum().sum() == 0


def test_a_geo_pair_keeps_the_dependence_of_its_coordinates() -> None:
    # Two clusters on a diagonal: drawn independently, half the points would land off it (the
    # coordinates as one tanh output each: 53% at these settings).
    rng = np.random.default_rng(0)
    n = 3000
    south = rng.random(n) < 0.5
    frame = pd.DataFrame({"lat": np.where(south, rng.uniform(31, 34, n), rng.uniform(36, 39, n)),
                          "lon": np.where(south, rng.uniform(-119, -116, n), rng.uniform(-114, -111, n))})
    schema = Schema((replace(HOME, nullable=False),))
    sample = Synthesizer(**{**FAST, "marginal_steps": 50}).fit(frame, epsilon=10.0, schema=schema).sample(4000, seed=0)
    off_diagonal = (sample["lat"] < 35) != (sample["lon"] < -115)
    assert off_diagonal.mean() < 0.2


def test_a_nullable_geo_pairs_coordinates_take_no_conditioning_edge() -> None:
    # Their nulls come from the pair's one flag, which an edge to either coordinate would also move
    # (this crashed: the edge's weights had a missing cell the drawn coordinate does not own).
    rng = np.random.default_rng(0)
    n = 3000
    south = rng.random(n) < 0.5
    frame = pd.DataFrame({"lat": np.where(south, rng.uniform(31, 34, n), rng.uniform(36, 39, n)),
                          "lon": np.where(south, rng.uniform(-119, -116, n), rng.uniform(-114, -111, n)),
                          "side": pd.Series(np.where(south, "south", "north"), dtype="str")})
    schema = Schema((HOME, CategoricalColumn("side", categories=("north", "south"))))
    synth = Synthesizer(**{**FAST, "marginal_steps": 20}).fit(frame, epsilon=10.0, schema=schema)
    edges = synth.privacy_report()["marginals"]["conditioning_edges"]
    assert not {"lat", "lon"} & {column for edge in edges for column in edge}
    assert len(synth.sample(100, seed=0)) == 100


@pytest.fixture(scope="module")
def cps() -> pd.DataFrame:
    return load_demo("cps_2004").head(1500)


def test_the_columns_drawn_without_nulls_are_those_whose_every_noisy_count_of_nulls_is_near_zero() -> None:
    rng = np.random.default_rng(2)
    n = 20_000
    schema = Schema((HOME, CategoricalColumn("pet", nullable=True, categories=("cat", "dog")),
                     ContinuousColumn("x", nullable=True, lower=0.0, upper=1.0), IntegerColumn("k", lower=0, upper=3)))
    frame = pd.DataFrame({"lat": rng.uniform(31, 39, n), "lon": rng.uniform(-119, -111, n),
                          "pet": pd.Series(rng.choice(["cat", "dog", None], n, p=[0.4, 0.4, 0.2]), dtype=object),
                          "x": rng.random(n), "k": rng.integers(0, 4, n)})
    encoder = Encoder(schema)
    specs = encoder.cell_specs
    cells = encoder.marginal_cells(encoder.encode_compact(frame))[0]
    measured = measure_marginals([cells], [spec.size for spec in specs], [], 0.05, np.random.default_rng(3),
                                 missing=[spec.missing is not None for spec in specs])
    columns, marginals = _null_free_columns(encoder, measured)
    assert columns == ["home", "x"]
    assert sorted(specs[j].name for j in marginals) == ["lat", "lon", "x"]


def test_columns_whose_dp_count_of_nulls_is_near_zero_are_sampled_without_nulls(tmp_path: Path) -> None:
    # Discovery makes every float column nullable; the DP count of nulls tells which have none (a column
    # without nulls is listed unless its noise exceeds three stds: 0.1% of fits, hence no assertion on which).
    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame({"complete": rng.normal(size=n),
                          "gappy": np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n))})
    synth = Synthesizer(**{**FAST, "marginal_steps": 300}).fit(frame, epsilon=1.0)
    sample = synth.sample(5000, seed=0)
    listed = synth.privacy_report()["ledger"]["entries"][-1]["details"]["columns_drawn_without_nulls"]
    assert set(listed) <= {"complete"}
    assert all(sample[name].isna().sum() == 0 for name in listed)
    assert 0.2 < sample["gappy"].isna().mean() < 0.4
    synth.save(tmp_path / "model.tabsynth")  # the suppression lives in the weights
    loaded = Synthesizer.load(tmp_path / "model.tabsynth").sample(5000, seed=0)
    assert all(loaded[name].isna().sum() == 0 for name in listed)


def test_a_duration_column_is_learnt_and_sampled_as_durations_of_its_dtype(tmp_path: Path) -> None:
    # A length of stay: whole days of a right-skewed law, with gaps, beside a number it drives.
    rng = np.random.default_rng(1)
    days = rng.gamma(2.0, 3.0, 4000).round()
    frame = pd.DataFrame({"stay": pd.Series(pd.to_timedelta(days, unit="D")).astype("timedelta64[s]"),
                          "cost": days * 1000 + rng.normal(0, 200, 4000)})
    frame.loc[rng.random(4000) < 0.1, "stay"] = pd.NaT
    synth = Synthesizer(**{**FAST, "marginal_steps": 300}).fit(frame, epsilon=3.0)
    sample = synth.sample(4000, seed=0)
    assert sample["stay"].dtype == np.dtype("timedelta64[s]")
    assert 0.03 < sample["stay"].isna().mean() < 0.2
    real_days, synthetic_days = (f["stay"].dt.total_seconds() / 86400 for f in (frame, sample))
    assert abs(synthetic_days.median() - real_days.median()) <= 2
    synth.save(tmp_path / "model.tabsynth")
    pd.testing.assert_frame_equal(Synthesizer.load(tmp_path / "model.tabsynth").sample(50, seed=3),
                                  synth.sample(50, seed=3))


def arrow_temporal_frame() -> pd.DataFrame:
    """What ``read_parquet(..., dtype_backend="pyarrow")`` gives for times: Arrow timestamps (naive and
    zoned) and durations."""
    rng = np.random.default_rng(2)
    stamps = pd.Series(pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 10**8, 1500), unit="s"))
    return pd.DataFrame({
        "at": stamps.astype(pd.ArrowDtype(pa.timestamp("us"))),
        "local": stamps.dt.tz_localize("Europe/Berlin", nonexistent="shift_forward", ambiguous=False)
                       .astype(pd.ArrowDtype(pa.timestamp("us", tz="Europe/Berlin"))),
        "span": pd.Series(pd.to_timedelta(rng.integers(0, 3600, 1500), unit="s")).astype(pd.ArrowDtype(pa.duration("us"))),
        "day": stamps.dt.normalize().where(rng.random(1500) > 0.1).astype(pd.ArrowDtype(pa.date32())),
        "second": stamps.astype(pd.ArrowDtype(pa.timestamp("s"))),
    })


@pytest.mark.parametrize("with_public", [False, True])
def test_arrow_timestamps_and_durations_are_learnt_and_sampled_in_their_arrow_dtypes(with_public: bool) -> None:
    frame = arrow_temporal_frame()
    synth = Synthesizer(**FAST).fit(frame, epsilon=1.0, public=frame if with_public else None)
    sample = synth.sample(200, seed=0)
    assert sample.dtypes.to_dict() == frame.dtypes.to_dict()
    assert sample["at"].between(pd.Timestamp("2019-01-01"), pd.Timestamp("2024-01-01")).all()
    assert synth.schema_["day"].resolution == "D" and sample["day"].isna().any()



def test_coarse_pairs_merge_numbers_into_fewer_runs_where_noisy_unless_a_public_table_shapes_them() -> None:
    # 3,000 rows at epsilon 0.5: a pair cell's noise std is about 100 rows, so a coarse pair of two
    # 90-value numbers at 20 runs each would hold far more noise than rows.
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({name: rng.integers(0, 90, 3000) for name in ("a", "b", "c")})
    schema = Schema.infer(frame)
    private = Synthesizer(**FAST).fit(frame, epsilon=0.5, schema=schema).privacy_report()["marginals"]
    public = Synthesizer(**FAST).fit(frame, epsilon=0.5, public=frame).privacy_report()["marginals"]
    assert private["coarse_two_way_marginals"] == 3 and 4 <= private["coarse_two_way_resolution"] < 20
    assert public["coarse_two_way_resolution"] == 20


@pytest.mark.parametrize("with_public", [False, True])
def test_arrow_string_columns_are_sampled_back_as_arrow_strings(with_public: bool, tmp_path: Path) -> None:
    labels = np.random.default_rng(5).choice(["north", "south", "east"], 2000)
    frame = pd.DataFrame({"region": pd.array(labels, dtype=pd.ArrowDtype(pa.string())),
                          "city": pd.array(labels, dtype=pd.ArrowDtype(pa.large_string()))})
    synth = Synthesizer(**FAST).fit(frame, epsilon=1.0, public=frame if with_public else None)
    synth.save(tmp_path / "model.tabsynth")
    sample = Synthesizer.load(tmp_path / "model.tabsynth").sample(100, seed=0)
    assert sample.dtypes.to_dict() == frame.dtypes.to_dict()


@pytest.mark.parametrize("with_public", [False, True])
def test_arrow_dictionary_columns_are_learnt_as_categories_and_sampled_back_as_dictionaries(
        with_public: bool, tmp_path: Path) -> None:
    # As ``read_parquet(..., dtype_backend="pyarrow")`` gives a Parquet file's dictionary-encoded labels.
    labels = np.random.default_rng(6).choice(["north", "south", "east", None], 2000, p=[0.4, 0.3, 0.2, 0.1])
    frame = pd.DataFrame({"region": pd.array(labels, dtype=pd.ArrowDtype(pa.dictionary(pa.int8(), pa.string()))),
                          "grade": pd.array(np.where(labels == None, "a", labels),  # noqa: E711
                                            dtype=pd.ArrowDtype(pa.dictionary(pa.int32(), pa.string(), True)))})
    synth = Synthesizer(**FAST).fit(frame, epsilon=1.0, public=frame if with_public else None)
    synth.save(tmp_path / "model.tabsynth")
    sample = Synthesizer.load(tmp_path / "model.tabsynth").sample(500, seed=0)
    assert sample.dtypes.to_dict() == frame.dtypes.to_dict()
    assert set(sample["region"].dropna()) <= {"north", "south", "east", "<other>"}


@pytest.mark.parametrize("mode", ["discover", "schema", "public"])
def test_an_ordered_arrow_dictionary_keeps_its_order_in_the_schema_and_the_sample(mode: str) -> None:
    codes = pa.array(np.random.default_rng(8).integers(0, 3, 2000), pa.int8())
    grades = pa.DictionaryArray.from_arrays(codes, pa.array(["low", "mid", "high"]), ordered=True)
    frame = pd.DataFrame({"grade": pd.array(grades, dtype=pd.ArrowDtype(grades.type))})
    given = {"discover": {}, "schema": {"schema": Schema.infer(frame)}, "public": {"public": frame}}[mode]
    synth = Synthesizer(**FAST).fit(frame, epsilon=3.0, **given)
    sample = synth.sample(200, seed=0)["grade"]
    assert synth.schema_["grade"].categories == ("low", "mid", "high")
    assert sample.dtype == frame["grade"].dtype
    assert sample.array.__arrow_array__().combine_chunks().dictionary.to_pylist()[:3] == ["low", "mid", "high"]


def test_a_private_dictionary_of_numbers_and_a_public_one_of_text_are_refused_by_name() -> None:
    numbers = pa.array(np.arange(300) % 3).dictionary_encode()
    text = pa.array((np.arange(300) % 3).astype(str)).dictionary_encode()
    private = pd.DataFrame({"code": pd.array(numbers, dtype=pd.ArrowDtype(numbers.type))})
    public = pd.DataFrame({"code": pd.array(text, dtype=pd.ArrowDtype(text.type))})
    with pytest.raises(SchemaError, match=r"column 'code' holds numbers in the private table .* but text in the public"):
        Synthesizer(**FAST).fit(private, epsilon=1.0, public=public)


@pytest.mark.parametrize("with_public", [False, True])
def test_an_arrow_decimal_column_is_learnt_and_sampled_as_decimals_of_its_type(with_public: bool,
                                                                                 tmp_path: Path) -> None:
    # As ``read_parquet(..., dtype_backend="pyarrow")`` gives amounts of money: learnt as numbers,
    # sampled rounded to the type's scale; the dtype's text in the model file reads back as the type.
    amounts = [decimal.Decimal(f"{v:.2f}") for v in np.random.default_rng(4).lognormal(5, 1, 2000)]
    frame = pd.DataFrame({"amount": pd.array(amounts, dtype=pd.ArrowDtype(pa.decimal128(12, 2)))})
    synth = Synthesizer(**FAST).fit(frame, epsilon=1.0, public=frame if with_public else None)
    synth.save(tmp_path / "model.tabsynth")
    sample = Synthesizer.load(tmp_path / "model.tabsynth").sample(200, seed=0)
    assert sample.dtypes.to_dict() == frame.dtypes.to_dict()
    assert all(value.as_tuple().exponent == -2 for value in sample["amount"].dropna())


def test_a_csv_tables_text_durations_fit_a_public_tables_durations(tmp_path: Path) -> None:
    frame = pd.DataFrame({"span": pd.to_timedelta(np.random.default_rng(3).integers(0, 3600, 1000), unit="s")})
    frame.to_csv(tmp_path / "private.csv", index=False)
    sample = Synthesizer(**FAST).fit(tmp_path / "private.csv", epsilon=1.0, public=frame).sample(50, seed=0)
    assert pd.api.types.is_timedelta64_dtype(sample["span"].dtype)


@pytest.mark.parametrize("odd_row", [False, True])
def test_one_row_of_a_private_csv_does_not_decide_whether_it_fits_beside_a_public_table(tmp_path: Path,
                                                                                       odd_row: bool) -> None:
    # Its value-inferred dtypes were checked against the public kinds: digits alone made numbers (refused
    # beside the public text), one "A17" made text (accepted).
    rng = np.random.default_rng(4)
    public = pd.DataFrame({"zip": pd.Series(rng.choice(["02139", "10001"], 800), dtype="str"),
                           "n": rng.integers(0, 9, 800)})
    private = public.copy()
    if odd_row:
        private.loc[0, "zip"] = "A17"
    private.to_csv(tmp_path / "private.csv", index=False)
    sample = Synthesizer(**FAST).fit(tmp_path / "private.csv", epsilon=1.0, public=public).sample(50, seed=0)
    assert set(sample["zip"].dropna()) <= {"02139", "10001", "<other>"}
    assert sample["n"].dtype == public["n"].dtype


@pytest.fixture(scope="module")
def fitted(cps: pd.DataFrame) -> Synthesizer:
    return Synthesizer(**FAST).fit(cps, epsilon=1.0, public=load_demo("cps_1992"))


def test_samples_have_the_training_tables_columns_order_and_dtypes(fitted: Synthesizer, cps: pd.DataFrame) -> None:
    sample = fitted.sample(300)
    assert len(sample) == 300
    assert list(sample.columns) == list(cps.columns)
    assert list(sample.dtypes) == list(cps.dtypes)


def test_sampling_no_rows_gives_an_empty_frame_with_the_columns_and_dtypes(fitted: Synthesizer,
                                                                         cps: pd.DataFrame) -> None:
    empty = fitted.sample(0, seed=0)
    assert len(empty) == 0
    assert list(empty.columns) == list(cps.columns)
    assert list(empty.dtypes) == list(cps.dtypes)


@pytest.mark.parametrize("n", [-1, 2.5, "10"])
def test_a_bad_row_count_is_refused_by_name(fitted: Synthesizer, n: object) -> None:
    with pytest.raises((ValueError, TypeError), match=r"\bn\b"):
        fitted.sample(n)


def test_privacy_report_names_epsilon_delta_accountant_and_mechanism(fitted: Synthesizer) -> None:
    report = fitted.privacy_report()
    json.dumps(report)
    for key in ("epsilon", "delta", "accountant", "noise_multiplier", "sample_rate", "sampling", "steps",
                "clipping", "ledger"):
        assert key in report
    assert report["sampling"] == "poisson" and report["steps"] == 3
    assert 0 < report["epsilon"] <= 1.0 and 0 < report["delta"] <= 1e-5


def test_ledger_splits_the_budget_by_purpose(fitted: Synthesizer) -> None:
    purposes = [e["purpose"] for e in fitted.privacy_report()["ledger"]["entries"]]
    assert purposes == ["row count", "new categories, marginals and training"]  # public data: no domain discovery


def test_training_epsilon_recomputes_from_the_reported_mechanism(fitted: Synthesizer) -> None:
    reported, recomputed = recomputed_training_epsilon(fitted)
    assert reported == pytest.approx(recomputed)


def test_public_data_shrinks_the_marginals_and_fills_the_pairs_left_unmeasured(cps: pd.DataFrame) -> None:
    synth = Synthesizer(**{**FAST, "marginal_pairs": 2}).fit(cps, epsilon=1.0, public=load_demo("cps_1992"))
    marginals = synth.privacy_report()["marginals"]
    assert marginals["two_way_marginals"] == 2  # measured: the pairs most dependent on the public table
    assert marginals["two_way_marginals_from_public_table"] == 2  # 4 columns: 6 pairs, at most as many again
    assert marginals["shrunk_towards_public_table"]
    without = Synthesizer(**FAST).fit(cps, epsilon=1.0).privacy_report()["marginals"]
    assert not without["shrunk_towards_public_table"] and without["two_way_marginals_from_public_table"] == 0


def test_without_public_data_an_ordered_one_way_marginal_the_noise_swamps_is_smoothed() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"count": rng.integers(0, 101, 400), "kind": rng.choice(["a", "b"], 400)})
    schema = Schema((IntegerColumn("count", lower=0, upper=100), CategoricalColumn("kind", categories=("a", "b"))))
    report = Synthesizer(**FAST).fit(frame, epsilon=0.5, schema=schema).privacy_report()
    # Four rows per value against a noise std of about 20: every release's risk estimate asks for smoothing.
    assert report["marginals"]["one_way_marginals_smoothed"] == 1


def test_with_public_data_the_public_prior_takes_the_noise_out_instead_of_smoothing(cps: pd.DataFrame) -> None:
    synth = Synthesizer(**FAST).fit(cps, epsilon=1.0, public=load_demo("cps_1992"))
    assert synth.privacy_report()["marginals"]["one_way_marginals_smoothed"] == 0


def test_every_pair_of_a_wide_table_is_measured_unless_capped() -> None:
    # 18 columns: 153 pairs, more than the cap of 128 there was (ACS without public data, eps = 1:
    # 2-way TVD 0.091 with the 128 smallest pairs measured, 0.055 with all 225 that fit of 231).
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"c{i}": rng.choice(["a", "b", "c"], 400) for i in range(18)}).astype(str)
    schema = Schema(tuple(CategoricalColumn(f"c{i}", categories=("a", "b", "c")) for i in range(18)))
    every = Synthesizer(**FAST).fit(frame, epsilon=1.0, schema=schema).privacy_report()["marginals"]
    assert every["two_way_marginals"] == 18 * 17 // 2
    capped = Synthesizer(**FAST, marginal_pairs=20).fit(frame, epsilon=1.0, schema=schema).privacy_report()["marginals"]
    assert capped["two_way_marginals"] == 20


def coded_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"code": rng.choice([f"k{i}" for i in range(300)], n), "age": rng.integers(0, 74, n),
                         "flag": rng.choice(["y", "n"], n)}).astype({"code": str, "flag": str})


CODED = Schema((CategoricalColumn("code", categories=tuple(f"k{i}" for i in range(300))),
                IntegerColumn("age", lower=0, upper=73), CategoricalColumn("flag", categories=("y", "n"))))


def test_a_category_of_hundreds_of_values_enters_its_largest_pair_merged_by_mass() -> None:
    marginals = Synthesizer(**FAST).fit(coded_frame(3000, 0), epsilon=1.0, schema=CODED).privacy_report()["marginals"]
    assert marginals["two_way_marginals"] == 3  # code x age: 300 x 20 cells even coarse, measured merged
    assert marginals["two_way_marginals_with_merged_categories"] == 1


def test_with_public_data_a_pair_too_large_to_measure_comes_from_the_public_table() -> None:
    synth = Synthesizer(**FAST).fit(coded_frame(3000, 0), epsilon=1.0, schema=CODED, public=coded_frame(3000, 1))
    marginals = synth.privacy_report()["marginals"]
    assert marginals["two_way_marginals"] == 2 and marginals["two_way_marginals_with_merged_categories"] == 0
    assert marginals["two_way_marginals_from_public_table"] == 1  # code x age, at full resolution


@pytest.mark.parametrize("epsilon", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("settings", [dict(steps=2, batch_size=32), dict(steps=6, batch_size=256),
                                      dict(epochs=0.5, batch_size=100, clip_grouping="weight_bias"),
                                      dict(steps=5, clip_grouping="clustered", adaptive_clipping="public"),
                                      dict(steps=5, clip_grouping="clustered", adaptive_clipping="private"),
                                      dict(steps=5, marginal_fraction=0.99)])  # DP-SGD on what 1% of rho leaves
def test_total_epsilon_never_exceeds_the_budget(epsilon: float, settings: dict, cps: pd.DataFrame) -> None:
    synth = Synthesizer(**{**FAST, **settings}).fit(cps, epsilon=epsilon, public=load_demo("cps_1992"))
    report = synth.privacy_report()
    assert 0 < report["epsilon"] <= epsilon
    assert report["epsilon"] > 0.9 * epsilon  # the budget is used, not wasted
    assert report["delta"] <= report["delta_budget"]


def test_fit_without_schema_or_public_data_discovers_the_domain_under_dp(cps: pd.DataFrame) -> None:
    synth = Synthesizer(**FAST).fit(cps, epsilon=1.0)
    entries = synth.privacy_report()["ledger"]["entries"]
    assert [e["purpose"] for e in entries] == ["row count", "domain discovery, marginals and training"]
    assert sum(e["epsilon"] for e in entries) <= 1.0
    sample = synth.sample(200)
    assert set(sample["gender"].dropna()) <= {"male", "female", "<other>"}  # str dtype: nullable


@pytest.mark.parametrize("odd", [datetime.date(2020, 1, 2), ["a", "list"]])
def test_one_row_of_an_odd_type_in_a_null_object_column_does_not_decide_whether_a_discover_fit_runs(
        cps: pd.DataFrame, odd: object) -> None:
    # Refused before (a column of nulls and one date read as a column of dates): the failure told of the row.
    nulls = pd.Series([None] * len(cps), dtype=object)
    for note in (nulls, pd.concat([pd.Series([odd], dtype=object), nulls[1:]], ignore_index=True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DiscoveryWarning)
            sample = Synthesizer(**FAST).fit(cps.assign(note=note), epsilon=1.0).sample(50)
        assert set(sample["note"].dropna()) <= {"<other>"}


def test_discovery_marginals_and_dp_sgd_compose_as_google_pld_computes_them(cps: pd.DataFrame) -> None:
    """Discovery's Gaussian release joins the marginals' Gaussian and DP-SGD in one accountant: the
    joint entry's epsilon is Google's PLD accountant's for the three mechanisms as reported (from
    above, within PRV's error), and its delta the accountant's plus discovery's thresholds'."""
    synth = Synthesizer(**FAST).fit(cps, epsilon=1.0)
    report = synth.privacy_report()
    joint = report["ledger"]["entries"][-1]
    details, discovery = joint["details"], joint["details"]["domain_discovery"]
    mu, marginal_z = discovery["mu"], details["marginal_noise_multiplier"]
    assert mu > 0 and discovery["zcdp_rho"] == pytest.approx(mu**2 / 2)
    assert details["gaussian_noise_multiplier"] == pytest.approx((mu**2 + marginal_z**-2) ** -0.5)
    events = dp_accounting.ComposedDpEvent([
        dp_accounting.GaussianDpEvent(1.0 / mu), dp_accounting.GaussianDpEvent(marginal_z),
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(
            report["sample_rate"], dp_accounting.GaussianDpEvent(report["noise_multiplier"])), report["steps"])])
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    expected = pld.compose(events).get_epsilon(details["accountant_delta"])
    assert expected <= joint["epsilon"] <= expected + 2 * PRV_EPS_ERROR
    assert joint["delta"] == pytest.approx(details["accountant_delta"] + discovery["delta_thresholds"])
    assert report["epsilon"] <= 1.0 and report["delta"] <= report["delta_budget"]


def test_new_categories_join_the_marginals_and_dp_sgd_in_one_accountant(cps: pd.DataFrame) -> None:
    synth = Synthesizer(**FAST).fit(cps, epsilon=1.0, public=load_demo("cps_1992"))
    report = synth.privacy_report()
    joint = report["ledger"]["entries"][-1]
    details, release = joint["details"], joint["details"]["new_categories"]
    rho = zcdp_budget(1.0 - synth.settings.count_fraction, details["accountant_delta"])
    assert release["zcdp_rho"] == pytest.approx(synth.settings.new_category_fraction * rho, rel=1e-6)
    assert details["gaussian_noise_multiplier"] == pytest.approx(
        (release["mu"] ** 2 + details["marginal_noise_multiplier"] ** -2) ** -0.5)
    assert joint["delta"] == pytest.approx(details["accountant_delta"] + release["delta_thresholds"])
    assert report["epsilon"] <= 1.0 and report["delta"] <= report["delta_budget"]


@pytest.mark.parametrize("marginal_fraction", [0.0, 0.99])
def test_discovery_composes_within_the_budget_with_or_without_marginals(marginal_fraction: float,
                                                                         cps: pd.DataFrame) -> None:
    report = Synthesizer(**FAST, marginal_fraction=marginal_fraction).fit(cps, epsilon=0.5).privacy_report()
    assert 0.9 * 0.5 < report["epsilon"] <= 0.5 and report["delta"] <= report["delta_budget"]
    assert (report["marginals"] is None) == (marginal_fraction == 0)


@pytest.mark.parametrize("public", [False, True])
def test_a_delta_whose_split_rounds_up_still_fits_within_it(public: bool, cps: pd.DataFrame) -> None:
    # 3.3e-6 - 0.1 * 3.3e-6 + 0.1 * 3.3e-6 is one floating-point step above 3.3e-6.
    report = Synthesizer(**FAST).fit(cps, epsilon=1.0, delta=3.3e-6,
                                     public=load_demo("cps_1992") if public else None).privacy_report()
    assert report["delta"] <= 3.3e-6 and report["epsilon"] <= 1.0


def test_a_release_with_nothing_to_threshold_gives_its_delta_to_the_accountant() -> None:
    # Booleans alone: discovery spends nothing, the entry names no discovery and the accountant gets all of delta.
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"smoker": rng.random(2000) < 0.3, "insured": rng.random(2000) < 0.8})
    report = Synthesizer(**FAST).fit(frame, epsilon=1.0, delta=1e-5).privacy_report()
    joint = report["ledger"]["entries"][-1]
    assert joint["purpose"] == "marginals and training" and "domain_discovery" not in joint["details"]
    assert joint["details"]["accountant_delta"] == joint["delta"] == pytest.approx(1e-5, rel=1e-12)


def test_a_public_table_without_categorical_columns_spends_nothing_on_new_categories() -> None:
    rng = np.random.default_rng(0)
    public, private = (pd.DataFrame({"x": rng.normal(size=2000), "y": rng.normal(size=2000)}) for _ in range(2))
    report = Synthesizer(**FAST).fit(private, epsilon=1.0, delta=1e-5, public=public).privacy_report()
    joint = report["ledger"]["entries"][-1]
    assert joint["purpose"] == "marginals and training" and "new_categories" not in joint["details"]
    assert joint["details"]["accountant_delta"] == joint["delta"]


def test_discovery_takes_its_share_of_the_joint_zcdp_budget(cps: pd.DataFrame) -> None:
    """``discovery_fraction`` of rho to discovery, ``marginal_fraction`` of the rest to the marginals."""
    synth = Synthesizer(**FAST, discovery_fraction=0.2).fit(cps, epsilon=1.0)
    details = synth.privacy_report()["ledger"]["entries"][-1]["details"]
    discovery_rho, marginal_rho = details["domain_discovery"]["zcdp_rho"], details["zcdp_rho"]
    rho = zcdp_budget(1.0 - synth.settings.count_fraction, details["accountant_delta"])  # what the row count left
    assert discovery_rho == pytest.approx(0.2 * rho, rel=1e-6)
    assert marginal_rho == pytest.approx(synth.settings.marginal_fraction * 0.8 * rho, rel=1e-6)


def test_a_rare_category_and_an_extreme_value_never_reach_the_model_or_samples(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "city": rng.choice(["north", "south", "east"], size=3000).astype(object),
        "income": rng.normal(50_000, 8_000, size=3000).round(),
    })
    frame.loc[17, "city"] = "Tinytown-unique"
    frame.loc[42, "income"] = 987_654_321.0
    frame["city"] = frame["city"].astype("str")
    synth = Synthesizer(**FAST).fit(frame, epsilon=1.0)
    path = tmp_path / "model.safetensors"
    synth.save(path)
    blob = path.read_bytes()
    assert b"Tinytown-unique" not in blob and b"987654321" not in blob
    sample = synth.sample(5000, seed=1)
    assert "Tinytown-unique" not in set(sample["city"])
    assert sample["income"].max() < 200_000
    report = synth.privacy_report()
    assert "Tinytown" not in json.dumps(report)
    # The exact row count appears nowhere; the DP estimate of it may (rarely) round to it by chance.
    released_count = report.pop("dp_row_count")
    assert all(value != 3000 for value in numbers_in(report) if value != released_count)


def numbers_in(value: object) -> list[float]:
    """Every number in a JSON-like value, at any depth."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers_in(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers_in(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def test_only_the_dp_row_count_is_in_the_report(cps: pd.DataFrame, fitted: Synthesizer) -> None:
    report = fitted.privacy_report()
    row_count = next(e for e in report["ledger"]["entries"] if e["purpose"] == "row count")
    assert row_count["mechanism"] == "discrete laplace" and row_count["details"]["value"] == report["dp_row_count"]
    # The DP estimate equals the exact count only by chance (about 1 run in 200); nothing else shows it,
    # as a number or as a whole number inside a text (digits inside other numbers are no leak).
    exact, released = len(cps), report["dp_row_count"]
    assert all(value != exact for value in numbers_in(report) if value != released)
    assert released == exact or not re.search(rf"(?<![\d.]){exact}(?![\d.])", json.dumps(report))


def test_sample_defaults_to_the_dp_row_count(fitted: Synthesizer) -> None:
    assert len(fitted.sample(seed=1)) == fitted.privacy_report()["dp_row_count"]


def test_sample_batches_concatenate_to_sample(fitted: Synthesizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tabsynth.synthesizer.SAMPLE_CHUNK", 128)
    batches = list(fitted.sample_batches(300, seed=2))
    assert [len(b) for b in batches] == [128, 128, 44]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), fitted.sample(300, seed=2))


def test_fit_streams_a_parquet_table_and_keeps_its_arrow_types(tmp_path: Path) -> None:
    private, public = load_demo("cps_2004"), load_demo("cps_1992")
    private["gender"], public["gender"] = private["gender"].astype("category"), public["gender"].astype("category")
    private.iloc[:4000].to_parquet(tmp_path / "part-0.parquet")
    private.iloc[4000:].to_parquet(tmp_path / "part-1.parquet")
    synth = Synthesizer(**FAST).fit(tmp_path, epsilon=1.0, public=public)
    sample = synth.sample(200, seed=0)
    assert list(sample.dtypes) == list(private.dtypes)
    assert synth.arrow_schema_.field("gender").type == pa.dictionary(pa.int8(), pa.string())
    synth.save(tmp_path / "model.tabsynth")
    assert Synthesizer.load(tmp_path / "model.tabsynth").arrow_schema_.equals(synth.arrow_schema_)


def test_save_and_load_reproduce_samples_for_a_fixed_seed(fitted: Synthesizer, tmp_path: Path) -> None:
    path = tmp_path / "cps.tabsynth"
    fitted.save(path)
    loaded = Synthesizer.load(path)
    pd.testing.assert_frame_equal(loaded.sample(500, seed=7), fitted.sample(500, seed=7))
    assert loaded.privacy_report() == fitted.privacy_report()
    assert [p.name for p in tmp_path.iterdir()] == ["cps.tabsynth"]  # no temporary file left behind


def test_a_saved_model_file_gets_the_umasks_mode_like_any_new_file(fitted: Synthesizer, tmp_path: Path) -> None:
    mask = os.umask(0o027)
    try:
        fitted.save(tmp_path / "model.tabsynth")
    finally:
        os.umask(mask)
    assert (tmp_path / "model.tabsynth").stat().st_mode & 0o777 == 0o640  # mkstemp's alone: 0o600


def test_saving_onto_a_directory_is_refused_by_name_and_writes_nothing(fitted: Synthesizer, tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError, match="cannot save the model to .* it is a directory"):
        fitted.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_fit_that_diverges_raises_and_leaves_the_synthesizer_unfitted() -> None:
    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=2000),
                          "c": np.random.default_rng(1).choice(list("abc"), 2000)})
    synth = Synthesizer(seed=0, epochs=1, marginal_steps=20, generator_lr=1e30, marginal_lr=1e30)
    with pytest.raises(TrainingDivergedError, match="training diverged.*not finite"):
        synth.fit(frame, epsilon=1.0)
    with pytest.raises(RuntimeError, match="fit"):
        synth.sample(5)


def test_a_generator_that_draws_non_finite_values_is_refused_as_diverged(fitted: Synthesizer) -> None:
    # What fit checks before it keeps a generator: the decoder would read the NaNs as zeros.
    broken = fitted._generator(fitted.encoder_, [tuple(edge) for edge in fitted.generator_.heads.edges])
    broken.load_state_dict(fitted.generator_.state_dict())
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="generator's weights .* not finite.*generator_lr"):
        _checked(broken.eval(), fitted.encoder_, torch.float32)
    assert _checked(fitted.generator_, fitted.encoder_, torch.float32) is fitted.generator_


def test_the_same_seed_gives_the_same_samples_and_different_seeds_differ(fitted: Synthesizer) -> None:
    pd.testing.assert_frame_equal(fitted.sample(200, seed=3), fitted.sample(200, seed=3))
    assert not fitted.sample(200, seed=3).equals(fitted.sample(200, seed=4))


def test_a_corrupt_model_file_gives_a_clear_error(fitted: Synthesizer, tmp_path: Path) -> None:
    path = tmp_path / "model.tabsynth"
    fitted.save(path)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ModelFileError, match="not a readable tabsynth model file"):
        Synthesizer.load(path)


def test_a_model_file_whose_weights_were_damaged_to_nan_is_refused_as_corrupt(fitted: Synthesizer,
                                                                              tmp_path: Path) -> None:
    # Loaded as it was, it sampled rows all alike without a word.
    from safetensors.torch import save_file
    path = tmp_path / "model.tabsynth"
    fitted.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    name = next(key for key in tensors if key.startswith("generator.") and tensors[key].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(ModelFileError, match=f"is corrupt: tensors \\['{re.escape(name)}'\\] hold NaN"):
        Synthesizer.load(path)


def test_a_model_file_whose_metadata_lacks_a_key_names_it(fitted: Synthesizer, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    path = tmp_path / "model.tabsynth"
    fitted.save(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    model = json.loads(metadata["tabsynth"])
    del model["schema"]
    save_file(tensors, str(path), metadata={**metadata, "tabsynth": json.dumps(model)})
    with pytest.raises(ModelFileError, match="inconsistent: its metadata or tensors lack 'schema'"):
        Synthesizer.load(path)


def test_a_file_that_is_not_a_model_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="junk.bin"):
        Synthesizer.load(path)
    with pytest.raises(ModelFileError, match="no model file"):
        Synthesizer.load(tmp_path / "absent")


def test_settings_are_keyword_only_and_validated() -> None:
    with pytest.raises(TypeError, match="unknown Synthesizer settings: \\['epoch'\\]"):
        Synthesizer(epoch=3)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        Synthesizer(batch_size=0)
    with pytest.raises(ValueError, match="objective must be"):
        Synthesizer(objective="vae")


def test_settings_take_numpy_scalars_as_plain_numbers() -> None:
    settings = Synthesizer(batch_size=np.int64(64), epochs=np.float32(2.0), seed=np.uint8(3)).settings
    assert (settings.batch_size, settings.epochs, settings.seed) == (64, 2.0, 3)
    assert [type(v) for v in (settings.batch_size, settings.epochs, settings.seed)] == [int, float, int]


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("seed", -1, "seed must be an integer >= 0"), ("seed", 1.5, "seed must be an integer >= 0"),
    ("epochs", "1", "epochs must be a positive number"), ("oversample", True, "oversample must be a number >= 1"),
    ("verbose", "no", "verbose must be True or False"), ("generator_hidden", (16, 0), "generator_hidden must be"),
    ("generator_hidden", 5, "generator_hidden must be"), ("discriminator_hidden", None, "discriminator_hidden must be"),
])
def test_a_bad_setting_is_named(setting: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Synthesizer(**{setting: value})


def test_network_widths_may_be_any_sequence() -> None:
    assert Synthesizer(generator_hidden=[64], discriminator_hidden=np.array([8, 8])).settings.discriminator_hidden == (8, 8)


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_max_steps_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        Synthesizer(max_steps=value)


def test_epochs_give_at_most_max_steps_for_a_large_table(cps: pd.DataFrame) -> None:
    settings = {**FAST, "steps": None, "epochs": 10.0, "batch_size": 16, "max_steps": 4}  # 10 epochs: ~940 steps
    report = Synthesizer(**settings).fit(cps, epsilon=1.0, public=load_demo("cps_1992")).privacy_report()
    assert report["steps"] == 4
    assert report["warm_start"]["steps"] == 4  # 0.02 epochs of 7,602 public rows would be 10 steps


def test_an_explicit_step_count_is_not_capped(cps: pd.DataFrame) -> None:
    report = Synthesizer(**{**FAST, "steps": 6, "max_steps": 4}).fit(cps, epsilon=1.0).privacy_report()
    assert report["steps"] == 6


@pytest.mark.parametrize("value", [1, -1, 2.0])
def test_latent_classes_must_be_none_or_at_least_two(value: object) -> None:
    with pytest.raises(ValueError, match="latent_classes must be 0"):
        Synthesizer(latent_classes=value)


def test_fit_takes_a_numpy_epsilon(cps: pd.DataFrame) -> None:
    report = Synthesizer(**FAST).fit(cps, epsilon=np.float32(1.0), delta=np.float64(1e-6)).privacy_report()
    assert report["epsilon"] <= 1.0 and report["delta"] == 1e-6


@pytest.mark.parametrize("epsilon", [0, -1, float("nan"), float("inf"), True, "1"])
def test_fit_refuses_a_bad_epsilon(epsilon: float, cps: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
        Synthesizer(**FAST).fit(cps, epsilon=epsilon)


def test_fit_refuses_a_delta_that_is_not_below_one_over_n(cps: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="delta=0.001 is not below 1/n"):
        Synthesizer(**FAST).fit(cps, epsilon=1.0, delta=1e-3)


def test_fit_refuses_a_public_table_with_different_columns(cps: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"public table lacks columns \['earnings'\]"):
        Synthesizer(**FAST).fit(cps, epsilon=1.0, public=load_demo("cps_1992").drop(columns="earnings"))


def test_fit_refuses_a_public_column_holding_another_kind_of_value(cps: pd.DataFrame) -> None:
    # Read as text, the public ages would make a schema of categories that no private number matches.
    public = load_demo("cps_1992").astype({"age": "str"})
    with pytest.raises(SchemaError, match=r"column 'age' holds numbers in the private table \(int64\) but text"):
        Synthesizer(**FAST).fit(cps, epsilon=1.0, public=public)


@pytest.mark.parametrize(("private", "public"), [
    (pd.Series([0, 1, 1]), pd.Series([True, False, True])),  # 0/1 against booleans
    (pd.Series(["2020-03-01", "2020-03-02", "2020-03-05"]), pd.Series(pd.to_datetime(["2019-01-01"] * 3))),  # CSV dates
    (pd.Series([1.5, 2.0, 3.0]), pd.Series([1, 2, 3])),  # floats against integers
    (pd.Series(["a", "b", "c"]), pd.Series(["a", "b", "d"], dtype=object)),  # text against text in an object column
])
def test_compatible_kinds_of_value_pass_the_public_table_check(private: pd.Series, public: pd.Series) -> None:
    _check_same_kinds(pd.DataFrame({"x": private}).iloc[:0], pd.DataFrame({"x": public}))


def test_a_public_object_column_of_text_is_judged_by_its_values() -> None:
    with pytest.raises(SchemaError, match="column 'x' holds numbers in the private table"):
        _check_same_kinds(pd.DataFrame({"x": [1, 2]}).iloc[:0], pd.DataFrame({"x": pd.Series(["1", "2"], dtype=object)}))


def test_a_declared_schema_makes_the_public_tables_dtypes_irrelevant(cps: pd.DataFrame) -> None:
    public = load_demo("cps_1992").astype({"age": "str"})
    Synthesizer(**FAST).fit(cps, epsilon=1.0, schema=Schema.infer(load_demo("cps_1992")), public=public)


def test_sample_before_fit_says_so() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Synthesizer().sample(3)


def test_fit_with_a_declared_schema_keeps_its_domain(cps: pd.DataFrame) -> None:
    schema = Schema.infer(load_demo("cps_1992"))
    sample = Synthesizer(**FAST).fit(cps, epsilon=1.0, schema=schema).sample(500)
    assert sample["age"].between(25, 34).all()
    assert set(sample["degree"]) <= {"bachelor", "highschool"}


def test_the_seed_fixes_model_randomness_but_never_the_privacy_noise(cps: pd.DataFrame, tmp_path: Path) -> None:
    public = load_demo("cps_1992")
    first = Synthesizer(**FAST).fit(cps, epsilon=1.0, public=public)
    second = Synthesizer(**FAST).fit(cps, epsilon=1.0, public=public)
    weights = [dict(s.generator_.named_parameters())["body.0.weight"] for s in (first, second)]
    assert not torch.equal(*weights)  # same seed, different DP noise
    first.save(tmp_path / "m.tabsynth")
    with safe_open(str(tmp_path / "m.tabsynth"), framework="pt") as handle:
        assert "seed" not in json.loads(handle.metadata()["tabsynth"])["settings"]


def test_schema_violations_in_the_private_table_name_the_column_but_no_values(cps: pd.DataFrame) -> None:
    schema = Schema.infer(load_demo("cps_1992"))
    broken = cps.copy()
    broken.loc[5, "degree"] = "Secret-degree-XYZ"
    with pytest.raises(SchemaError, match="column 'degree' of the private table") as error:
        Synthesizer(**FAST, on_invalid="raise").fit(broken, epsilon=1.0, schema=schema)
    assert "Secret" not in str(error.value)


def test_a_failed_refit_leaves_the_fitted_synthesizer_unchanged(fitted: Synthesizer, cps: pd.DataFrame) -> None:
    before = fitted.privacy_report()
    with pytest.raises(ValueError):
        fitted.fit(cps.drop(columns="age"), epsilon=1.0, public=load_demo("cps_1992"))
    assert fitted.privacy_report() == before


def test_public_data_warm_starts_training_without_spending_budget(cps: pd.DataFrame) -> None:
    synth = Synthesizer(**{**FAST, "warm_start_epochs": 0.1}).fit(cps, epsilon=1.0, public=load_demo("cps_1992"))
    report = synth.privacy_report()
    assert report["warm_start"] == {"public_rows": 7602, "steps": math.ceil(0.1 * 7602 / 64)}
    assert [e["purpose"] for e in report["ledger"]["entries"]] == ["row count",
                                                                   "new categories, marginals and training"]


def test_without_public_data_there_is_no_warm_start(cps: pd.DataFrame) -> None:
    schema = Schema.infer(load_demo("cps_1992"))
    assert Synthesizer(**FAST).fit(cps, epsilon=1.0, schema=schema).privacy_report()["warm_start"] is None


def test_a_private_category_missing_from_the_public_table_is_discovered_or_left_out() -> None:
    public = load_demo("cps_1992")
    private = load_demo("cps_2004").head(3000).copy()
    private.loc[:1499, "degree"] = "doctorate"        # new this year and common: DP discovery releases it
    private.loc[1500, "gender"] = "Zanzibar-unique"    # new and held by one record: never released
    synth = Synthesizer(**{**FAST, "new_category_fraction": 0.3}).fit(private, epsilon=10.0, public=public)
    assert "doctorate" in synth.schema_["degree"].categories
    assert "Zanzibar-unique" not in synth.schema_["gender"].categories
    assert set(synth.sample(500, seed=0)["gender"]) <= {"female", "male"}


def test_at_default_settings_a_new_category_held_by_a_tenth_of_the_rows_is_found() -> None:
    # Composed with the marginals, 2% of rho puts CPS's threshold near 190 rows at epsilon 1 (an entry
    # of its own at 2% of epsilon needed about 1,400).
    public = load_demo("cps_1992")
    private = load_demo("cps_2004").copy()
    private.loc[: len(private) // 10, "degree"] = "doctorate"
    synth = Synthesizer(**FAST).fit(private, epsilon=1.0, public=public)
    assert "doctorate" in synth.schema_["degree"].categories
    threshold = synth.privacy_report()["ledger"]["entries"][-1]["details"]["new_categories"]["categories"]["threshold"]
    assert threshold < 300


def test_a_verbose_fit_shows_the_budget_spent_and_the_generators_loss(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=400), "c": pd.Series(rng.choice(["a", "b"], 400), dtype="str")})
    schema = Schema((ContinuousColumn("x", lower=-4.0, upper=4.0), CategoricalColumn("c", categories=("a", "b"))))
    Synthesizer(**{**FAST, "verbose": True}).fit(frame, epsilon=1.0, schema=schema)
    progress = capsys.readouterr().err
    assert "DP-GAN training" in progress
    assert re.search(r"epsilon=\d\.\d{3}, g_loss=-?\d+\.\d{3}", progress), progress[-300:]
