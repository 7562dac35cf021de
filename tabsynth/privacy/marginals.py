"""Noisy one-way marginals: the Gaussian mechanism on every column's histogram at once."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from tabsynth.privacy.accounting import calibrate_noise_multiplier


def gaussian_marginals(codes: np.ndarray, sizes: Sequence[int], epsilon: float, delta: float,
                       rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """All one-way histograms of ``codes`` (n rows x k marginals) plus N(0, s^2) noise per cell.

    A row adds 1 to one cell of each of the k histograms, so the L2 sensitivity of the whole
    release under add/remove is sqrt(k); s = z * sqrt(k), with z the Gaussian mechanism's noise
    multiplier for (epsilon, delta) (RDP accountant with sampling rate 1 and one step).
    Returns the noisy counts (may be negative) and s.
    """
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise ValueError(f"codes must have shape (n, {len(sizes)}), got {codes.shape}")
    multiplier = calibrate_noise_multiplier(epsilon, delta, 1.0, 1)
    std = multiplier * math.sqrt(len(sizes))
    noisy = []
    for j, size in enumerate(sizes):
        counts = np.bincount(codes[:, j], minlength=size).astype(np.float64)
        noisy.append(counts + rng.normal(0.0, std, size=size))
    return noisy, std


__all__ = ["gaussian_marginals"]
