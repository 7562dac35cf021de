"""Differential-privacy accounting, budget ledger and small DP mechanisms for tabsynth."""

from tabsynth.privacy.accounting import (
    ACCOUNTANTS,
    DEFAULT_ACCOUNTANT,
    RDP_ORDERS,
    allocate_group_noise,
    calibrate_noise_multiplier,
    compute_epsilon,
    effective_noise_multiplier,
    max_steps,
)
from tabsynth.privacy.discovery import (
    ComposedDiscovery,
    DiscoveryWarning,
    discover_new_categories_composed,
    discover_schema,
    discover_schema_composed,
)
from tabsynth.privacy.ledger import BudgetExceededError, LedgerEntry, PrivacyLedger
from tabsynth.privacy.mechanisms import (
    default_numeric_candidates,
    discrete_laplace_count,
    dp_histogram_threshold,
    dp_quantiles,
    histogram_threshold,
)

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_ACCOUNTANT",
    "RDP_ORDERS",
    "BudgetExceededError",
    "ComposedDiscovery",
    "DiscoveryWarning",
    "LedgerEntry",
    "PrivacyLedger",
    "allocate_group_noise",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "default_numeric_candidates",
    "discover_new_categories_composed",
    "discover_schema",
    "discover_schema_composed",
    "discrete_laplace_count",
    "dp_histogram_threshold",
    "dp_quantiles",
    "effective_noise_multiplier",
    "histogram_threshold",
    "max_steps",
]
