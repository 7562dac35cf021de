"""Edit rules: structural facts about valid records, declared from public knowledge (a codebook).

Statistical offices call them edit rules: "a person under 15 has no income" (``PINCP`` is null if
and only if ``AGEP < 15``), "group quarters are neither owned nor rented". A schema may carry them;
sampling then keeps only generator rows that satisfy every rule (rejection sampling: the generator's
distribution conditioned on validity), after repairing what can be repaired: where ``when`` holds
and ``then`` is "is null" or "== value", the column is set accordingly. Both are post-processing
and cost no privacy budget.
Rules are plain data (JSON), never code: loading a model file with rules executes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["Condition", "OPERATORS", "Rule", "RuleError", "RulesUnmetError"]

OPERATORS = ("<", "<=", ">", ">=", "==", "!=", "in", "not in", "is null", "not null")
_COMPARISONS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


class RuleError(ValueError):
    """A malformed rule; the message names the rule's column and what is wrong."""


class RulesUnmetError(RuntimeError):
    """Sampling gave up: too few generated rows satisfy the schema's rules (the message names the rule
    broken most). The rules or the model need changing, not the code."""


@dataclass(frozen=True)
class Condition:
    """``column op value`` on one record; "is null" / "not null" take no value, "in" / "not in" a list.

    A comparison with a missing value is false ("AGEP < 15" does not hold where AGEP is null).
    """

    column: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise RuleError(f"a rule condition needs a column name, got {self.column!r}")
        if self.op not in OPERATORS:
            raise RuleError(f"condition on {self.column!r}: operator {self.op!r} is not one of {OPERATORS}")
        if self.op in ("is null", "not null"):
            if self.value is not None:
                raise RuleError(f"condition on {self.column!r}: {self.op!r} takes no value")
        elif self.op in ("in", "not in"):
            if not isinstance(self.value, (list, tuple)) or not self.value:
                raise RuleError(f"condition on {self.column!r}: {self.op!r} needs a non-empty list of values")
            object.__setattr__(self, "value", tuple(self.value))
        elif self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            raise RuleError(f"condition on {self.column!r}: {self.op!r} needs a value (use 'is null' for nulls)")
        elif isinstance(self.value, (list, tuple, dict, set)):
            raise RuleError(f"condition on {self.column!r}: {self.op!r} compares with one value, got {self.value!r} "
                            f"(use 'in' for a list)")
        elif self.op in _COMPARISONS and (isinstance(self.value, bool) or not isinstance(self.value, (int, float))):
            raise RuleError(f"condition on {self.column!r}: {self.op!r} compares with a number, got {self.value!r}")

    def holds(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``frame`` where the condition holds."""
        series = frame[self.column]
        missing = series.isna().to_numpy()
        if self.op == "is null":
            return missing
        if self.op == "not null":
            return ~missing
        if self.op in ("in", "not in"):
            member = series.isin(list(self.value)).to_numpy(dtype=bool) & ~missing
            return member if self.op == "in" else ~member & ~missing
        if self.op in ("==", "!="):
            equal = (series == self.value).fillna(False).to_numpy(dtype=bool)
            return equal if self.op == "==" else ~equal & ~missing
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            return _COMPARISONS[self.op](numbers, float(self.value)) & ~np.isnan(numbers)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"column": self.column, "op": self.op}
        if self.value is not None:
            out["value"] = list(self.value) if isinstance(self.value, tuple) else self.value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Condition":
        if not isinstance(data, Mapping) or set(data) - {"column", "op", "value"} or "column" not in data:
            raise RuleError(f"a rule condition is an object with 'column', 'op' and maybe 'value', got {data!r}")
        return cls(data["column"], data.get("op"), data.get("value"))

    def __str__(self) -> str:
        return f"{self.column} {self.op}" + ("" if self.value is None else f" {self.value!r}")


@dataclass(frozen=True)
class Rule:
    """If ``when`` holds, ``then`` must hold; with ``iff``, ``then`` holds exactly when ``when`` does."""

    when: Condition
    then: Condition
    iff: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.when, Condition) or not isinstance(self.then, Condition):
            raise RuleError("a rule's 'when' and 'then' must be tabsynth.rules.Condition objects")
        if not isinstance(self.iff, bool):
            raise RuleError(f"rule {self}: 'iff' must be true or false, got {self.iff!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.when.column, self.then.column)))

    def satisfied(self, frame: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows of ``frame`` that satisfy the rule."""
        when, then = self.when.holds(frame), self.then.holds(frame)
        return when == then if self.iff else ~when | then

    @property
    def repairs(self) -> bool:
        """Whether a row where ``when`` holds and ``then`` fails can be repaired by setting ``then``'s column
        (``then`` is "is null" or "== value"); other violations can only be rejected."""
        return self.then.op in ("is null", "==") and self.then.column != self.when.column

    def repair(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` with ``then``'s column set (to null or to the value) where ``when`` holds and ``then`` fails.

        Repairing instead of rejecting keeps the generator's rows where ``when`` holds (with an age rule,
        the children) instead of dropping the many it gets nearly right.
        """
        if not self.repairs:
            return frame
        broken = self.when.holds(frame) & ~self.then.holds(frame)
        if not broken.any():
            return frame
        frame = frame.copy()
        frame.loc[broken, self.then.column] = None if self.then.op == "is null" else self.then.value
        return frame

    def to_dict(self) -> dict[str, Any]:
        return {"when": self.when.to_dict(), "then": self.then.to_dict(), "iff": self.iff}

    @classmethod
    def from_dict(cls, data: Any) -> "Rule":
        if not isinstance(data, Mapping) or set(data) - {"when", "then", "iff"} or not {"when", "then"} <= set(data):
            raise RuleError(f"a rule is an object with 'when', 'then' and maybe 'iff', got {data!r}")
        return cls(Condition.from_dict(data["when"]), Condition.from_dict(data["then"]), data.get("iff", False))

    def __str__(self) -> str:
        return f"{self.then} if and only if {self.when}" if self.iff else f"if {self.when} then {self.then}"
