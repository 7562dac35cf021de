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
         max_ratio: float = 100.0) -> np.ndarray:
    """Weights (mean 1) whose weighted one-way marginals approach ``targets``.

    Cells the oversample never hit cannot be reached and are ignored; each weight stays within
    [1/max_ratio, max_ratio] so a few rows cannot dominate the resample.
    """
    n = len(codes)
    weights = np.ones(n)
    for _ in range(iterations):
        for j, target in enumerate(targets):
            current = np.bincount(codes[:, j], weights=weights, minlength=len(target)) / weights.sum()
            reachable = current > 0
            scale = np.ones(len(target))
            mass = target[reachable].sum()
            if mass <= 0:
                continue
            scale[reachable] = (target[reachable] / mass) / current[reachable]
            weights = np.clip(weights * scale[codes[:, j]], 1.0 / max_ratio, max_ratio)
        weights /= weights.mean()
    return weights


def systematic_resample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` row indices drawn proportionally to ``weights`` with low variance, in random order."""
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    positions = (rng.random() + np.arange(n)) / n
    index = np.minimum(np.searchsorted(cumulative, positions, side="right"), len(weights) - 1)
    return rng.permutation(index)


__all__ = ["rake", "systematic_resample", "target_distributions"]
