"""Calibrated sampling: reweight an oversample of generator rows towards DP one-way marginals.

Pure post-processing of two DP outputs (the generator and the noisy marginals): it costs no budget
beyond what produced them. Raking (iterative proportional fitting) finds weights whose weighted
one-way marginals match the targets; systematic resampling then draws the requested rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def target_distributions(noisy_counts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Noisy counts -> probability vectors (negative counts set to zero)."""
    targets = []
    for counts in noisy_counts:
        clipped = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
        total = clipped.sum()
        targets.append(clipped / total if total > 0 else np.full(len(clipped), 1.0 / len(clipped)))
    return targets


def rake(codes: np.ndarray, targets: Sequence[np.ndarray], iterations: int = 10,
         max_ratio: float = 100.0, tolerance: float = 1e-3) -> np.ndarray:
    """Weights (mean 1) whose weighted one-way marginals approach ``targets``.

    Cells the oversample never hit cannot be reached and are ignored; each weight stays within
    [1/max_ratio, max_ratio] so a few rows cannot dominate the resample. Stops early once the worst
    cell's distance from its target share is below ``tolerance`` or shrank by less than it in a sweep
    (the rest is out of reach of the bounded weights).
    """
    n = len(codes)
    columns = [np.ascontiguousarray(codes[:, j]) for j in range(codes.shape[1])]  # one pass each, not strided
    weights = np.ones(n)
    previous = np.inf
    for _ in range(iterations):
        worst = 0.0
        for column, target in zip(columns, targets, strict=True):
            current = np.bincount(column, weights=weights, minlength=len(target)) / weights.sum()
            reachable = current > 0
            mass = target[reachable].sum()
            if mass <= 0:
                continue
            wanted = target[reachable] / mass
            worst = max(worst, float(np.abs(wanted - current[reachable]).max()))
            scale = np.ones(len(target))
            scale[reachable] = wanted / current[reachable]
            weights *= scale[column]
            np.clip(weights, 1.0 / max_ratio, max_ratio, out=weights)
        weights /= weights.mean()
        if worst <= tolerance or previous - worst < tolerance:
            break
        previous = worst
    return weights


def systematic_resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row indices drawn proportionally to ``weights`` with low variance, in random order."""
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    positions = (rng.random() + np.arange(n)) / n
    index = np.minimum(np.searchsorted(cumulative, positions, side="right"), len(weights) - 1)
    return rng.permutation(index)


__all__ = ["rake", "systematic_resample", "target_distributions"]
