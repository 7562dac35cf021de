"""Denoising of a noisy ordered sequence (post-processing of a DP release: free).

A histogram over ordered cells (ages, a number's segments between its knots) is mostly flat or
slowly varying between a few jumps, while the Gaussian noise of a DP release is independent from
cell to cell. One-dimensional total-variation denoising (the fused lasso signal approximator) keeps
the jumps and averages the noise out of the flat runs, and an empty range end becomes one flat run
near zero instead of a row of cells each holding its noise. Its weight comes from Stein's unbiased
risk estimate for the release's known noise std, so a marginal whose cells the noise hardly touches
keeps its counts.
"""

from __future__ import annotations

import numpy as np

# Weights tried by ``sure_tv_denoise``, in noise stds (0: the counts as released).
SURE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)


def tv_denoise(values: np.ndarray, weight: float) -> np.ndarray:
    """The exact minimiser x of ½‖values − x‖² + weight · Σ|x[i+1] − x[i]|.

    Condat's direct algorithm (L. Condat, "A direct algorithm for 1D total variation denoising",
    IEEE Signal Processing Letters, 2013): one pass that grows a run while a constant value within
    ±weight of the running residual fits it, O(n) in practice. The sum of the values is kept.
    """
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 1 or not np.isfinite(y).all():
        raise ValueError("values must be a one-dimensional sequence of finite numbers")
    weight = float(weight)
    if weight < 0 or not np.isfinite(weight):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    n = len(y)
    if weight == 0 or n < 2:
        return y.copy()
    if weight >= np.abs(np.cumsum(y - y.mean())).max():  # one run (also where y[0] ± weight would cancel)
        return np.full(n, y.mean())
    out = np.empty(n)
    k = k0 = k_plus = k_minus = 0
    u_min, u_max = weight, -weight  # the running residual's room below and above
    v_min, v_max = y[0] - weight, y[0] + weight  # the run's lowest and highest value still possible
    while True:
        while k == n - 1:  # the last cell: close runs until one value fits what is left
            if u_min < 0.0:
                out[k0:k_minus + 1] = v_min
                k0 = k = k_minus = k_minus + 1
                v_min, u_min = y[k], weight
                u_max = v_min + u_min - v_max
            elif u_max > 0.0:
                out[k0:k_plus + 1] = v_max
                k0 = k = k_plus = k_plus + 1
                v_max, u_max = y[k], -weight
                u_min = v_max + u_max - v_min
            else:
                out[k0:] = v_min + u_min / (k - k0 + 1)
                return out
        u_min += y[k + 1] - v_min
        if u_min < -weight:  # the next value is too low for the run: it ends at v_min, a jump down follows
            out[k0:k_minus + 1] = v_min
            k0 = k = k_minus = k_plus = k_minus + 1
            v_min = y[k]
            v_max = v_min + 2 * weight
            u_min, u_max = weight, -weight
            continue
        u_max += y[k + 1] - v_max
        if u_max > weight:  # the next value is too high for the run: it ends at v_max, a jump up follows
            out[k0:k_plus + 1] = v_max
            k0 = k = k_minus = k_plus = k_plus + 1
            v_max = y[k]
            v_min = v_max - 2 * weight
            u_min, u_max = weight, -weight
            continue
        k += 1
        if u_min >= weight:
            k_minus = k
            v_min += (u_min - weight) / (k_minus - k0 + 1)
            u_min = weight
        if u_max <= -weight:
            k_plus = k
            v_max += (u_max + weight) / (k_plus - k0 + 1)
            u_max = -weight


def runs(values: np.ndarray) -> int:
    """The number of runs of equal neighbouring values: the degrees of freedom of a TV estimate."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return 0
    scale = max(1.0, float(np.abs(values).max()))
    return 1 + int((np.abs(np.diff(values)) > 1e-9 * scale).sum())


def sure_tv_denoise(rows: np.ndarray, std: float) -> tuple[np.ndarray, float]:
    """``tv_denoise`` at the weight with the least estimated risk for noise of std ``std``.

    ``rows`` is one sequence or a matrix of sequences with a common noise, each denoised at the
    weight of ``SURE_WEIGHTS`` (times ``std``) whose Stein's unbiased risk estimate
    ‖y − x‖² − n·std² + 2·std²·runs(x) (Tibshirani & Taylor 2012: the runs of a fused lasso fit are
    its degrees of freedom), summed over the rows, is least. Returns the fit and that weight in
    noise stds."""
    y = np.asarray(rows, dtype=np.float64)
    if not (np.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive number, got {std!r}")
    if y.size == 0:
        return y.copy(), 0.0
    matrix = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
    best_risk, best, best_weight = np.inf, matrix, 0.0
    for weight in SURE_WEIGHTS:
        fit = matrix if weight == 0 else np.stack([tv_denoise(row, weight * std) for row in matrix])
        freedom = matrix.size if weight == 0 else sum(runs(r) for r in fit)  # the raw counts: every cell free
        risk = float(((matrix - fit) ** 2).sum()) - matrix.size * std**2 + 2 * std**2 * freedom
        if risk < best_risk:
            best_risk, best, best_weight = risk, fit, weight
    return best.reshape(y.shape).copy(), best_weight


__all__ = ["SURE_WEIGHTS", "runs", "sure_tv_denoise", "tv_denoise"]
