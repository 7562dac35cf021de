"""Clipping groups for DP-SGD: which parameters share a bound, and how the bounds are set.

Three techniques of the dp-GAN papers, each with its accounting made right:

- **grouping**: all parameters in one group ("flat"), weights apart from biases ("weight_bias"),
  or one group per tensor merged by **weight clustering** ("clustered": repeatedly merge the two
  groups whose bounds are closest in ratio, merged bound sqrt(c^2 + c'^2), until k remain);
- **adaptive bounds**: from public data, each group's bound is the mean per-example gradient norm
  on a public batch (free); without public data, each bound tracks a quantile of the private
  per-example norms from a noisy count of the unclipped examples (Andrew et al. 2021), a count
  released inside the same Gaussian mechanism as the gradient (see ``quantile_count_noise``).

A record touches every group, so however the parameters are grouped a DP-SGD step is one Gaussian
mechanism; ``ClippingGroups.noise_multiplier`` is its effective multiplier, the one the accountant
sees. Bounds only ever change as functions of public data or of released (noised) values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

Grouping = Literal["flat", "weight_bias", "clustered"]
AdaptiveClipping = Literal["off", "public", "private"]
GROUPINGS: tuple[str, ...] = ("flat", "weight_bias", "clustered")
ADAPTIVE_CLIPPING: tuple[str, ...] = ("off", "public", "private")

# At most this share of a step's whitened precision (1/z^2) goes to the clipped-fraction counts.
MAX_COUNT_SHARE = 0.1
# Andrew et al.'s recommended noise on the unclipped count: expected batch size / 20.
COUNT_NOISE_PER_EXAMPLE = 0.05


def parameter_groups(model: nn.Module, grouping: Grouping) -> tuple[tuple[str, ...], ...]:
    """Initial groups of ``model``'s parameter names: one, weights/biases, or one per tensor (to be clustered)."""
    names = [name for name, _ in model.named_parameters()]
    if grouping == "flat":
        return (tuple(names),)
    if grouping == "weight_bias":
        shapes = dict(model.named_parameters())
        groups = (tuple(n for n in names if shapes[n].ndim > 1), tuple(n for n in names if shapes[n].ndim <= 1))
        return tuple(g for g in groups if g)
    if grouping == "clustered":
        return tuple((n,) for n in names)
    raise ValueError(f"clip_grouping must be one of {GROUPINGS}, got {grouping!r}")


def cluster_groups(names: Sequence[tuple[str, ...]], bounds: Sequence[float],
                   k: int) -> tuple[tuple[tuple[str, ...], ...], tuple[float, ...]]:
    """Weight clustering: merge the two groups with the closest bounds (ratio max(c/c', c'/c)) until k remain.

    A merged group's bound is sqrt(c^2 + c'^2), so the whole vector's bound sqrt(sum c_j^2) is unchanged.
    """
    if len(names) != len(bounds):
        raise ValueError(f"got {len(names)} groups but {len(bounds)} bounds")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of clusters must be a positive integer, got {k!r}")
    groups, values = [tuple(g) for g in names], [float(b) for b in bounds]
    if any(not math.isfinite(b) or b <= 0 for b in values):
        raise ValueError(f"clipping bounds must be positive finite numbers, got {values}")
    while len(groups) > k:
        _, i, j = min((max(values[i] / values[j], values[j] / values[i]), i, j)
                      for i in range(len(groups)) for j in range(i + 1, len(groups)))
        groups[i], values[i] = groups[i] + groups[j], math.hypot(values[i], values[j])
        del groups[j], values[j]
    return tuple(groups), tuple(values)


def group_norms(per_example: dict[str, torch.Tensor], names: Sequence[tuple[str, ...]]) -> torch.Tensor:
    """Per-example gradient norm of every group: shape (examples, groups)."""
    return torch.stack([torch.cat([per_example[n].flatten(start_dim=1) for n in group], dim=1).norm(dim=1)
                        for group in names], dim=1)


def quantile_count_noise(expected_batch_size: float, groups: int, noise_multiplier: float) -> float:
    """Noise std on each group's count of unclipped examples, for private quantile tracking.

    Each example adds (1[norm <= c_j] - 1/2) to group j's count: sensitivity 1/2 per group, sqrt(k)/2 for
    the vector of k counts. Released with the gradient as one Gaussian mechanism, the counts take
    k / (4 s^2) of the step's whitened precision 1/z^2; s is expected_batch_size / 20 (Andrew et al.),
    raised where needed so that the share stays below ``MAX_COUNT_SHARE``.
    """
    floor = math.sqrt(groups / (4.0 * MAX_COUNT_SHARE)) * noise_multiplier
    return max(COUNT_NOISE_PER_EXAMPLE * expected_batch_size, floor)


def quantile_update(bounds: Sequence[float], unclipped_fraction: np.ndarray, target_quantile: float,
                    learning_rate: float) -> tuple[float, ...]:
    """Geometric update c <- c * exp(-lr * (fraction unclipped - target)): c moves to the target quantile of the norms."""
    factor = np.exp(-learning_rate * (np.clip(unclipped_fraction, 0.0, 1.0) - target_quantile))
    return tuple(float(b) for b in np.asarray(bounds) * factor)


@dataclass(frozen=True)
class ClippingSchedule:
    """How the clipping groups evolve during training; every change uses public or released values only.

    ``adaptive``: "off" (bounds fixed), "public" (bounds = mean public per-example norms, every step)
    or "private" (noisy quantile tracking). ``clusters``: with grouping "clustered", the number of
    groups kept; the per-tensor bounds are estimated first (on public data before the first step, or
    privately over ``cluster_after`` steps), then clustered.
    """

    adaptive: AdaptiveClipping
    clusters: int | None = None
    cluster_after: int = 0
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    @property
    def releases_counts(self) -> bool:
        """Whether DP steps release noisy unclipped counts (before clustering, or always when adaptive is private)."""
        return self.adaptive == "private" or (self.clusters is not None and self.cluster_after > 0)

    def counts_at(self, step: int) -> bool:
        """Whether the DP step with index ``step`` (0-based) releases unclipped counts."""
        return self.adaptive == "private" or (self.clusters is not None and step < self.cluster_after)

    def next_bounds(self, step: int, bounds: tuple[float, ...], unclipped_fraction: np.ndarray | None,
                    public_norms: Callable[[], np.ndarray] | None) -> tuple[float, ...]:
        """Bounds for the step after ``step``, from that step's released counts or from public norms."""
        if unclipped_fraction is not None:
            return quantile_update(bounds, unclipped_fraction, self.target_quantile, self.learning_rate)
        if self.adaptive == "public" and public_norms is not None:
            return positive_bounds(public_norms(), bounds)
        return bounds


def positive_bounds(estimates: np.ndarray, fallback: Sequence[float]) -> tuple[float, ...]:
    """Estimated bounds, each replaced by its fallback where the estimate is zero or not finite."""
    return tuple(float(e) if math.isfinite(float(e)) and e > 0 else float(f) for e, f in zip(estimates, fallback))


__all__ = ["ADAPTIVE_CLIPPING", "AdaptiveClipping", "ClippingSchedule", "GROUPINGS", "Grouping",
           "cluster_groups", "group_norms", "parameter_groups", "positive_bounds", "quantile_count_noise",
           "quantile_update"]
