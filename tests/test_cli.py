"""The ``tabsynth`` command line, run in-process through ``main([...])`` with tiny training settings."""

from __future__ import annotations

import decimal
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tabsynth import Condition, Rule, Schema, Synthesizer
from tabsynth.cli import EXIT_BUDGET, EXIT_DATA, EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, EXIT_USAGE, main
from tabsynth.io import plain_schema
from tabsynth.datasets import load_demo

FAST = ["--steps", "2", "--marginal-steps", "5", "--threads", "1", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def cps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped CPS years written as Parquet inputs, plus a model fitted on them by the CLI."""
    root = tmp_path_factory.mktemp("cps")
    paths = {"public": root / "public.parquet", "private": root / "private.parquet", "model": root / "model.tabsynth"}
    load_demo("cps_1992").to_parquet(paths["public"], index=False)
    load_demo("cps_2004").to_parquet(paths["private"], index=False)
    code = main(["fit", str(paths["private"]), "--public", str(paths["public"]), "--epsilon", "1",
                 "-o", str(paths["model"]), *FAST])
    assert code == EXIT_OK
    return paths


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a failed command."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tabsynth: error: ")
    return err[0]


def test_schema_infer_writes_loadable_schema(cps: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schema.json"
    assert main(["schema", "infer", str(cps["public"]), "-o", str(out)]) == EXIT_OK
    schema = Schema.from_json(out.read_text())
    assert schema.names == ("age", "gender", "degree", "earnings")
    assert {c.name: c.kind for c in schema.columns} == {"age": "integer", "gender": "categorical",
                                                        "degree": "categorical", "earnings": "continuous"}
    assert "earnings" in capsys.readouterr().out

    # A directory of Parquet files and a CSV give the same schema.
    parts = tmp_path / "parts"
    parts.mkdir()
    public = pd.read_parquet(cps["public"])
    public.iloc[:3000].to_parquet(parts / "a.parquet", index=False)
    public.iloc[3000:].to_parquet(parts / "b.parquet", index=False)
    public.to_csv(tmp_path / "public.csv", index=False)
    for source, name in ((parts, "dir.json"), (tmp_path / "public.csv", "csv.json")):
        assert main(["schema", "infer", str(source), "-o", str(tmp_path / name)]) == EXIT_OK
        assert Schema.from_json((tmp_path / name).read_text()).columns == schema.columns


def test_schema_infer_max_categories(cps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert main(["schema", "infer", str(cps["public"]), "-o", str(out), "--max-categories", "1"]) == EXIT_OK
    assert Schema.from_json(out.read_text())["gender"].catch_all == "<other>"


def test_schema_infer_categorical_keeps_integer_codes_as_categories(cps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert main(["schema", "infer", str(cps["public"]), "-o", str(out), "--categorical", "age"]) == EXIT_OK
    age = Schema.from_json(out.read_text())["age"]
    assert type(age).__name__ == "CategoricalColumn"
    assert set(age.categories) == set(load_demo("cps_1992")["age"])


def test_schema_infer_categorical_refuses_an_unknown_column(cps: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schema.json"
    assert main(["schema", "infer", str(cps["public"]), "-o", str(out), "--categorical", "INDP"]) == EXIT_USAGE
    assert "'INDP'" in _error_line(capsys) and not out.exists()


def test_schema_infer_attaches_edit_rules_from_a_json_file(cps: dict[str, Path], tmp_path: Path) -> None:
    rules, out = tmp_path / "rules.json", tmp_path / "schema.json"
    rules.write_text(json.dumps([{"when": {"column": "degree", "op": "==", "value": "bachelor"},
                                  "then": {"column": "age", "op": ">=", "value": 20}}]))
    assert main(["schema", "infer", str(cps["public"]), "-o", str(out), "--rules", str(rules)]) == EXIT_OK
    rule, = Schema.from_json(out.read_text()).rules
    assert str(rule) == "if degree == 'bachelor' then age >= 20"


def test_schema_infer_refuses_a_malformed_rules_file(cps: dict[str, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rules, out = tmp_path / "rules.json", tmp_path / "schema.json"
    rules.write_text(json.dumps([{"when": {"column": "nonexistent", "op": "is null"},
                                  "then": {"column": "age", "op": ">=", "value": 20}}]))
    assert main(["schema", "infer", str(cps["public"]), "-o", str(out), "--rules", str(rules)]) == EXIT_DATA
    assert "'nonexistent'" in _error_line(capsys) and not out.exists()


def test_fit_takes_a_declared_schema_and_a_public_table_together(cps: dict[str, Path], tmp_path: Path) -> None:
    schema_path, model = tmp_path / "schema.json", tmp_path / "model.tabsynth"
    assert main(["schema", "infer", str(cps["public"]), "-o", str(schema_path), "--categorical", "age"]) == EXIT_OK
    assert main(["fit", str(cps["private"]), "--schema", str(schema_path), "--public", str(cps["public"]),
                 "--epsilon", "1", "-o", str(model), *FAST]) == EXIT_OK
    synth = Synthesizer.load(model)
    assert type(synth.schema_["age"]).__name__ == "CategoricalColumn"
    assert synth.privacy_report()["warm_start"] is not None


def test_fit_sample_report_round_trip(cps: dict[str, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    schema_path, model = tmp_path / "schema.json", tmp_path / "model.tabsynth"
    assert main(["schema", "infer", str(cps["public"]), "-o", str(schema_path)]) == EXIT_OK
    capsys.readouterr()
    assert main(["fit", str(cps["private"]), "--schema", str(schema_path), "--epsilon", "2",
                 "--delta", "1e-6", "--batch-size", "256", "-o", str(model), *FAST]) == EXIT_OK
    out = capsys.readouterr().out
    assert "differential privacy" in out and "accountant" in out and "2 discriminator steps" in out
    assert "DP marginals:    4 one-way" in out and "6 two-way" in out
    assert Synthesizer.load(model).privacy_report()["steps"] == 2

    synthetic = tmp_path / "synthetic.parquet"
    assert main(["sample", str(model), "-n", "123", "-o", str(synthetic), "--seed", "4"]) == EXIT_OK
    frame = pd.read_parquet(synthetic)
    assert frame.shape == (123, 4) and list(frame.columns) == ["age", "gender", "degree", "earnings"]
    assert set(frame["gender"]) <= {"female", "male"}
    again = tmp_path / "again.csv"
    assert main(["sample", str(model), "-n", "123", "-o", str(again), "--seed", "4"]) == EXIT_OK
    pd.testing.assert_frame_equal(pd.read_csv(again), frame, check_dtype=False, check_exact=False)

    capsys.readouterr()
    assert main(["report", str(model)]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["epsilon"] <= 2.0 and report["delta"] <= 1e-6 and report["steps"] == 2
    assert report["epsilon_budget"] == 2.0
    assert [e["purpose"] for e in report["ledger"]["entries"]] == ["row count", "marginals and training"]


def test_sample_refuses_to_overwrite(cps: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synthetic.parquet"
    out.write_bytes(b"keep me")
    assert main(["sample", str(cps["model"]), "-n", "10", "-o", str(out)]) == EXIT_USAGE
    line = _error_line(capsys)
    assert str(out) in line and "already exists" in line and "--overwrite" in line
    assert out.read_bytes() == b"keep me"
    assert main(["sample", str(cps["model"]), "-n", "10", "-o", str(out), "--overwrite"]) == EXIT_OK
    assert len(pd.read_parquet(out)) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.parquet"]  # no temp files left


def test_output_equal_to_input_is_refused(cps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = cps["model"].read_bytes()
    assert main(["sample", str(cps["model"]), "-n", "5", "-o", str(cps["model"]), "--overwrite"]) == EXIT_USAGE
    assert "also an input" in _error_line(capsys)
    assert cps["model"].read_bytes() == before


def test_missing_input_exits_3_naming_the_path(cps: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "private.parquet"
    model = tmp_path / "model.tabsynth"
    assert main(["fit", str(missing), "--epsilon", "1", "-o", str(model), *FAST]) == EXIT_DATA
    assert str(missing) in _error_line(capsys)
    assert not model.exists()
    assert main(["sample", str(tmp_path / "no.tabsynth"), "-n", "5", "-o", str(tmp_path / "s.parquet")]) == EXIT_DATA
    assert "no.tabsynth" in _error_line(capsys)
    assert main(["evaluate", str(cps["private"]), str(tmp_path / "syn.parquet")]) == EXIT_DATA
    assert "syn.parquet" in _error_line(capsys)


def test_bad_data_exits_3_and_leaves_no_output(cps: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    private = tmp_path / "private.parquet"
    pd.read_parquet(cps["private"]).rename(columns={"age": "years"}).to_parquet(private)
    model = tmp_path / "model.tabsynth"
    assert main(["fit", str(private), "--public", str(cps["public"]), "--epsilon", "1",
                 "-o", str(model), *FAST]) == EXIT_DATA
    assert "years" in _error_line(capsys)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    assert main(["schema", "infer", str(garbage), "-o", str(tmp_path / "s.json")]) == EXIT_DATA
    assert "garbage.parquet" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.parquet", "private.parquet"]


def test_rules_the_model_cannot_meet_exit_3_as_a_data_problem_and_leave_no_output(
        cps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthesizer = Synthesizer.load(cps["model"])
    synthesizer.schema_ = synthesizer.schema_.with_rules([Rule(Condition("age", ">=", 0), Condition("age", "<", 0))])
    model, out = tmp_path / "impossible.tabsynth", tmp_path / "synthetic.parquet"
    synthesizer.save(model)
    assert main(["sample", str(model), "-n", "50", "-o", str(out), "--quiet"]) == EXIT_DATA
    assert "rule broken most is 'if age >= 0 then age < 0'" in _error_line(capsys)
    assert not out.exists()


def test_corrupt_model_exits_5(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.tabsynth"
    model.write_bytes(b"\x00garbage, not a safetensors file")
    assert main(["report", str(model)]) == EXIT_MODEL
    assert str(model) in _error_line(capsys)
    assert main(["sample", str(model), "-n", "5", "-o", str(tmp_path / "s.parquet")]) == EXIT_MODEL
    _error_line(capsys)
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("budget", [["--epsilon", "0"], ["--epsilon", "-1"], ["--epsilon", "inf"],
                                    ["--epsilon", "1", "--delta", "0"], ["--epsilon", "1", "--delta", "0.5"]])
def test_bad_budget_exits_4(cps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            budget: list[str]) -> None:
    model = tmp_path / "model.tabsynth"
    assert main(["fit", str(cps["private"]), "--public", str(cps["public"]), *budget,
                 "-o", str(model), *FAST]) == EXIT_BUDGET
    line = _error_line(capsys)
    assert "epsilon" in line or "delta" in line
    assert not model.exists()


def test_demo_rejects_epsilon_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epsilon", "0", "--quiet"]) == EXIT_BUDGET
    assert "--epsilon" in _error_line(capsys)


@pytest.mark.parametrize("value", ["-1e-5", "-0.5", "-2"])
def test_a_negative_number_after_an_option_gets_the_options_own_check(value: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # argparse took "-1e-5" for an option and said only "expected one argument".
    assert main(["convert", str(tmp_path / "in.parquet"), str(tmp_path / "out.parquet"), "--epsilon", "1",
                 "--delta", value]) != EXIT_OK
    assert "--delta must lie strictly between 0 and 1" in _error_line(capsys)


def test_evaluate_prints_json(cps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic = tmp_path / "synthetic.parquet"
    assert main(["sample", str(cps["model"]), "-n", "300", "-o", str(synthetic), "--seed", "1"]) == EXIT_OK
    capsys.readouterr()
    assert main(["evaluate", str(cps["private"]), str(synthetic)]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    for key in ("tvd_1way_mean", "tvd_1way_max", "tvd_2way_mean", "tvd_2way_max"):
        assert 0.0 <= result["fidelity"][key] <= 1.0
    assert "tstr" not in result and "sampling_floor" not in result

    assert main(["evaluate", str(cps["private"]), str(synthetic), "--target", "degree",
                 "--test", str(cps["public"])]) == EXIT_OK
    result = json.loads(capsys.readouterr().out)
    assert result["tstr"]["target"] == "degree" and result["tstr"]["n_test"] == 7602
    assert 0.0 <= result["tstr"]["hgb"]["accuracy"] <= 1.0


def test_evaluate_reads_csv_tables_types_from_their_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An evaluation is no release: a real CSV read as text (as a private fit reads it) had no numbers.
    frame = pd.DataFrame({"x": np.random.default_rng(0).normal(size=200), "c": ["a", "b"] * 100})
    frame.to_csv(tmp_path / "real.csv", index=False)
    frame.to_csv(tmp_path / "synthetic.csv", index=False)
    assert main(["evaluate", str(tmp_path / "real.csv"), str(tmp_path / "synthetic.csv")]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["fidelity"]["numeric_columns"] == ["x"]


def test_evaluate_floor_reports_the_tvds_of_as_many_rows_drawn_from_the_real_table(
        cps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic = tmp_path / "synthetic.parquet"
    assert main(["sample", str(cps["model"]), "-n", "300", "-o", str(synthetic), "--seed", "1"]) == EXIT_OK
    capsys.readouterr()
    assert main(["evaluate", str(cps["private"]), str(synthetic), "--floor"]) == EXIT_OK
    floor = json.loads(capsys.readouterr().out)["sampling_floor"]
    assert floor["n"] == 300 and floor["draws"] == 3
    assert 0.0 < floor["tvd_1way_mean"] < floor["tvd_2way_mean"] < 1.0


def test_usage_errors_exit_2(cps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_USAGE
    assert main(["fit", str(cps["private"]), "-o", str(tmp_path / "m")]) == EXIT_USAGE  # no --epsilon
    assert main(["sample", str(cps["model"]), "-n", "0", "-o", str(tmp_path / "s.parquet")]) == EXIT_USAGE
    assert main(["sample", str(cps["model"]), "-n", "5", "-o", str(tmp_path / "s.txt")]) == EXIT_USAGE
    assert main(["evaluate", "a.parquet", "b.parquet", "--test", "c.parquet"]) == EXIT_USAGE
    assert main(["--help"]) == EXIT_OK
    assert "exit codes" in capsys.readouterr().out


def test_demo_writes_its_three_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "2", "--marginal-steps", "5", "--rows", "50", "--seed", "0", "--quiet", "--out", str(out)]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "cps_1992" in printed and "1-way" in printed and "2-way" in printed and "epsilon" in printed
    assert sorted(p.name for p in out.iterdir()) == ["model.tabsynth", "privacy_report.json", "synthetic.parquet"]
    assert len(pd.read_parquet(out / "synthetic.parquet")) == 50
    report = json.loads((out / "privacy_report.json").read_text())
    assert report["steps"] == 2 and report["epsilon"] <= 1.0
    assert Synthesizer.load(out / "model.tabsynth").privacy_report() == report
    # A second run refuses to replace them.
    assert main(["demo", "--steps", "2", "--marginal-steps", "5", "--quiet", "--out", str(out)]) == EXIT_USAGE
    assert "--overwrite" in _error_line(capsys)


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "tabsynth", "report", "/nonexistent/model.tabsynth"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == EXIT_DATA
    last = result.stderr.strip().splitlines()[-1]
    assert last == "tabsynth: error: model file not found: /nonexistent/model.tabsynth"


def test_convert_writes_a_synthetic_parquet_with_the_inputs_arrow_types(cps: dict[str, Path], tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out, model, report = tmp_path / "synthetic.parquet", tmp_path / "model.tabsynth", tmp_path / "report.json"
    code = main(["convert", str(cps["private"]), str(out), "--public", str(cps["public"]), "--epsilon", "1",
                 "--rows", "3000", "--model", str(model), "--report", str(report), *FAST])
    assert code == EXIT_OK
    assert "Privacy guarantee" in capsys.readouterr().out
    assert pq.read_metadata(out).num_rows == 3000
    assert plain_schema(pq.read_schema(out)).equals(plain_schema(pq.read_schema(cps["private"])))
    assert json.loads(report.read_text()) == Synthesizer.load(model).privacy_report()


def test_fit_without_schema_or_public_table_reports_discovery_composed_with_training(
        cps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.tabsynth"
    capsys.readouterr()
    assert main(["fit", str(cps["private"]), "--epsilon", "1", "-o", str(model), *FAST]) == EXIT_OK
    captured = capsys.readouterr()
    assert "30% of the zCDP budget left after the row count" in captured.err
    assert "DP discovery:    the domain, one Gaussian release of mu" in captured.out
    assert "ledger:          domain discovery, marginals and training:" in captured.out


def test_convert_keeps_a_database_exports_dates_and_decimals(tmp_path: Path) -> None:
    # DATE and DECIMAL columns, as pyarrow or a database writes them; no schema, no public table.
    rng = np.random.default_rng(0)
    n = 4000
    opened = np.datetime64("2010-01-01", "D") + rng.integers(0, 3650, n).astype("timedelta64[D]")
    balance = [decimal.Decimal(f"{v:.2f}") for v in rng.gamma(2.0, 50.0, n)]
    table = pa.table({"opened": pa.array(opened, pa.date32()), "balance": pa.array(balance, pa.decimal128(9, 2)),
                      "branch": pa.array(rng.choice(["north", "south"], n))})
    pq.write_table(table, tmp_path / "private.parquet")
    out = tmp_path / "synthetic.parquet"
    assert main(["convert", str(tmp_path / "private.parquet"), str(out), "--epsilon", "1", "--rows", "500",
                 *FAST]) == EXIT_OK
    synthetic = pq.read_table(out)
    assert plain_schema(synthetic.schema).equals(plain_schema(table.schema))
    years = {d.year for d in synthetic["opened"].to_pylist() if d is not None}
    assert years and years <= set(range(2000, 2030))  # the discovered range is coarse, never absurd


def test_a_csv_output_holds_a_decimal_columns_values_at_its_scale(tmp_path: Path) -> None:
    # The Parquet output rounded them; the CSV wrote the model's floats (305.92355542099745).
    rng = np.random.default_rng(0)
    balance = [decimal.Decimal(f"{v:.2f}") for v in rng.gamma(2.0, 50.0, 3000)]
    pq.write_table(pa.table({"balance": pa.array(balance, pa.decimal128(9, 2)),
                             "branch": pa.array(rng.choice(["north", "south"], 3000))}), tmp_path / "private.parquet")
    out = tmp_path / "synthetic.csv"
    assert main(["convert", str(tmp_path / "private.parquet"), str(out), "--epsilon", "1", "--rows", "500",
                 *FAST]) == EXIT_OK
    values = pd.read_csv(out)["balance"].dropna()
    assert len(values) and np.allclose(values, values.round(2), rtol=0, atol=1e-9)


def _dated_table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    admitted = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 2000, n), unit="D")
    return pd.DataFrame({"admitted": admitted, "ward": rng.choice(["a", "b", "c"], n), "stay": rng.gamma(2.0, 3.0, n)})


def test_convert_of_a_csv_with_a_public_csv_keeps_its_iso_dates_as_dates(tmp_path: Path) -> None:
    _dated_table(3000, 0).to_csv(tmp_path / "private.csv", index=False)
    _dated_table(2000, 1).to_csv(tmp_path / "public.csv", index=False)
    out = tmp_path / "synthetic.parquet"
    assert main(["convert", str(tmp_path / "private.csv"), str(out), "--epsilon", "1", "--rows", "500",
                 "--public", str(tmp_path / "public.csv"), *FAST]) == EXIT_OK
    admitted = pd.read_parquet(out)["admitted"]
    assert pd.api.types.is_datetime64_any_dtype(admitted)
    assert admitted.between("2015-01-01", "2020-06-30").all()


def test_a_private_csv_without_schema_or_public_table_is_refused_before_any_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _dated_table(500, 0).to_csv(tmp_path / "private.csv", index=False)
    out = tmp_path / "synthetic.parquet"
    assert main(["convert", str(tmp_path / "private.csv"), str(out), "--epsilon", "1", *FAST]) == EXIT_USAGE
    assert "--schema" in capsys.readouterr().err and not out.exists()


def test_convert_defaults_to_the_dp_row_count(cps: dict[str, Path], tmp_path: Path) -> None:
    out, report = tmp_path / "synthetic.parquet", tmp_path / "report.json"
    assert main(["convert", str(cps["private"]), str(out), "--public", str(cps["public"]), "--epsilon", "1",
                 "--report", str(report), *FAST]) == EXIT_OK
    assert pq.read_metadata(out).num_rows == json.loads(report.read_text())["dp_row_count"]


def test_convert_refuses_to_overwrite_its_input_or_an_existing_output(cps: dict[str, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--epsilon", "1", *FAST]
    assert main(["convert", str(cps["private"]), str(cps["private"]), *args, "--overwrite"]) == EXIT_USAGE
    assert "also an input" in _error_line(capsys)
    existing = tmp_path / "synthetic.parquet"
    existing.write_bytes(b"keep me")
    assert main(["convert", str(cps["private"]), str(existing), *args]) == EXIT_USAGE
    assert "--overwrite" in _error_line(capsys)
    assert existing.read_bytes() == b"keep me"


def test_an_interrupted_convert_leaves_no_output_at_all(cps: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    original = Synthesizer.sample_batches

    def interrupted(self: Synthesizer, n: int, seed: int | None = None) -> Iterator[pd.DataFrame]:
        yield next(original(self, 100, seed))
        raise KeyboardInterrupt

    monkeypatch.setattr(Synthesizer, "sample_batches", interrupted)
    code = main(["convert", str(cps["private"]), str(tmp_path / "synthetic.parquet"), "--public", str(cps["public"]),
                 "--epsilon", "1", "--model", str(tmp_path / "model.tabsynth"), *FAST])
    assert code == EXIT_INTERRUPTED
    assert list(tmp_path.iterdir()) == []


def test_sample_streams_row_groups_and_defaults_to_the_dp_row_count(cps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "synthetic.parquet"
    assert main(["sample", str(cps["model"]), "-o", str(out), "--seed", "1", "--quiet"]) == EXIT_OK
    assert pq.read_metadata(out).num_rows == Synthesizer.load(cps["model"]).privacy_report()["dp_row_count"]


def test_a_terminated_convert_leaves_no_output_either(cps: dict[str, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    original = Synthesizer.sample_batches

    def terminated(self: Synthesizer, n: int, seed: int | None = None) -> Iterator[pd.DataFrame]:
        yield next(original(self, 100, seed))
        os.kill(os.getpid(), signal.SIGTERM)  # as a batch scheduler would
        yield next(original(self, 100, seed))

    monkeypatch.setattr(Synthesizer, "sample_batches", terminated)
    code = main(["convert", str(cps["private"]), str(tmp_path / "synthetic.parquet"), "--public", str(cps["public"]),
                 "--epsilon", "1", *FAST])
    assert code == EXIT_INTERRUPTED
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
