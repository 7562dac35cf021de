"""DP marginal measurements: every one-way marginal and the two-way marginals, by one Gaussian mechanism.

Which marginals are measured depends on the schema alone (every pair of at most ``MAX_PAIR_CELLS``
cells; when a cap ``max_pairs`` is set and more qualify, the smallest, or the most dependent on a
public table), so choosing them costs nothing. A number's one-way cells are fine (100 without knots); in two-way
marginals its cells merge into at most ``PAIR_RESOLUTION`` runs of about equal noisy one-way mass
(``pair_groups``: post-processing of the one-way release, so the pairs' noise is spread over few
cells where the data is). A pair that is still too large for its noise (``fine_pair_cells``: at
Adult's eps = 1, age by education, a binary code of 74 values by 16 categories) is measured
*coarse*: its ordered marginals (binary codes too) of more than ``PAIR_RESOLUTION`` values merge
into such runs as well, for that pair only, and into fewer where the noise is larger
(``coarse_resolution``). A row adds 1 to one cell of each marginal, so the release is a Gaussian mechanism with L2
sensitivity 1 per marginal; with noise std s_1 on the k_1 one-way and s_2 on the k_2 two-way
marginals it is rho-zCDP with rho = k_1 / (2 s_1^2) + k_2 / (2 s_2^2), the
same privacy as one Gaussian mechanism of noise multiplier 1 / sqrt(2 rho). That is how the
accountant composes it with DP-SGD (``accounting.compute_epsilon(..., extra_gaussian=...)``).

The unit of privacy is one row (add/remove adjacency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable, Collection, Iterable, Sequence

import numpy as np

from tabsynth.privacy.denoising import sure_tv_denoise

MAX_PAIR_CELLS = 4096  # two-way marginals with more cells than this are not measured (noise would swamp them)
PUBLIC_PAIR_CELLS = 4 * MAX_PAIR_CELLS  # the same for pairs taken from a public table (no noise to swamp them)
PAIR_RESOLUTION = 20  # a coarsened marginal enters two-way marginals with at most this many cells (plus missing)
COARSE_RESOLUTIONS = (4, PAIR_RESOLUTION)  # the fewest and most runs of an ordered marginal in coarse pairs
ONE_WAY_SHARE = 0.3  # of rho, for the one-way marginals when two-way ones are measured too
EMPTY_CELL_STDS = 2.0  # a one-way cell's noisy count below this many noise stds counts as empty in ``pair_groups``
STRAY_GAP_SHARE = 0.1  # ``_merged_runs``: at most this share of the empty cells (plus one) may pass ``empty`` by noise
# A column's noisy count of nulls below this many noise stds: it gets no synthetic nulls (``null_free``).
# At 2 stds one fit in five of Adult's discovered schema (9 never-null nullable columns) drew 0.4% nulls
# in one of them; at 3, a column with no nulls keeps a missing cell in 0.13% of fits.
NULL_FREE_STDS = 3.0
PRIOR_OUTLIER = 4.0  # stds: a cell this far from the public prior keeps its measurement (``public_prior``)
# A pair keeps its full resolution while its cells' noise stds sum to at most this share of the rows
# (``fine_pair_cells``); past it, it is measured coarse. Adult, eps = 1 (about 410 cells), 2-way TVD
# over 4 seeds: 0.0383 at 512 cells and 0.0376-0.0386 at 256, against 0.0396 at 4,096.
FINE_PAIR_NOISE = 0.75
# ``functional_map``: how many noise stds the release may lie from a function's.
FUNCTION_STDS = 3.0


@dataclass(frozen=True)
class MarginalMeasurements:
    """Noisy counts released by ``measure_marginals`` (DP outputs: safe to keep and save)."""

    sizes: tuple[int, ...]
    one_way: tuple[np.ndarray, ...]
    pairs: tuple[tuple[int, int], ...]
    two_way: tuple[np.ndarray, ...]  # pair m: counts of cell (i, j) of its ``pair_axes`` at i * columns + j
    one_way_std: float
    two_way_std: float
    rho: float
    groups: tuple[np.ndarray, ...]  # per marginal: each cell's cell in the two-way marginals
    coarse_groups: tuple[np.ndarray, ...] | None = None  # per marginal: its cells in coarse pairs (None: as groups)
    merged_groups: tuple[np.ndarray, ...] | None = None  # per marginal: its cells in merged pairs (None: none)
    public_prior: bool = False  # the counts were shrunk towards a public table's (``public_prior``)
    public_pairs: int = 0  # the last pairs are not measured: from a public table (``with_public_pairs``)
    pair_noise: tuple[float, ...] = ()  # per pair, the sum of its cells' noise stds as the counts stand (empty: raw)
    fine_cells: int = MAX_PAIR_CELLS  # a measured pair of more cells than this over ``groups`` is measured coarse
    coarse_resolution: int = PAIR_RESOLUTION  # runs of an ordered marginal in coarse pairs (``coarse_resolution``)
    smoothing: tuple[float, ...] = ()  # per one-way marginal: its TV weight in noise stds (``smoothed``; empty: raw)
    pair_smoothing: tuple[float, ...] = ()  # the same per pair, along its ordered axis (``smoothed``; empty: raw)

    def noise_of(self, m: int) -> float:
        """The sum of pair ``m``'s cells' noise stds: ``two_way_std`` each as measured, less once
        shrunk towards a public table, a public sample's own for a pair from one."""
        return self.pair_noise[m] if self.pair_noise else self.two_way_std * len(self.two_way[m])

    @property
    def pair_sizes(self) -> tuple[int, ...]:
        """Cells per marginal in the two-way marginals."""
        return tuple(int(g.max()) + 1 for g in self.groups)

    @cached_property
    def coarse(self) -> tuple[bool, ...]:
        """Per pair: measured over ``coarse_groups``, as it has more cells over ``groups`` than
        ``fine_cells`` (a public pair: ``PUBLIC_PAIR_CELLS``) and fewer over ``coarse_groups``, or
        over ``merged_groups`` (``merged``)."""
        sizes, measured = self.pair_sizes, len(self.pairs) - self.public_pairs
        coarse_sizes = tuple(int(g.max()) + 1 for g in self.coarse_groups) if self.coarse_groups else sizes
        return tuple(sizes[a] * sizes[b] > (self.fine_cells if m < measured else PUBLIC_PAIR_CELLS)
                     and (coarse_sizes[a] * coarse_sizes[b] < sizes[a] * sizes[b] or merge)
                     for m, ((a, b), merge) in enumerate(zip(self.pairs, self._needs_merging, strict=True)))

    @cached_property
    def merged(self) -> tuple[bool, ...]:
        """Per pair: measured over ``merged_groups`` (coarse, light categories merged by mass), as it
        has more cells over ``coarse_groups`` than ``MAX_PAIR_CELLS`` (a public pair:
        ``PUBLIC_PAIR_CELLS``) and fewer over ``merged_groups``: only so can it be measured at all."""
        return tuple(coarse and merge for coarse, merge in zip(self.coarse, self._needs_merging, strict=True))

    @cached_property
    def _needs_merging(self) -> tuple[bool, ...]:
        if self.merged_groups is None:
            return (False,) * len(self.pairs)
        measured = len(self.pairs) - self.public_pairs
        coarse_sizes = tuple(int(g.max()) + 1 for g in (self.coarse_groups or self.groups))
        merged_sizes = tuple(int(g.max()) + 1 for g in self.merged_groups)
        return tuple(coarse_sizes[a] * coarse_sizes[b] > (MAX_PAIR_CELLS if m < measured else PUBLIC_PAIR_CELLS)
                     and merged_sizes[a] * merged_sizes[b] < coarse_sizes[a] * coarse_sizes[b]
                     for m, (a, b) in enumerate(self.pairs))

    def pair_axes(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The groups of pair ``m``'s two marginals, as it was measured."""
        a, b = self.pairs[m]
        groups = self.merged_groups if self.merged[m] else self.coarse_groups if self.coarse[m] else self.groups
        return groups[a], groups[b]

    @property
    def total(self) -> float:
        """The noisy row total: the mean of the one-way marginals' sums (at least 1)."""
        return max(1.0, float(np.mean([counts.sum() for counts in self.one_way])))

    @property
    def relative_noise(self) -> float:
        """The noise std of a pair's cell (a one-way cell's without pairs) over the noisy row total:
        how much of the table one cell's noise is (Adult: 0.0056 at epsilon 0.3, 0.0018 at 1)."""
        return (self.two_way_std if self.pairs else self.one_way_std) / self.total

    @property
    def noise_multiplier(self) -> float:
        """The noise multiplier of the single Gaussian mechanism with the same privacy."""
        return 1.0 / math.sqrt(2.0 * self.rho)

    def null_free(self, missing: Sequence[bool]) -> tuple[int, ...]:
        """The marginals ending in a missing cell (``missing``) whose noisy count of it is below
        ``NULL_FREE_STDS`` one-way noise stds: the release cannot tell them from columns without
        nulls, whose generator would otherwise follow the noise's positive half into a few synthetic
        nulls (post-processing; a column with fewer nulls than about that many stds loses them)."""
        return tuple(j for j, (counts, has_missing) in enumerate(zip(self.one_way, missing, strict=True))
                     if has_missing and counts[-1] < NULL_FREE_STDS * self.one_way_std)

    def without_nulls(self, marginals: Collection[int]) -> MarginalMeasurements:
        """These counts with the missing cell of each of ``marginals`` (``null_free``) set to 0, one-way
        and in every pair (a missing cell is its marginal's last group): one set of targets for the fit
        and for sampling (post-processing)."""
        if not marginals:
            return self
        one_way = tuple(np.append(c[:-1], 0.0) if j in marginals else c for j, c in enumerate(self.one_way))
        two_way = []
        for m, (a, b) in enumerate(self.pairs):
            rows, columns = (int(g.max()) + 1 for g in self.pair_axes(m))
            counts = np.array(self.two_way[m], dtype=np.float64).reshape(rows, columns)
            if a in marginals:
                counts[-1, :] = 0.0
            if b in marginals:
                counts[:, -1] = 0.0
            two_way.append(counts.ravel())
        return replace(self, one_way=one_way, two_way=tuple(two_way))

    def details(self) -> dict[str, object]:
        """What the ledger records about the mechanism (no counts)."""
        measured = len(self.pairs) - self.public_pairs
        return {"one_way_marginals": len(self.one_way), "two_way_marginals": measured,
                "coarse_two_way_marginals": sum(self.coarse[:measured]),
                "two_way_marginals_with_merged_categories": sum(self.merged[:measured]), "two_way_resolution": PAIR_RESOLUTION,
                "coarse_two_way_resolution": self.coarse_resolution,
                "two_way_full_resolution_cells": self.fine_cells,
                "two_way_cells": int(sum(len(c) for c in self.two_way[:measured])),
                "one_way_noise_std": self.one_way_std, "two_way_noise_std": self.two_way_std,
                "zcdp_rho": self.rho, "marginal_noise_multiplier": self.noise_multiplier,
                "shrunk_towards_public_table": self.public_prior,
                "two_way_marginals_from_public_table": self.public_pairs,
                "one_way_marginals_smoothed": sum(weight > 0 for weight in self.smoothing),
                "two_way_marginals_smoothed": sum(weight > 0 for weight in self.pair_smoothing)}


def histograms(cells: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cell counts of each column of ``cells`` (n rows x k marginals)."""
    if cells.ndim != 2 or cells.shape[1] != len(sizes):
        raise ValueError(f"cells must have shape (n, {len(sizes)}), got {cells.shape}")
    return [np.bincount(cells[:, j], minlength=size) for j, size in enumerate(sizes)]


def pair_counts(cells: np.ndarray, sizes: Sequence[int], pairs: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Flattened two-way cell counts (cell a * size_b + b) of each pair."""
    return [np.bincount(cells[:, a] * sizes[b] + cells[:, b], minlength=sizes[a] * sizes[b]) for a, b in pairs]


def pair_groups(counts: Sequence[np.ndarray], coarsen: Sequence[bool], missing: Sequence[bool],
                resolution: int = PAIR_RESOLUTION, empty: float = 0.0,
                by_mass: Sequence[bool] | None = None) -> tuple[np.ndarray, ...]:
    """Each marginal's cells as they enter two-way marginals, from its (noisy) one-way ``counts``: a
    marginal to ``coarsen`` (ordered cells) of more than ``resolution`` values is cut into
    ``resolution`` runs of neighbouring cells (``_merged_runs``; a cell of at most ``empty`` counts
    is empty); one to merge ``by_mass`` (unordered cells: categories) of more than ``resolution``
    values keeps its heavy cells apart and joins its light ones in runs of their rank by mass
    (``_equal_mass_runs`` over the cells sorted by mass); other cells and a last, missing cell stay
    apart. Post-processing: free."""
    groups = []
    for count, coarse, ranked, has_missing in zip(counts, coarsen, by_mass or [False] * len(counts), missing,
                                                  strict=True):
        values = len(count) - int(has_missing)
        mass = np.clip(np.asarray(count[:values], dtype=np.float64), 0.0, None)
        if coarse and values > resolution:
            merged = _merged_runs(mass, resolution, empty)
        elif ranked and values > resolution:
            order = np.argsort(-mass, kind="stable")
            merged = np.empty(values, dtype=np.int64)
            merged[order] = _equal_mass_runs(mass[order], resolution)
        else:
            merged = np.arange(values)
        groups.append(np.append(merged, merged[-1] + 1) if has_missing else merged)
    return tuple(groups)


def _merged_runs(mass: np.ndarray, runs: int, empty: float) -> np.ndarray:
    """Each cell's run of neighbouring cells, at most ``runs`` of them: when at most ``runs`` cells hold
    more than ``empty`` and no two of them are neighbours (a number's point masses, with empty gaps
    between), each of those is a run and an empty cell joins the run on its left; else runs of
    about equal shares of the mass (``_equal_mass_runs``). Among many gaps, one's noise often passes
    ``empty`` (ACS's DENSITY, 20 values and 19 gaps: about a third of releases at 2 noise stds, 1 in
    1,700 at 4): the point masses are then tried at twice ``empty``, if only a few gaps
    (``STRAY_GAP_SHARE``) lie between the two, not a smooth distribution's many thin cells."""
    held = mass > empty
    attempts = [held]
    strict = mass > 2.0 * empty
    if (held & ~strict).sum() <= STRAY_GAP_SHARE * (~strict).sum() + 1:
        attempts.append(strict)
    for held in attempts:
        if 0 < held.sum() <= runs and not (held[1:] & held[:-1]).any():
            owner = np.maximum.accumulate(np.where(held, np.arange(len(mass)), -1))
            return np.unique(np.where(owner < 0, int(np.argmax(held)), owner), return_inverse=True)[1]
    return _equal_mass_runs(mass, runs)


def _equal_mass_runs(mass: np.ndarray, runs: int) -> np.ndarray:
    """Each cell's run (numbered from 0) among at most ``runs`` runs of neighbouring cells of about
    equal shares of the mass; a cell heavier than a share is a run of its own."""
    mass = mass + 1e-9
    middle = (np.cumsum(mass) - mass / 2) / mass.sum()  # where each cell's share sits, in (0, 1)
    return np.unique(np.minimum((middle * runs).astype(np.int64), runs - 1), return_inverse=True)[1]


def pair_size_bounds(sizes: Sequence[int], coarsen: Sequence[bool], missing: Sequence[bool],
                     resolution: int = PAIR_RESOLUTION, by_mass: Sequence[bool] | None = None) -> list[int]:
    """The most cells each marginal can have in two-way marginals (``pair_groups``), from the schema alone."""
    return [min(size - int(m), resolution) + int(m) if c or r else size
            for size, c, r, m in zip(sizes, coarsen, by_mass or [False] * len(sizes), missing, strict=True)]


def group_cells(cells: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Rows of one-way cells -> their cells in the two-way marginals."""
    return np.column_stack([g[cells[:, j]] for j, g in enumerate(groups)])


def _fold(counts: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Fine two-way counts (flattened) -> counts over the row and column groups (flattened)."""
    index = rows[:, None] * (int(columns.max()) + 1) + columns[None, :]
    return np.bincount(index.ravel(), weights=counts, minlength=(int(rows.max()) + 1) * (int(columns.max()) + 1))


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
    """Total variation distance of each pair's joint distribution from the product of its marginals
    (``cells`` and ``sizes`` as they enter the pairs)."""
    one, two = count_chunks([cells], sizes, pairs)
    return np.array([0.5 * np.abs(_distribution(joint) - np.outer(_distribution(one[a]), _distribution(one[b])).ravel()).sum()
                     for (a, b), joint in zip(pairs, two, strict=True)])


def choose_pairs(sizes: Sequence[int], max_pairs: int | None, public_cells: np.ndarray | None = None,
                 coarse_sizes: Sequence[int] | None = None, public_coarse_cells: np.ndarray | None = None,
                 max_cells: int = MAX_PAIR_CELLS, merged_sizes: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """The two-way marginals to measure: every pair of at most ``max_cells`` cells (over
    ``coarse_sizes`` where ``sizes`` give it more, over ``merged_sizes`` where those do: only without a
    public table, which gives such pairs itself), or, when more than ``max_pairs`` qualify (None: no
    cap), those most dependent on the public table (without one: the smallest). ``sizes`` and
    ``public_cells`` are as the marginals enter the pairs (after ``pair_groups``), ``coarse_*`` as
    they enter coarse pairs."""
    if merged_sizes is not None and public_cells is not None:
        raise ValueError("merged pairs are measured only without a public table")
    levels = [(sizes, public_cells)]
    levels.append((sizes if coarse_sizes is None else coarse_sizes,
                   public_cells if public_coarse_cells is None else public_coarse_cells))
    levels.append((levels[1][0] if merged_sizes is None else merged_sizes, levels[1][1]))
    chosen: list[list[tuple[int, int]]] = [[], [], []]
    for a in range(len(sizes)):
        for b in range(a + 1, len(sizes)):
            level = next((i for i, (s, _) in enumerate(levels) if s[a] * s[b] <= max_cells), None)
            if level is not None:
                chosen[level].append((a, b))
    pairs = [pair for level in chosen for pair in level]
    if max_pairs is None or len(pairs) <= max_pairs:
        return sorted(pairs)
    if public_cells is not None:
        score = -np.concatenate([dependence(cells, s, level) for (s, cells), level in zip(levels, chosen, strict=True)])
    else:
        score = np.array([s[a] * s[b] for (s, _), level in zip(levels, chosen, strict=True) for a, b in level])
    return sorted(pairs[i] for i in np.argsort(score, kind="stable")[:max_pairs])


def public_prior(measured: MarginalMeasurements, public_cells: np.ndarray) -> MarginalMeasurements:
    """The release with every marginal's noisy counts shrunk towards the public table's (empirical
    Bayes; post-processing of the release and public data, so free).

    Model per marginal: a private count is the public count (scaled to the noisy total) plus a change
    of variance ``k`` times the public count (a cell's change grows with its size, as sampling noise
    does), measured with the noise's variance s^2. ``k`` is estimated from the marginal itself (the
    squared deviations beyond the noise's share, over the public total) and each cell gets the
    posterior mean: the public count plus k q / (k q + s^2) of the deviation. Where the years agree
    (k small) the estimate follows the public table and sheds most of the noise; where they differ
    (k large) it follows the measurement. A cell that lies more than ``PRIOR_OUTLIER`` stds of that
    model from the public count (a category new this year, a real shift) keeps its measurement.
    ``public_cells``: the public rows' one-way cells (``Encoder.marginal_cells``)."""
    public_one, public_two = count_chunks([public_cells], measured.sizes, measured.pairs)
    one_way = tuple(_shrink(y, q, measured.one_way_std, measured.total)[0]
                    for y, q in zip(measured.one_way, public_one, strict=True))
    shrunk = [_shrink(y, _fold(q, *measured.pair_axes(m)), measured.two_way_std, measured.total)
              for m, (y, q) in enumerate(zip(measured.two_way, public_two, strict=True))]
    return replace(measured, one_way=one_way, two_way=tuple(counts for counts, _ in shrunk), public_prior=True,
                   pair_noise=tuple(noise for _, noise in shrunk))


def with_public_pairs(measured: MarginalMeasurements, public_cells: np.ndarray,
                      pairs: Sequence[tuple[int, int]]) -> MarginalMeasurements:
    """The release plus the two-way marginals of ``pairs``, which were not measured, from the public
    table: each public pair's counts raked (iterative proportional fitting) to the release's one-way
    marginals, so a pair keeps the public table's dependence and the private table's margins. Only
    for the marginal fit's targets: without them a pair nobody measured is free to take any
    dependence (ACS: sex by marital status 0.13 TVD, against 0.01 between the two years).
    Post-processing of the release and public data."""
    pairs = [(int(a), int(b)) for a, b in pairs]
    if not pairs:
        return measured
    if measured.public_pairs or set(pairs) & set(measured.pairs):
        raise ValueError("public pairs must be new pairs of a release without public pairs")
    public_two = count_chunks([public_cells], measured.sizes, pairs)[1]
    extended = replace(measured, pairs=measured.pairs + tuple(pairs), public_pairs=len(pairs))
    one_way = [np.clip(counts, 0.0, None) for counts in measured.one_way]
    two_way, noise = [], []
    for m, ((a, b), counts) in enumerate(zip(pairs, public_two, strict=True), start=len(measured.pairs)):
        rows, columns = extended.pair_axes(m)
        margins = [np.bincount(groups, weights=one_way[j], minlength=int(groups.max()) + 1)
                   for j, groups in ((a, rows), (b, columns))]
        folded = _fold(counts, rows, columns)
        raked = _raked(folded.reshape(len(margins[0]), len(margins[1])), *margins).ravel()
        two_way.append(raked * (measured.total / raked.sum()) if raked.sum() > 0 else raked)
        noise.append(float(np.sqrt(folded).sum()) * measured.total / max(1, len(public_cells)))  # binomial, scaled
    return replace(extended, two_way=measured.two_way + tuple(two_way),
                   pair_noise=tuple(measured.noise_of(m) for m in range(len(measured.pairs))) + tuple(noise))


def pooled_one_way(measured: MarginalMeasurements, iterations: int = 50) -> MarginalMeasurements:
    """The release with each one-way marginal replaced by its least-squares estimate from every
    measurement of it: its own noisy counts and the margins of its pairs (post-processing: free).

    A pair's margin on a column is a second measurement of that column's counts, summed over the
    column's groups in the pair (``pair_axes``), with the noise of the other axis's cells added up
    (variance: their number times ``two_way_std`` squared). The generalised least-squares estimate
    weights each measurement by its precision; within a group it spreads a margin's correction
    evenly over the group's cells, whose noise is alike. Only for the raw release (no public prior,
    no public pairs), whose noise is the same in every cell of a kind."""
    if measured.public_prior or measured.public_pairs:
        raise ValueError("pooling needs the raw release (no public prior, no public pairs)")
    if not measured.pairs:
        return measured
    # Per marginal and kind of groups its pairs use: the groups, the precision-weighted sum of the
    # pairs' margins over them, and the pairs' summed precision.
    margins: list[dict[str, tuple[np.ndarray, np.ndarray, float]]] = [{} for _ in measured.one_way]
    for m, (a, b) in enumerate(measured.pairs):
        kind = "merged" if measured.merged[m] else "coarse" if measured.coarse[m] else "fine"
        rows, columns = measured.pair_axes(m)
        joint = np.asarray(measured.two_way[m], dtype=np.float64).reshape(int(rows.max()) + 1, int(columns.max()) + 1)
        for j, groups, margin, others in ((a, rows, joint.sum(1), joint.shape[1]), (b, columns, joint.sum(0), joint.shape[0])):
            precision = 1.0 / (others * measured.two_way_std**2)
            _, summed, total = margins[j].get(kind, (groups, 0.0, 0.0))
            margins[j][kind] = (groups, summed + precision * margin, total + precision)
    own = 1.0 / measured.one_way_std**2
    return replace(measured, one_way=tuple(
        _least_squares(np.asarray(counts, dtype=np.float64), own, list(terms.values()), iterations)
        for counts, terms in zip(measured.one_way, margins, strict=True)))


def smoothed(measured: MarginalMeasurements, ordered: Sequence[bool], missing: Sequence[bool],
             codes: Sequence[bool]) -> MarginalMeasurements:
    """The release with its ordered sequences denoised by total variation (``sure_tv_denoise``): each
    ``ordered`` one-way marginal (binary codes, a number's segments) of more than two values, and in
    each pair that holds one of the ``codes`` (ordered marginals of one value per cell: binary
    codes) at full resolution, every row along it (the longer one if both are), one weight per
    pair, unless the release shows one of the pair a function of the other. Missing cells
    (``missing``) stay apart. The noise averages out of flat runs and empty range ends; jumps and
    point masses stay (post-processing: free).

    A pair's rows are not smoothed along a number's segments: against a strongly dependent number
    each row is a narrow peak over segments of unequal widths, which smoothing spreads (California
    without a schema, eps = 1, 2-way TVD over three seeds 0.116 before, 0.119 with them smoothed).

    Apply after ``pooled_one_way``: a one-way cell's noise std is that of a pooled cell, from its own
    count and the margins of the pairs that hold it at full resolution (a coarse pair's margin
    informs only its runs' sums); a pair's is ``two_way_std``."""
    if measured.public_prior or measured.public_pairs:
        raise ValueError("smoothing needs the raw release (no public prior, no public pairs)")
    precision = np.full(len(measured.sizes), measured.one_way_std**-2.0)
    two_way, pair_weights = [], []
    for m, (a, b) in enumerate(measured.pairs):
        rows, columns = measured.pair_axes(m)
        shape = (int(rows.max()) + 1, int(columns.max()) + 1)
        joint = np.array(measured.two_way[m], dtype=np.float64).reshape(shape)
        fine_ordered = []
        for axis, j, others in ((0, a, shape[1]), (1, b, shape[0])):
            if shape[axis] == measured.sizes[j]:  # at full resolution
                precision[j] += 1.0 / (others * measured.two_way_std**2)
                if codes[j] and shape[axis] - int(missing[j]) > 2:
                    fine_ordered.append((shape[axis] - int(missing[j]), axis))
        weight = 0.0
        # A pair the release shows to be a function (a code and its label) is left for ``functional_map``
        # to find: smoothing would move mass off the function.
        if fine_ordered and functional_map(measured, a, b) is None and functional_map(measured, b, a) is None:
            values, axis = max(fine_ordered)
            along = joint if axis == 0 else joint.T  # a view with the code's cells down its rows
            smooth, weight = sure_tv_denoise(along[:values].T, measured.two_way_std)  # a sequence per other cell
            along[:values] = smooth.T
        two_way.append(joint.ravel())
        pair_weights.append(weight)
    one_way, weights = [], []
    for counts, is_ordered, has_missing, cell_precision in zip(measured.one_way, ordered, missing, precision,
                                                                strict=True):
        counts = np.array(counts, dtype=np.float64)
        values = len(counts) - int(has_missing)
        weight = 0.0
        if is_ordered and values > 2:
            counts[:values], weight = sure_tv_denoise(counts[:values], float(cell_precision) ** -0.5)
        one_way.append(counts)
        weights.append(weight)
    return replace(measured, one_way=tuple(one_way), two_way=tuple(two_way), smoothing=tuple(weights),
                   pair_smoothing=tuple(pair_weights))


def _least_squares(counts: np.ndarray, own: float, margins: Sequence[tuple[np.ndarray, np.ndarray, float]],
                   iterations: int) -> np.ndarray:
    """``pooled_one_way`` for one marginal: its ``counts`` of precision ``own`` per cell and ``margins``,
    each (groups, the precision-weighted sum of the margins over them, their summed precision)."""
    def normal(x: np.ndarray) -> np.ndarray:  # the normal equations' matrix times x
        return own * x + sum(precision * np.bincount(groups, weights=x, minlength=len(summed))[groups]
                             for groups, summed, precision in margins)

    right = own * counts + sum(summed[groups] for groups, summed, _ in margins)
    return _conjugate_gradients(normal, right, counts, iterations)


def _conjugate_gradients(apply: Callable[[np.ndarray], np.ndarray], right: np.ndarray, start: np.ndarray,
                         iterations: int) -> np.ndarray:
    """x with ``apply(x) = right`` for a symmetric positive definite ``apply``, from ``start``."""
    x = start.copy()
    residual = right - apply(x)
    direction, norm = residual.copy(), float(residual @ residual)
    tolerance = 1e-24 * float(right @ right)
    for _ in range(iterations):
        if norm <= tolerance:
            break
        step = apply(direction)
        alpha = norm / float(direction @ step)
        x += alpha * direction
        residual -= alpha * step
        norm, previous = float(residual @ residual), norm
        direction = residual + (norm / previous) * direction
    return x


def _raked(table: np.ndarray, rows: np.ndarray, columns: np.ndarray, iterations: int = 25) -> np.ndarray:
    """``table`` scaled by rows and columns towards the margins ``rows`` and ``columns`` (same total)."""
    table = table.astype(np.float64, copy=True)
    columns = columns * (rows.sum() / max(columns.sum(), 1e-12))
    for _ in range(iterations):
        for axis, target in ((1, rows), (0, columns)):
            sums = table.sum(axis)
            factor = np.divide(target, sums, out=np.zeros_like(target), where=sums > 0)
            table *= factor[:, None] if axis == 1 else factor[None, :]
    return table


def _shrink(noisy: np.ndarray, public: np.ndarray, std: float, total: float) -> tuple[np.ndarray, float]:
    """``public_prior`` for one marginal: noisy counts, public counts (over the same cells) -> the
    shrunk counts and the sum of their cells' noise stds (a cell keeps that share of the noise)."""
    if public.sum() <= 0:
        return noisy, std * len(noisy)
    prior = public * (total / public.sum())
    deviation = noisy - prior
    change = max(0.0, float((deviation**2).sum()) - len(noisy) * std**2) / prior.sum()
    variance = change * prior
    weight = np.where(np.abs(deviation) > PRIOR_OUTLIER * np.sqrt(variance + std**2), 1.0,
                      variance / (variance + std**2))
    return prior + weight * deviation, std * float(weight.sum())


def noisy_dependence(measured: MarginalMeasurements) -> np.ndarray:
    """Per pair, how far its noisy joint distribution lies from the product of its own
    margins (total variation), less what the noise alone adds to that distance on average (half
    the sum of its cells' mean absolute noise, over the total: ``noise_of``, which also covers counts
    shrunk towards a public table and a public sample's own chance dependence). Post-processing."""
    scores = []
    for m, counts in enumerate(measured.two_way):
        rows, columns = (int(g.max()) + 1 for g in measured.pair_axes(m))
        joint = _distribution(np.clip(counts, 0.0, None)).reshape(rows, columns)
        product = np.outer(joint.sum(1), joint.sum(0))
        noise = 0.5 * math.sqrt(2.0 / math.pi) * measured.noise_of(m) / measured.total
        scores.append(0.5 * float(np.abs(joint - product).sum()) - noise)
    return np.array(scores)


def dependence_stars(measured: MarginalMeasurements, names: Sequence[str], eligible: Sequence[bool],
                     min_dependence: float, max_parents: int = 3) -> list[tuple[str, str]]:
    """Parent -> child edges of a graph one level deep: the pairs the release shows to be functions
    (``functional_map``) first, then the strongest (``noisy_dependence``; all above ``min_dependence``,
    ``eligible`` marginals, full resolution), each joining a parent (never a child) to a child (never
    a parent) of at most ``max_parents`` parents. Post-processing.

    One level, because a pair of a column and its ancestor is estimated from the ancestor's draws
    (``training.MarginalLoss``), a noisier estimate than two columns' probabilities: in a tree (a
    Chow-Liu forest, tried first) a root is every column's ancestor, and its pairs with distant
    descendants fitted worse (Adult, ε = 1000: age × education 0.10 TVD against 0.07 without edges)."""
    scores = noisy_dependence(measured)
    candidates = [m for m, (a, b) in enumerate(measured.pairs)
                  if eligible[a] and eligible[b] and not measured.coarse[m] and scores[m] > min_dependence]
    # A pair the release shows to be a function goes first, in the function's direction: its score
    # carries the noise of all its cells (ACS without public data: PUMA x DENSITY, 400 cells,
    # 0.11, below pairs of 180 cells that are no functions), and no other edge can carry it.
    functions = {m: next(((a, b) for a, b in (measured.pairs[m], measured.pairs[m][::-1])
                          if functional_map(measured, a, b) is not None), None) for m in candidates}
    candidates.sort(key=lambda m: (functions[m] is None, -scores[m]))
    parents: dict[int, list[int]] = {}  # child -> its parents
    for m in candidates:
        a, b = functions[m] or measured.pairs[m]
        for parent, child in ((a, b),) if functions[m] else ((a, b), (b, a)):
            is_parent = any(child in ps for ps in parents.values())
            if parent not in parents and not is_parent and len(parents.get(child, [])) < max_parents:
                parents.setdefault(child, []).append(parent)
                break
    return [(names[p], names[c]) for c in sorted(parents) for p in parents[c]]


def functional_map(measured: MarginalMeasurements, parent: int, child: int) -> np.ndarray | None:
    """If the release shows marginal ``child`` to be a function of marginal ``parent`` (their pair at
    its groups, ``pair_axes``): per parent group, the child group it determines, or -1 where the
    release is not sure of it; else None. Post-processing of the release.

    The function is each parent group's heaviest child group, and the release must lie within
    ``FUNCTION_STDS`` noise stds of it three ways: the pair's mass off the function, over all of it
    and in each parent group's row; then the child groups' one-way counts against the sums of their
    parents' (chi-square against its mean and std over the child groups, and no group past
    ``FUNCTION_STDS`` + 1 stds: spread over 20 groups, the chi-square let race -> capital loss pass
    at eps = 0.3, every race sent to no loss, its 1,500 rows with a loss some 5 stds off in one
    group). The pair tolerates as many rows off as the noise of its many cells could hide (race ->
    native country in Adult at eps = 1: 2,808 rows off against about 2,700), its rows fewer (White:
    about 2,300 against 1,200), and the one-way counts far fewer (each std 36 there; that function
    sends all of 3,400 foreign-born rows to the United States). A parent group whose function cell
    is within the noise of empty is not sure (-1): its rows may be anywhere, which the one-way test
    allows for up to their total (a discovered native country of two values at eps = 0.3 passed as a
    function of education-num when those rows' total counted as a noise std of every child group).
    """
    m = next((m for m, pair in enumerate(measured.pairs) if pair in ((parent, child), (child, parent))), None)
    if m is None:
        raise ValueError(f"marginals {parent} and {child} have no measured pair")
    rows, columns = measured.pair_axes(m)
    joint = np.asarray(measured.two_way[m], dtype=np.float64).reshape(int(rows.max()) + 1, int(columns.max()) + 1)
    parent_groups, child_groups = rows, columns
    if measured.pairs[m] != (parent, child):
        joint, parent_groups, child_groups = joint.T, columns, rows
    second = joint.shape[1]  # the child's groups
    cell_std = measured.noise_of(m) / joint.size
    image = joint.argmax(axis=1)
    on_function = joint[np.arange(len(joint)), image]
    off_row = joint.sum(axis=1) - on_function
    if (off_row.sum() > FUNCTION_STDS * cell_std * math.sqrt(joint.size - len(joint))
            or np.any(off_row > FUNCTION_STDS * cell_std * math.sqrt(second - 1))):
        return None
    sure = on_function > FUNCTION_STDS * cell_std
    parent_counts = np.bincount(parent_groups, weights=measured.one_way[parent], minlength=len(joint))
    parent_cells = np.bincount(parent_groups, minlength=len(joint))
    predicted = np.bincount(image[sure], weights=parent_counts[sure], minlength=second)
    cells = np.bincount(child_groups, minlength=second) + np.bincount(image[sure], weights=parent_cells[sure],
                                                                      minlength=second)
    # The rows of parent groups too light to be sure of may be in any child group, but no more of them
    # than they hold: an excess beyond their total is the noise's to explain.
    unsure_rows = float(np.sum(np.clip(parent_counts[~sure], 0.0, None)))
    deviation = np.bincount(child_groups, weights=measured.one_way[child], minlength=second) - predicted
    unexplained = deviation - np.clip(deviation, 0.0, unsure_rows)
    squared = unexplained**2 / (measured.one_way_std**2 * cells)
    if (squared.sum() > second + FUNCTION_STDS * math.sqrt(2.0 * second)
            or squared.max() > (FUNCTION_STDS + 1) ** 2):
        return None
    return np.where(sure, image, -1)


def measure_marginals(chunks: Iterable[np.ndarray], sizes: Sequence[int], pairs: Sequence[tuple[int, int]],
                      rho: float, rng: np.random.Generator, coarsen: Sequence[bool] | None = None,
                      missing: Sequence[bool] | None = None, ordered: Sequence[bool] | None = None,
                      unordered: Sequence[bool] | None = None, coarse_runs: int | None = None) -> MarginalMeasurements:
    """Release every one-way marginal and the two-way marginals of ``pairs`` as a rho-zCDP Gaussian mechanism.

    ``chunks`` yields the private rows' cells (n x k, from ``Encoder.marginal_cells``); it is read once.
    The two-way marginals are over ``pair_groups`` of the noisy one-way marginals (``coarsen`` and
    ``missing`` say which marginals may be coarsened and which end in a missing cell; None: none); a
    pair of more than ``fine_pair_cells`` cells so is measured over coarse groups, in which the
    ``ordered`` marginals (default: those to ``coarsen``) are coarsened too; a pair still larger than
    ``MAX_PAIR_CELLS`` so is measured with the light cells of its ``unordered`` marginals (categories;
    default: none) merged by mass as well (``pair_groups``). A coarse pair's ordered marginals of more
    than ``PAIR_RESOLUTION`` values merge into ``coarse_runs`` runs (None: ``coarse_resolution`` of the
    noise; a release to be shrunk towards a public table keeps ``PAIR_RESOLUTION``, as the public shape
    fills the cells that the noise alone would swamp: ACS 2019 beside 2018, 2-way TVD 0.0317 with 20
    runs, 0.0359 with 15).
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
    noisy_one = tuple(_noisy(c, one_std, rng) for c in one)
    coarsen, missing = coarsen or [False] * k, missing or [False] * k
    empty = EMPTY_CELL_STDS * one_std
    groups = pair_groups(noisy_one, coarsen, missing, empty=empty)
    measured = MarginalMeasurements(sizes, noisy_one, pairs, (), one_std, two_std, rho, groups)
    fine = fine_pair_cells(two_std, measured.total) if pairs else MAX_PAIR_CELLS
    runs = coarse_resolution(fine) if coarse_runs is None else int(coarse_runs)
    # Fewer runs only where there were more than PAIR_RESOLUTION values: a code of a few values (Adult's
    # 16 years of education) keeps them, as merging them blurs the pairs that tie it to its label.
    coarse = [(c or o) and size - int(m) > PAIR_RESOLUTION
              for c, o, size, m in zip(coarsen, ordered or coarsen, sizes, missing, strict=True)]
    coarse_groups = pair_groups(noisy_one, coarse, missing, resolution=runs, empty=empty)
    merged_groups = None
    if unordered:  # categories merge by mass into PAIR_RESOLUTION runs whatever the noise; the rest as coarse
        by_mass = pair_groups(noisy_one, [False] * k, missing, empty=empty, by_mass=unordered)
        merged_groups = tuple(m if u else c for m, c, u in zip(by_mass, coarse_groups, unordered, strict=True))
    measured = replace(measured, coarse_groups=coarse_groups, merged_groups=merged_groups, fine_cells=fine,
                       coarse_resolution=runs)
    axes = [measured.pair_axes(m) for m in range(len(pairs))]
    noisy_two = tuple(_noisy(_fold(c, rows, columns), two_std, rng)
                      for (rows, columns), c in zip(axes, two, strict=True))
    return replace(measured, two_way=noisy_two)


def fine_pair_cells(two_way_std: float, total: float) -> int:
    """The most cells a pair may have at full resolution: while their noise stds sum to at most
    ``FINE_PAIR_NOISE`` of the (noisy) row total, at most ``MAX_PAIR_CELLS``. A larger pair holds more
    noise than signal in most cells (Adult at eps = 1: age x education, 1,184 cells of 27 rows on
    average, each with a noise std of 60); measured over runs of its ordered marginals, each cell
    holds more rows for the same noise. Post-processing of the one-way release."""
    return int(min(MAX_PAIR_CELLS, FINE_PAIR_NOISE * total / two_way_std))


def coarse_resolution(fine_cells: int) -> int:
    """How many runs an ordered marginal merges into in coarse pairs: about the square root of
    ``fine_cells``, so that a coarse pair of two numbers holds about as many cells as a fine pair may
    (within ``COARSE_RESOLUTIONS``). Adult at eps = 1 keeps 20 runs; a table of 24 columns and 20,000
    rows (276 pairs, a noise std of 105 per pair cell) gets 11, and its 2-way TVD falls 0.113 -> 0.101."""
    fewest, most = COARSE_RESOLUTIONS
    return int(min(most, max(fewest, math.isqrt(max(int(fine_cells), 0)))))


def _noisy(counts: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``counts`` plus Gaussian noise of ``std``, rounded to a power-of-two grid at 1/64 of ``std`` or
    finer: post-processing that leaves none of the low-order bits in which a floating-point sample's
    gaps could tell which count it came from (Mironov 2012's attack on Laplace samples; Jin et al. 2022
    on Gaussian ones). The rounding adds under 1% of the noise's std."""
    noisy = np.asarray(counts, dtype=np.float64) + rng.normal(0.0, std, size=len(counts))
    grid = 2.0 ** math.floor(math.log2(std / 64.0))
    return np.round(noisy / grid) * grid


__all__ = ["MAX_PAIR_CELLS", "PAIR_RESOLUTION", "PUBLIC_PAIR_CELLS", "MarginalMeasurements", "choose_pairs", "coarse_resolution",
           "count_chunks", "dependence",
           "dependence_stars", "fine_pair_cells", "functional_map", "group_cells", "histograms", "measure_marginals", "noisy_dependence", "pair_counts",
           "pair_groups", "pair_size_bounds", "pooled_one_way", "public_prior", "smoothed", "with_public_pairs"]
