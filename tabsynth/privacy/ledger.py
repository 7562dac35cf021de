"""The privacy ledger: the one place that records what was spent out of an (epsilon, delta) budget."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["BudgetExceededError", "LedgerEntry", "PrivacyLedger"]

COMPOSITION = "basic (sequential) composition across entries"


def _remaining(budget: float, spent: list[float]) -> float:
    """The largest amount whose addition to ``spent`` still sums (in floating point) to at most ``budget``."""
    left = max(0.0, budget - math.fsum(spent))
    while left > 0 and math.fsum([*spent, left]) > budget:
        left = math.nextafter(left, 0.0)
    return left


class BudgetExceededError(ValueError):
    """Raised when recording a spend would take the ledger over its (epsilon, delta) budget."""


@dataclass(frozen=True)
class LedgerEntry:
    """One mechanism's privacy cost; ``reserved`` marks budget earmarked before the mechanism ran."""

    purpose: str
    mechanism: str
    epsilon: float
    delta: float
    details: dict = field(default_factory=dict)
    reserved: bool = False


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays as plain Python, so details survive json.dumps."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _clean_details(details: dict) -> dict:
    try:
        return json.loads(json.dumps(details, default=_jsonable, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"details must be JSON-serialisable (finite numbers only): {exc}") from exc


class PrivacyLedger:
    """Tracks privacy spent against an (epsilon, delta) budget under basic sequential composition."""

    def __init__(self, epsilon: float, delta: float) -> None:
        epsilon, delta = float(epsilon), float(delta)
        if not math.isfinite(epsilon) or epsilon <= 0:
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        if not (0.0 <= delta < 1.0):
            raise ValueError(f"delta must be in [0, 1), got {delta!r}")
        self.epsilon = epsilon
        self.delta = delta
        self._entries: list[LedgerEntry] = []

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """All entries, oldest first."""
        return tuple(self._entries)

    @property
    def spent_epsilon(self) -> float:
        """Sum of the entries' epsilons (reservations included)."""
        return math.fsum(e.epsilon for e in self._entries)

    @property
    def spent_delta(self) -> float:
        """Sum of the entries' deltas (reservations included)."""
        return math.fsum(e.delta for e in self._entries)

    @property
    def remaining_epsilon(self) -> float:
        """Epsilon still available: spending it keeps the total within the budget, rounding included."""
        return _remaining(self.epsilon, [e.epsilon for e in self._entries])

    @property
    def remaining_delta(self) -> float:
        """Delta still available: spending it keeps the total within the budget, rounding included."""
        return _remaining(self.delta, [e.delta for e in self._entries])

    def spend(self, purpose: str, mechanism: str, epsilon: float, delta: float, **details: Any) -> LedgerEntry:
        """Record the cost of a mechanism that has run; raises BudgetExceededError if over budget."""
        return self._add(purpose, mechanism, epsilon, delta, details, reserved=False, replacing=None)

    def reserve(self, purpose: str, mechanism: str, epsilon: float, delta: float, **details: Any) -> LedgerEntry:
        """Earmark budget for a mechanism about to run (it counts as spent until settled)."""
        return self._add(purpose, mechanism, epsilon, delta, details, reserved=True, replacing=None)

    def settle(self, purpose: str, epsilon: float, delta: float, **details: Any) -> LedgerEntry:
        """Replace the open reservation for ``purpose`` by what was actually spent (at most the reservation)."""
        open_ = [i for i, e in enumerate(self._entries) if e.reserved and e.purpose == purpose]
        if len(open_) != 1:
            raise ValueError(f"purpose {purpose!r} has {len(open_)} open reservations; settle needs exactly one")
        res = self._entries[open_[0]]
        if float(epsilon) > res.epsilon or float(delta) > res.delta:
            raise BudgetExceededError(
                f"settling {purpose!r} at (epsilon={epsilon}, delta={delta}) exceeds its reservation "
                f"(epsilon={res.epsilon}, delta={res.delta})"
            )
        merged = {**res.details, **details}
        return self._add(purpose, res.mechanism, epsilon, delta, merged, reserved=False, replacing=open_[0])

    def _add(
        self,
        purpose: str,
        mechanism: str,
        epsilon: float,
        delta: float,
        details: dict,
        *,
        reserved: bool,
        replacing: int | None,
    ) -> LedgerEntry:
        if not isinstance(purpose, str) or not purpose:
            raise ValueError(f"purpose must be a non-empty string, got {purpose!r}")
        if not isinstance(mechanism, str) or not mechanism:
            raise ValueError(f"mechanism must be a non-empty string, got {mechanism!r}")
        epsilon, delta = float(epsilon), float(delta)
        if not math.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"epsilon must be a non-negative finite number, got {epsilon!r}")
        if not (0.0 <= delta < 1.0):
            raise ValueError(f"delta must be in [0, 1), got {delta!r}")
        entry = LedgerEntry(purpose, mechanism, epsilon, delta, _clean_details(details), reserved)
        others = [e for i, e in enumerate(self._entries) if i != replacing]
        total_eps = math.fsum([*(e.epsilon for e in others), epsilon])
        total_delta = math.fsum([*(e.delta for e in others), delta])
        if total_eps > self.epsilon or total_delta > self.delta:
            raise BudgetExceededError(
                f"{'reserving' if reserved else 'spending'} (epsilon={epsilon:.6g}, delta={delta:.3g}) for "
                f"{purpose!r} would exceed the budget (epsilon={self.epsilon:.6g}, delta={self.delta:.3g}): "
                f"already spent (epsilon={math.fsum(e.epsilon for e in others):.6g}, "
                f"delta={math.fsum(e.delta for e in others):.3g})"
            )
        if replacing is None:
            self._entries.append(entry)
        else:
            self._entries[replacing] = entry
        return entry

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot: budget, spent, entries and the composition rule used."""
        return {
            "budget": {"epsilon": self.epsilon, "delta": self.delta},
            "spent": {"epsilon": self.spent_epsilon, "delta": self.spent_delta},
            "entries": [asdict(e) for e in self._entries],
            "composition": COMPOSITION,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger from to_dict output, re-checking every entry against the budget."""
        try:
            budget, entries = data["budget"], data["entries"]
            ledger = cls(budget["epsilon"], budget["delta"])
            for e in entries:
                ledger._add(
                    e["purpose"], e["mechanism"], e["epsilon"], e["delta"], dict(e.get("details", {})),
                    reserved=bool(e.get("reserved", False)), replacing=None,
                )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"data is not a PrivacyLedger.to_dict() snapshot: {exc!r}") from exc
        if data.get("composition", COMPOSITION) != COMPOSITION:
            raise ValueError(f"data uses composition {data['composition']!r}, expected {COMPOSITION!r}")
        return ledger

    def __repr__(self) -> str:
        return (
            f"PrivacyLedger(budget=(epsilon={self.epsilon:.6g}, delta={self.delta:.3g}), "
            f"spent=(epsilon={self.spent_epsilon:.6g}, delta={self.spent_delta:.3g}), entries={len(self._entries)})"
        )
