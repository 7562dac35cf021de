"""DP marginal measurements: every one-way marginal and the two-way marginals, by one Gaussian mechanism.

Which marginals are measured depends on the schema alone (every pair of at most ``MAX_PAIR_CELLS``
cells; when more than ``max_pairs`` qualify, the smallest, or the most dependent on a public table),
so choosing them costs nothing. A row adds 1 to one cell of each marginal, so the release is a
Gaussian mechanism with L2 sensitivity 1 per marginal; with noise std s_1 on the k_1 one-way and
s_2 on the k_2 two-way marginals it is rho-zCDP with rho = k_1 / (2 s_1^2) + k_2 / (2 s_2^2), the
same privacy as one Gaussian mechanism of noise multiplier 1 / sqrt(2 rho). That is how the
accountant composes it with DP-SGD (``accounting.compute_epsilon(..., extra_gaussian=...)``).

The unit of privacy is one row (add/remove adjacency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

MAX_PAIR_CELLS = 4096  # two-way marginals with more cells than this are not measured (noise would swamp them)
ONE_WAY_SHARE = 0.3  # of rho, for the one-way marginals when two-way ones are measured too


@dataclass(frozen=True)
class MarginalMeasurements:
    """Noisy counts released by ``measure_marginals`` (DP outputs: safe to keep and save)."""

    sizes: tuple[int, ...]
    one_way: tuple[np.ndarray, ...]
    pairs: tuple[tuple[int, int], ...]
    two_way: tuple[np.ndarray, ...]  # pair (a, b): counts of cell a * sizes[b] + b, flattened
    one_way_std: float
    two_way_std: float
    rho: float

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier of the single Gaussian mechanism with the same privacy."""
        return 1.0 / math.sqrt(2.0 * self.rho)

    def details(self) -> dict[str, object]:
        """What the ledger records about the mechanism (no counts)."""
        return {"one_way_marginals": len(self.one_way), "two_way_marginals": len(self.pairs),
                "one_way_noise_std": self.one_way_std, "two_way_noise_std": self.two_way_std,
                "zcdp_rho": self.rho, "marginal_noise_multiplier": self.noise_multiplier}


def histograms(cells: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cell counts of each column of ``cells`` (n rows x k marginals)."""
    if cells.ndim != 2 or cells.shape[1] != len(sizes):
        raise ValueError(f"cells must have shape (n, {len(sizes)}), got {cells.shape}")
    return [np.bincount(cells[:, j], minlength=size) for j, size in enumerate(sizes)]


def pair_counts(cells: np.ndarray, sizes: Sequence[int], pairs: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Flattened two-way cell counts (cell a * size_b + b) of each pair."""
    return [np.bincount(cells[:, a] * sizes[b] + cells[:, b], minlength=sizes[a] * sizes[b]) for a, b in pairs]


def count_chunks(chunks: Iterable[np.ndarray], sizes: Sequence[int],
                 pairs: Sequence[tuple[int, int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Exact one-way and two-way counts summed over chunks of cell rows (for tables read in batches)."""
    one: list[np.ndarray] = [np.zeros(s, dtype=np.int64) for s in sizes]
    two: list[np.ndarray] = [np.zeros(sizes[a] * sizes[b], dtype=np.int64) for a, b in pairs]
    for cells in chunks:
        one = [x + y for x, y in zip(one, histograms(cells, sizes), strict=True)]
        two = [x + y for x, y in zip(two, pair_counts(cells, sizes, pairs), strict=True)]
    return one, two


def _distribution(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.full(len(counts), 1.0 / len(counts))


def dependence(cells: np.ndarray, sizes: Sequence[int], pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Total variation distance of each pair's joint distribution from the product of its marginals."""
    one, two = count_chunks([cells], sizes, pairs)
    return np.array([0.5 * np.abs(_distribution(joint) - np.outer(_distribution(one[a]), _distribution(one[b])).ravel()).sum()
                     for (a, b), joint in zip(pairs, two, strict=True)])


def choose_pairs(sizes: Sequence[int], max_pairs: int, public_cells: np.ndarray | None = None
                 ) -> list[tuple[int, int]]:
    """The two-way marginals to measure: every pair of at most ``MAX_PAIR_CELLS`` cells, or, when more
    than ``max_pairs`` qualify, those most dependent on the public table (without one: the smallest)."""
    pairs = [(a, b) for a in range(len(sizes)) for b in range(a + 1, len(sizes))
             if sizes[a] * sizes[b] <= MAX_PAIR_CELLS]
    if len(pairs) <= max_pairs:
        return pairs
    if public_cells is not None:
        order = np.argsort(-dependence(public_cells, sizes, pairs), kind="stable")
    else:
        order = np.argsort([sizes[a] * sizes[b] for a, b in pairs], kind="stable")
    return sorted(pairs[i] for i in order[:max_pairs])


def measure_marginals(chunks: Iterable[np.ndarray], sizes: Sequence[int], pairs: Sequence[tuple[int, int]],
                      rho: float, rng: np.random.Generator) -> MarginalMeasurements:
    """Release every one-way marginal and the two-way marginals of ``pairs`` as a rho-zCDP Gaussian mechanism.

    ``chunks`` yields the private rows' cells (n x k, from ``Encoder.marginal_cells``); it is read once.
    """
    sizes = tuple(int(s) for s in sizes)
    k = len(sizes)
    if k == 0:
        raise ValueError("there are no marginals to measure")
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive number, got {rho!r}")
    pairs = tuple((int(a), int(b)) for a, b in pairs)
    one, two = count_chunks(chunks, sizes, pairs)
    one_share = ONE_WAY_SHARE if pairs else 1.0
    one_std = math.sqrt(k / (2.0 * one_share * rho))
    two_std = math.sqrt(len(pairs) / (2.0 * (1.0 - one_share) * rho)) if pairs else 0.0
    return MarginalMeasurements(sizes, tuple(_noisy(c, one_std, rng) for c in one), pairs,
                                tuple(_noisy(c, two_std, rng) for c in two), one_std, two_std, rho)


def _noisy(counts: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(counts, dtype=np.float64) + rng.normal(0.0, std, size=len(counts))


__all__ = ["MAX_PAIR_CELLS", "MarginalMeasurements", "choose_pairs", "count_chunks", "dependence", "histograms",
           "measure_marginals", "pair_counts"]
