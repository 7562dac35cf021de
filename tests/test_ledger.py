"""Specifications for tabsynth.privacy.ledger."""

import json

import numpy as np
import pytest

from tabsynth.privacy import BudgetExceededError, LedgerEntry, PrivacyLedger


def test_spend_records_entries_and_totals():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    entry = ledger.spend("categories:city", "stability_histogram", 0.1, 1e-7, column="city")
    ledger.spend("training", "dp_sgd", 0.8, 5e-6, steps=1000)
    assert entry == LedgerEntry("categories:city", "stability_histogram", 0.1, 1e-7, {"column": "city"})
    assert [e.purpose for e in ledger.entries] == ["categories:city", "training"]
    assert ledger.spent_epsilon == pytest.approx(0.9)
    assert ledger.spent_delta == pytest.approx(5.1e-6)
    assert ledger.remaining_epsilon == pytest.approx(0.1)
    assert ledger.remaining_delta == pytest.approx(4.9e-6)


def test_entries_are_frozen():
    entry = PrivacyLedger(1.0, 1e-5).spend("x", "laplace", 0.1, 0.0)
    with pytest.raises(AttributeError):
        entry.epsilon = 0.0


def test_overspending_epsilon_is_refused_and_not_recorded():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    ledger.spend("quantiles", "exponential", 0.6, 0.0)
    with pytest.raises(BudgetExceededError, match=r"epsilon=0\.5.*'training'"):
        ledger.spend("training", "dp_sgd", 0.5, 1e-6)
    assert len(ledger.entries) == 1 and ledger.spent_epsilon == pytest.approx(0.6)


def test_overspending_delta_is_refused():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-6)
    with pytest.raises(BudgetExceededError, match="delta"):
        ledger.spend("categories", "stability_histogram", 0.1, 2e-6)


def test_budget_exceeded_error_is_a_value_error():
    assert issubclass(BudgetExceededError, ValueError)


def test_spending_exactly_the_budget_is_allowed_despite_float_rounding():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    for _ in range(10):
        ledger.spend("step", "laplace", 0.1, 1e-6)  # 0.1 * 10 is not exactly 1.0 in floats
    assert ledger.remaining_epsilon == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(BudgetExceededError):
        ledger.spend("one more", "laplace", 1e-6, 0.0)


def test_reservation_counts_until_settled_for_less():
    ledger = PrivacyLedger(epsilon=1.0, delta=1e-5)
    ledger.reserve("training", "dp_sgd", 0.9, 1e-5, planned_steps=1000)
    with pytest.raises(BudgetExceededError):
        ledger.spend("extra", "laplace", 0.2, 0.0)
    settled = ledger.settle("training", 0.7, 1e-5, steps=600)
    assert not settled.reserved and settled.details == {"planned_steps": 1000, "steps": 600}
    assert ledger.spent_epsilon == pytest.approx(0.7)
    with pytest.raises(ValueError, match="open reservations"):
        ledger.settle("training", 0.1, 0.0)

def test_settling_above_the_reservation_is_refused():
    ledger = PrivacyLedger(epsilon=2.0, delta=1e-5)
    ledger.reserve("training", "dp_sgd", 1.0, 1e-6)
    with pytest.raises(BudgetExceededError, match="reservation"):
        ledger.settle("training", 1.5, 1e-6)


def test_round_trips_through_json():
    ledger = PrivacyLedger(epsilon=3.0, delta=1e-5)
    ledger.spend("quantiles:age", "exponential", 0.05, 0.0, candidates=np.int64(1923))
    ledger.reserve("training", "dp_sgd", 2.0, 9e-6, noise_multiplier=np.float32(1.25))
    snapshot = json.loads(json.dumps(ledger.to_dict()))
    assert snapshot["composition"] == "basic (sequential) composition across entries"
    assert snapshot["budget"] == {"epsilon": 3.0, "delta": 1e-5}
    assert snapshot["spent"]["epsilon"] == pytest.approx(2.05)
    restored = PrivacyLedger.from_dict(snapshot)
    assert restored.entries == ledger.entries
    assert restored.to_dict() == ledger.to_dict()


def test_from_dict_rejects_an_overspent_snapshot():
    snapshot = PrivacyLedger(epsilon=1.0, delta=1e-5).to_dict()
    snapshot["entries"] = [
        {"purpose": "a", "mechanism": "laplace", "epsilon": 0.8, "delta": 0.0, "details": {}},
        {"purpose": "b", "mechanism": "laplace", "epsilon": 0.8, "delta": 0.0, "details": {}},
    ]
    with pytest.raises(BudgetExceededError):
        PrivacyLedger.from_dict(snapshot)


@pytest.mark.parametrize(
    "epsilon,delta,name",
    [(0.0, 1e-5, "epsilon"), (float("inf"), 1e-5, "epsilon"), (1.0, -1e-9, "delta"), (1.0, 1.0, "delta")],
)
def test_budget_is_validated(epsilon, delta, name):
    with pytest.raises(ValueError, match=name):
        PrivacyLedger(epsilon, delta)


def test_spend_arguments_are_validated():
    ledger = PrivacyLedger(1.0, 1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        ledger.spend("x", "laplace", -0.1, 0.0)
    with pytest.raises(ValueError, match="purpose"):
        ledger.spend("", "laplace", 0.1, 0.0)
    with pytest.raises(ValueError, match="details"):
        ledger.spend("x", "laplace", 0.1, 0.0, fn=object())
