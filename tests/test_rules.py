"""Edit rules: conditions, rules, their JSON form in the schema, and sampling that satisfies them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tabsynth import Condition, Rule, RuleError, RulesUnmetError, Schema, SchemaError, Synthesizer
from tabsynth.datasets import load_demo

FAST = dict(marginal_steps=5, steps=3, batch_size=64, generator_hidden=(16,), discriminator_hidden=(16,), noise_dim=8, seed=0,
            warm_start_epochs=0.02)
PEOPLE = pd.DataFrame({"age": pd.array([3, 14, 15, 40, None], dtype="Int64"),
                       "income": [None, None, 100.0, 2500.0, 10.0],
                       "tenure": pd.Series(["own", "rent", "group", "own", None], dtype="str")})


@pytest.mark.parametrize("condition, expected", [
    (Condition("age", "<", 15), [True, True, False, False, False]),  # a null age is not < 15
    (Condition("age", ">=", 15), [False, False, True, True, False]),
    (Condition("income", "is null"), [True, True, False, False, False]),
    (Condition("income", "not null"), [False, False, True, True, True]),
    (Condition("tenure", "==", "own"), [True, False, False, True, False]),
    (Condition("tenure", "!=", "own"), [False, True, True, False, False]),
    (Condition("tenure", "in", ["own", "rent"]), [True, True, False, True, False]),
    (Condition("tenure", "not in", ["own", "rent"]), [False, False, True, False, False]),
])
def test_conditions_hold_row_by_row_and_never_on_a_missing_value(condition: Condition, expected: list) -> None:
    assert condition.holds(PEOPLE).tolist() == expected


def test_an_iff_rule_needs_both_directions_and_an_if_rule_one() -> None:
    when, then = Condition("age", "<", 15), Condition("income", "is null")
    people = pd.DataFrame({"age": [10, 10, 40, 40], "income": [None, 5.0, None, 5.0]})
    assert Rule(when, then, iff=True).satisfied(people).tolist() == [True, False, False, True]
    assert Rule(when, then).satisfied(people).tolist() == [True, False, True, True]
    assert str(Rule(when, then, iff=True)) == "income is null if and only if age < 15"


@pytest.mark.parametrize("kwargs, message", [
    (dict(column="age", op="~", value=1), "operator"),
    (dict(column="age", op="<"), "needs a value"),
    (dict(column="age", op="<", value="fifteen"), "compares with a number"),
    (dict(column="age", op="is null", value=3), "takes no value"),
    (dict(column="age", op="in", value=[]), "non-empty list"),
    (dict(column="age", op="==", value=[3]), "compares with one value"),
])
def test_a_malformed_condition_names_its_column(kwargs: dict, message: str) -> None:
    with pytest.raises(RuleError, match=message) as info:
        Condition(**kwargs)
    assert "'age'" in str(info.value)


def schema_with_rule() -> Schema:
    rule = Rule(Condition("degree", "==", "bachelor"), Condition("age", ">=", 27))
    return Schema.infer(load_demo("cps_1992")).with_rules([rule])


def test_rules_travel_with_the_schema_json() -> None:
    schema = schema_with_rule()
    again = Schema.from_json(schema.to_json())
    assert again.rules == schema.rules and again == schema


def test_a_rule_on_an_unknown_column_is_refused() -> None:
    with pytest.raises(SchemaError, match="'INDP'"):
        Schema.infer(load_demo("cps_1992")).with_rules([Rule(Condition("INDP", "is null"), Condition("age", "<", 16))])


def test_a_malformed_rule_in_schema_json_is_a_schema_error() -> None:
    data = schema_with_rule().to_dict()
    data["rules"][0]["when"]["op"] = "approximately"
    with pytest.raises(SchemaError, match="operator"):
        Schema.from_dict(data)


@pytest.fixture(scope="module")
def ruled() -> Synthesizer:
    return Synthesizer(**FAST).fit(load_demo("cps_2004").head(1500), epsilon=1.0, schema=schema_with_rule(),
                                   public=load_demo("cps_1992"))


def test_every_sampled_row_satisfies_the_rules(ruled: Synthesizer) -> None:
    sample = ruled.sample(3000, seed=0)
    assert len(sample) == 3000
    assert ruled.schema_.rules[0].satisfied(sample).all()
    assert (sample["degree"] == "bachelor").any()  # the rule restricts rows, it does not remove a category


def test_rules_survive_save_and_load(ruled: Synthesizer, tmp_path: Path) -> None:
    ruled.save(tmp_path / "model.tabsynth")
    loaded = Synthesizer.load(tmp_path / "model.tabsynth")
    assert loaded.schema_.rules == ruled.schema_.rules
    pd.testing.assert_frame_equal(loaded.sample(200, seed=3), ruled.sample(200, seed=3))


def test_rules_no_record_can_satisfy_give_a_clear_error(ruled: Synthesizer) -> None:
    impossible = Rule(Condition("age", ">=", 0), Condition("age", "<", 0))
    ruled.schema_ = ruled.schema_.with_rules([impossible])
    try:
        with pytest.raises(RulesUnmetError, match=r"rule broken most is 'if age >= 0 then age < 0' \(100% of rows\)"):
            ruled.sample(100, seed=0)
    finally:
        ruled.schema_ = schema_with_rule().with_dtypes(load_demo("cps_2004").head(1))


def test_repair_sets_the_consequence_where_the_condition_holds_and_nothing_else() -> None:
    rule = Rule(Condition("age", "<", 15), Condition("income", "is null"), iff=True)
    people = pd.DataFrame({"age": [10, 10, 40, 40], "income": [None, 5.0, None, 5.0]})
    repaired = rule.repair(people)
    assert repaired["income"].isna().tolist() == [True, True, True, False]  # row 2 breaks the other direction
    assert people["income"].isna().tolist() == [True, False, True, False]  # the input is left as it was
    assign = Rule(Condition("age", ">=", 15), Condition("tenure", "==", "own"))
    assert assign.repair(PEOPLE)["tenure"].tolist()[:4] == ["own", "rent", "own", "own"]
    assert not Rule(Condition("age", ">=", 0), Condition("income", ">", 0)).repairs


def test_a_rule_that_nulls_a_column_the_schema_keeps_non_null_is_refused() -> None:
    with pytest.raises(SchemaError, match="not declare it nullable"):
        Schema.infer(load_demo("cps_1992")).with_rules([Rule(Condition("age", "<", 20), Condition("earnings",
                                                                                                   "is null"))])


@pytest.mark.parametrize("then", [Condition("age", "==", 500), Condition("age", "==", 30.5), Condition("age", "==", "30"),
                                  Condition("degree", "==", "zzz"), Condition("degree", "==", 5)])
def test_a_rule_that_sets_a_value_outside_its_columns_domain_is_refused(then: Condition) -> None:
    # Accepted, it was applied by the repair after the fit: ages of 500, or a TypeError from pandas.
    with pytest.raises(SchemaError, match=f"sets column '{then.column}' to .* not a value of its domain"):
        Schema.infer(load_demo("cps_1992")).with_rules([Rule(Condition("earnings", ">", 1e9), then)])


def test_a_rule_that_sets_a_value_of_its_columns_domain_is_accepted() -> None:
    schema = Schema.infer(load_demo("cps_1992")).with_rules([Rule(Condition("earnings", ">", 1e9), Condition("age", "==", 30)),
                                                             Rule(Condition("age", "<", 26), Condition("degree", "==", "highschool"))])
    assert len(schema.rules) == 2
    codes = pd.DataFrame({"OWN_RENT": pd.array([0, 1, 2, 1], dtype="Int64"), "HOUSING_TYPE": pd.array([1, 2, 1, 1], dtype="Int64")})
    coded = Schema.infer(codes, overrides={"OWN_RENT": "categorical", "HOUSING_TYPE": "categorical"})
    rule = Rule(Condition("HOUSING_TYPE", "!=", 1), Condition("OWN_RENT", "==", 0), iff=True)  # the ACS benchmark's
    assert coded.with_rules([rule]).rules == (rule,)


def test_a_rule_that_sets_a_boolean_column_to_a_number_says_to_use_true_or_false() -> None:
    frame = pd.DataFrame({"age": [20, 30, 40], "veteran": [True, False, True]})
    with pytest.raises(SchemaError, match="a boolean column takes true or false"):
        Schema.infer(frame).with_rules([Rule(Condition("age", "<", 25), Condition("veteran", "==", 1))])


def test_repairable_rules_keep_the_rows_where_their_condition_holds(ruled: Synthesizer) -> None:
    before = ruled.schema_
    ruled.schema_ = before.with_rules([Rule(Condition("degree", "==", "bachelor"), Condition("gender", "==", "female"),
                                            iff=True)])
    try:
        unconstrained = ruled.schema_.with_rules([])
        sample = ruled.sample(4000, seed=1)
        assert ruled.schema_.rules[0].satisfied(sample).all()
        ruled.schema_ = unconstrained
        share = (ruled.sample(4000, seed=1)["degree"] == "bachelor").mean()
        # Bachelors are repaired (made female), not rejected, so their share stays about what it was.
        assert (sample["degree"] == "bachelor").mean() == pytest.approx(share, abs=0.08)
    finally:
        ruled.schema_ = before
