"""Noisy one-way marginals: the Gaussian mechanism on every column's histogram at once."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tabsynth.privacy.accounting import calibrate_noise_multiplier


def gaussian_marginals(counts: Sequence[np.ndarray], epsilon: float, delta: float,
                       rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """The k one-way histograms ``counts`` (exact cell counts) plus N(0, s^2) noise per cell.

    A row adds 1 to one cell of each of the k histograms, so the L2 sensitivity of the whole
    release under add/remove is sqrt(k); s = z * sqrt(k), with z the Gaussian mechanism's noise
    multiplier for (epsilon, delta) (RDP accountant with sampling rate 1 and one step).
    Returns the noisy counts (may be negative) and s.
    """
    if not counts:
        raise ValueError("counts must hold at least one histogram")
    multiplier = calibrate_noise_multiplier(epsilon, delta, 1.0, 1)
    std = multiplier * math.sqrt(len(counts))
    noisy = [np.asarray(c, dtype=np.float64) + rng.normal(0.0, std, size=len(c)) for c in counts]
    return noisy, std


def histograms(cells: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cell counts of each column of ``cells`` (n rows x k marginals)."""
    if cells.ndim != 2 or cells.shape[1] != len(sizes):
        raise ValueError(f"cells must have shape (n, {len(sizes)}), got {cells.shape}")
    return [np.bincount(cells[:, j], minlength=size) for j, size in enumerate(sizes)]


__all__ = ["gaussian_marginals", "histograms"]
