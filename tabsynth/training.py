"""The DP-GAN training loop: DP-SGD discriminator steps on Poisson batches, free generator steps."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Collection, Literal, Mapping, Sequence

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.func import grad

from tabsynth.encoding import CellSpec
from tabsynth.models import Discriminator, DrawnCells, Generator, SoftCells
from tabsynth.privacy.accounting import compute_epsilon
from tabsynth.privacy.clipping import ClippingSchedule, group_norms, positive_bounds, quantile_count_noise
from tabsynth.privacy.marginals import MarginalMeasurements, functional_map
from tabsynth.privacy.dp_sgd import (ClippingGroups, PrivateStep, linear_group_norms, mean_loss, per_example_gradients,
                                     poisson_sample, privatize, privatize_linear)
from tabsynth.store import CompactStore

Objective = Literal["wgan-gp", "gan"]
# Generator rows per step that fits the DP marginals alone (Adult: 4,000 steps of 512 fit better than 3,000 of 1,024).
MARGINAL_BATCH = 512
# Weight of the marginal loss's squared term against its L1 term: they pull alike on an error of
# 1 / (2 * SQUARED_WEIGHT) of the rows. Adult, eps = 1, marginal fit alone, mean of two seeds:
# categorical-pair TVD 0.046 without it, 0.041 at 100.
SQUARED_WEIGHT = 100.0
# Below this relative noise of the marginals (``MarginalMeasurements.relative_noise``) the marginal fit
# runs in full (its learning rate and step count); above, its effort falls in proportion, to a third:
# fitting noisy targets hard fits their noise. Adult (3 seeds): rate 0.006 against 0.003 fits the
# pairs better at eps 1 and 3 (relative noise 0.0018, 0.0007; 2-way TVD -0.002, -0.003) and worse at
# eps 0.3 (0.0056; +0.002, HGB AUC -0.005); 5,000 steps against 4,000 likewise. Since the generator
# draws codes as values, eps 0.3 fits better still at 0.002 than at 0.003 (seeds 1 / 2: 2-way TVD
# 0.0761 / 0.0765 against 0.0800 / 0.0791).
MARGINAL_NOISE_REF = 0.002
MIN_MARGINAL_EFFORT = 1 / 3
MIN_MARGINAL_STEP_SHARE = 0.8  # the step count follows the effort down to this share of its full count
# A conditioning edge's weight for a parent value's child where the child is a function of the parent
# (``initial_edge_weights``): any other child value is e^-40 as likely. Adult, eps = 1, seeds 0-3, the
# same DP noise in both: 2-way TVD 0.0383 against 0.0391 without (education -> education-num), cat-pair
# 0.0342 against 0.0357 (against the test split); only the rows with a top cell of 80% of their noisy
# mass so: 0.0389.
FUNCTION_WEIGHT = 20.0
PUBLIC_NORM_BATCH = 256  # public rows per estimate of the per-group gradient norms (adaptive clipping)


@dataclass(frozen=True)
class TrainingPlan:
    """Everything the accountant needs, fixed before the first step: q, T, sigma, delta, and the noise
    multiplier of the whole-table Gaussian mechanisms composed with the steps (the DP marginals, and
    domain discovery's release when there is one; None: neither)."""

    steps: int
    sample_rate: float
    expected_batch_size: float
    noise_multiplier: float
    delta: float
    accountant: str
    gaussian_noise_multiplier: float | None = None


def wgan_gp_loss(gp_weight: float) -> Callable[..., torch.Tensor]:
    """Per-example WGAN-GP critic loss: D(fake) - D(real) + gp_weight * (|grad D(interpolate)| - 1)^2."""

    def loss(model_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
             alpha: torch.Tensor) -> torch.Tensor:
        interpolate = alpha * real + (1 - alpha) * fake
        slope = grad(model_fn)(interpolate)
        norm = torch.sqrt((slope**2).sum() + 1e-12)
        return model_fn(fake) - model_fn(real) + gp_weight * (norm - 1.0) ** 2

    return loss


def gan_loss(model_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
             alpha: torch.Tensor) -> torch.Tensor:
    """Per-example standard GAN discriminator loss (logistic)."""
    return torch.nn.functional.softplus(-model_fn(real)) + torch.nn.functional.softplus(model_fn(fake))


def gan_row_losses(scores: torch.Tensor) -> torch.Tensor:
    """``gan_loss`` split by row: scores of shape (2, B), real rows first, fakes second."""
    return torch.stack([torch.nn.functional.softplus(-scores[0]), torch.nn.functional.softplus(scores[1])])


class _GramWorkspace:
    """Buffers of square matrices that ``_GatheredGram`` reuses from step to step, by role, dtype,
    device and count: allocating them afresh each step cost more than the products (page faults on
    tens of megabytes). One forward or backward at a time uses them (``lock``)."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.lock = threading.Lock()
        self._buffers: dict[tuple[str, torch.dtype, torch.device, int], torch.Tensor] = {}

    def buffer(self, role: str, dtype: torch.dtype, device: torch.device, count: int = 1) -> torch.Tensor:
        """``count`` width x width matrices, zeros when first made; the "gradient" ones are returned to zeros after use."""
        key = (role, dtype, device, count)
        if key not in self._buffers:
            self._buffers[key] = torch.zeros((count, self.width, self.width), dtype=dtype, device=device)
        return self._buffers[key]


class _GatheredGram(torch.autograd.Function):
    """Some cells of each ``rows[i] @ rows[i].T`` (``rows``: parts x cells x batch rows; flat indices
    ``cells``, unique; ``mirrored``: the same cells transposed), one row of values per part.

    The backward is one batched product, ``(grad + grad.T) @ rows`` with the gradient scattered into
    the workspace's zeros, where autograd's would take two products, a transposed sum and fresh
    square buffers. Under autocast float32 rows are multiplied in the autocast dtype, as autograd's
    product would be; other dtypes as they are.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, rows: torch.Tensor, cells: torch.Tensor,
                mirrored: torch.Tensor, workspace: _GramWorkspace) -> torch.Tensor:
        device = rows.device.type
        autocast = torch.is_autocast_enabled(device) and rows.dtype == torch.float32
        dtype = torch.get_autocast_dtype(device) if autocast else rows.dtype
        with torch.autocast(device, enabled=False), workspace.lock:
            cast = rows.to(dtype)
            product = workspace.buffer("product", dtype, rows.device, len(rows))
            torch.bmm(cast, cast.transpose(1, 2), out=product)
            values = product.view(len(rows), -1).index_select(1, cells)
        ctx.save_for_backward(rows, cells, mirrored)
        ctx.workspace = workspace
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, cells, mirrored = ctx.saved_tensors
        workspace = ctx.workspace
        with workspace.lock:
            square = workspace.buffer("gradient", grad.dtype, grad.device, len(rows))
            flat = square.view(len(rows), -1)
            try:
                flat.index_copy_(1, cells, grad)  # onto zeros: the cells are unique
                flat.index_add_(1, mirrored, grad)  # a cell on the diagonal, or read both ways, adds up
                result = torch.bmm(square, rows.to(grad.dtype)).to(rows.dtype)
            finally:
                flat.index_fill_(1, cells, 0.0)
                flat.index_fill_(1, mirrored, 0.0)
        return result, None, None, None


class MarginalLoss:
    """Distance between a batch's soft marginals and the DP-measured ones (post-processing): per
    marginal, the L1 distance plus ``SQUARED_WEIGHT`` times the squared one, averaged over marginals.

    The targets are the noisy counts over the DP total, negative cells kept: L1 is robust to the
    noise and clipping would bias the empty cells upwards. L1 pulls on every cell alike, however
    wrong; the squared term pulls hardest on the largest errors (a strongly dependent pair, such as
    a code and its label, still fitted as nearly independent). It is the product of the errors of
    two half-batches, which is unbiased: a single batch's square would add the estimate's variance
    and so reward soft rows over sharp ones. A pair's batch estimate is the mean of
    each row's outer product of cell probabilities (a mixture of product distributions), over the
    cells as they enter the pairs (coarsened by ``measured.groups``, or ``coarse_groups`` for a pair
    measured coarse); all pairs come from one Gram matrix of the rows' cell probabilities on every
    such axis, O(batch * cells^2). ``specs`` locate the cells in the generator's raw outputs
    (``OutputHeads.raw_cell_specs``).
    """

    def __init__(self, specs: Sequence[CellSpec], measured: MarginalMeasurements, device: torch.device | str,
                 ancestors: Mapping[str, Collection[str]] | None = None) -> None:
        sizes = list(measured.sizes)
        if [spec.size for spec in specs] != sizes:
            raise ValueError("the measured marginals do not match the encoder's cells")
        self.cells = SoftCells(specs).to(device)
        total = measured.total
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        width = int(offsets[-1])
        names = [spec.name for spec in specs]
        ancestors = ancestors or {}
        # The Gram matrix's axes, keyed (marginal, coarse, drawn): every marginal as it enters pairs,
        # then, once each, as it enters coarse pairs where that differs (a category is the same in
        # both), and as its drawn cells where it enters a pair beside one of its descendants.
        axes: dict[tuple[int, bool, bool], np.ndarray] = {(j, False, False): g for j, g in enumerate(measured.groups)}
        pair_keys = []
        for m, (a, b) in enumerate(measured.pairs):
            keys = []
            for j, other, groups in zip((a, b), (b, a), measured.pair_axes(m)):
                key = (j, measured.coarse[m] and not np.array_equal(groups, measured.groups[j]),
                       names[j] in ancestors.get(names[other], ()))
                axes.setdefault(key, groups)
                keys.append(key)
            pair_keys.append(keys)
        # Only the axes some pair reads: a number measured coarse in every pair it enters would
        # otherwise keep its fine axis in the Gram matrix unread, at a cost quadratic in its width.
        read = {key for keys in pair_keys for key in keys}
        axes = {key: groups for key, groups in axes.items() if key in read}
        # Rows of the drawn cells, after the soft cells' rows: one block per marginal drawn in some pair.
        drawn_marginals = list(dict.fromkeys(j for j, _, drawn in axes if drawn))
        self.drawn_names = [names[j] for j in drawn_marginals]
        drawn_start = dict(zip(drawn_marginals, width + np.cumsum([0] + [sizes[j] for j in drawn_marginals])))
        axis_start, source, column, pair_width = {}, [], [], 0
        for (j, coarse, drawn), groups in sorted(axes.items(), key=lambda item: item[0][2]):  # soft axes first
            if drawn and not any(key[2] for key in axis_start):
                self.soft_width = pair_width
            axis_start[j, coarse, drawn] = pair_width
            source.append((drawn_start[j] if drawn else offsets[j]) + np.arange(sizes[j]))
            column.append(pair_width + groups)
            pair_width += int(groups.max()) + 1
        if not drawn_marginals:
            self.soft_width = pair_width
        as_tensor = lambda values, dtype: torch.as_tensor(values, dtype=dtype, device=device)  # noqa: E731
        # Cell probabilities -> pair-cell probabilities: each cell's column on each axis it lies on.
        source = np.concatenate(source) if source else np.zeros(0, dtype=np.int64)
        column = np.concatenate(column) if column else np.zeros(0, dtype=np.int64)
        in_place = np.array_equal(source, np.arange(width))  # every soft cell once, in place, and no drawn cells
        identity = in_place and pair_width == width and np.array_equal(column, np.arange(width))
        self.pair_source = None if in_place else as_tensor(source, torch.long)
        self.pair_column = None if identity else as_tensor(column, torch.long)
        self.pair_width = pair_width
        # The estimates: one-way cells, then the soft axes' Gram matrix, then the drawn axes' products
        # with the soft axes (a drawn axis meets only soft ones: never its own kind), all flattened.
        soft, drawn_base = self.soft_width, width + self.soft_width**2
        index, segment = [np.arange(width)], [np.repeat(np.arange(len(sizes)), sizes)]
        for m, (key_a, key_b) in enumerate(pair_keys):
            rows_axis, columns_axis = measured.pair_axes(m)
            a = axis_start[key_a] + np.arange(int(rows_axis.max()) + 1)[:, None]
            b = axis_start[key_b] + np.arange(int(columns_axis.max()) + 1)[None, :]
            if key_a[2]:
                cells = drawn_base + (a - soft) * soft + b
            elif key_b[2]:
                cells = drawn_base + (b - soft) * soft + a
            else:
                cells = width + a * soft + b
            index.append(cells.ravel())
            segment.append(np.full(cells.size, len(sizes) + m))
        # Each estimate's place among the one-way cells, then the Gram matrix's cells some pair reads and
        # the drawn products' (each once, ascending): only those are gathered, not the whole matrices.
        index = np.concatenate(index)
        gram = (index >= width) & (index < drawn_base)
        gram_cells, gram_place = np.unique(index[gram] - width, return_inverse=True)
        drawn_cells, drawn_place = np.unique(index[index >= drawn_base] - drawn_base, return_inverse=True)
        order = index.copy()
        order[gram] = width + gram_place
        order[index >= drawn_base] = width + len(gram_cells) + drawn_place
        self.gram_cells = as_tensor(gram_cells, torch.long)
        self.gram_mirrored = as_tensor(gram_cells % self.soft_width * self.soft_width + gram_cells // self.soft_width,
                                       torch.long)
        self._workspace = _GramWorkspace(self.soft_width)
        self.drawn_cells = as_tensor(drawn_cells, torch.long)
        self.order = as_tensor(order, torch.long)
        self.segment = as_tensor(np.concatenate(segment), torch.long)
        self.targets = as_tensor(np.concatenate([*measured.one_way, *measured.two_way]) / total, torch.float32)
        self.n_marginals = len(sizes) + len(measured.pairs)
        self.has_pairs = bool(measured.pairs)

    def estimates(self, raw: torch.Tensor, drawn: Mapping[str, DrawnCells] | None = None) -> torch.Tensor:
        """The batch's one-way cells, then every pair's cells, in the order of the targets."""
        return self._estimates(*self._cell_probabilities(raw, drawn), parts=1)[0]

    def _cell_probabilities(self, raw: torch.Tensor, drawn: Mapping[str, DrawnCells] | None
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each row's one-way cell probabilities, and on the pairs' axes (None without pairs), both
        transposed (a row per cell, a column per batch row): the cells then move as whole rows.

        A conditioned column's probabilities are given its parents' draws, so in a pair with its
        ancestor the ancestor enters as drawn (``drawn``: ``OutputHeads.condition``'s draws): the
        mean of drawn cell times conditional probabilities is the pair's probability, as the mean of
        two conditional probabilities would not be."""
        probs = torch.cat([block.t() for block in self.cells(raw)])
        if not self.has_pairs:
            return probs, None
        if self.pair_column is None:
            return probs, probs
        if self.drawn_names:
            if drawn is None or any(name not in drawn for name in self.drawn_names):
                raise ValueError(f"the marginal loss needs the draws of {self.drawn_names}")
            rows = torch.cat([probs, *(drawn[name].cells.t().to(probs.dtype) for name in self.drawn_names)])
        else:
            rows = probs
        source = rows if self.pair_source is None else rows.index_select(0, self.pair_source)
        return probs, probs.new_zeros((self.pair_width, len(raw))).index_add_(0, self.pair_column, source)

    def _estimates(self, probs: torch.Tensor, grouped: torch.Tensor | None, parts: int) -> torch.Tensor:
        """The estimates of each of ``parts`` equal parts of the batch's rows (parts x estimates):
        views of the parts, not copies, whose gradients would each be a zero-filled batch-sized tensor."""
        size = probs.shape[1] // parts

        def split(cells: torch.Tensor) -> torch.Tensor:  # cells x rows -> parts x cells x rows of a part
            return cells.view(len(cells), parts, size).transpose(0, 1)

        one_way = split(probs).mean(2)
        if grouped is None:
            return one_way
        soft = split(grouped[:self.soft_width])
        estimates = [one_way, _GatheredGram.apply(soft, self.gram_cells, self.gram_mirrored, self._workspace) / size]
        if self.soft_width < self.pair_width:
            products = torch.bmm(split(grouped[self.soft_width:]), soft.transpose(1, 2))
            estimates.append(products.reshape(parts, -1).index_select(1, self.drawn_cells) / size)
        return torch.cat(estimates, 1).index_select(1, self.order)

    def __call__(self, raw: torch.Tensor, drawn: Mapping[str, DrawnCells] | None = None) -> torch.Tensor:
        """The loss of a batch of at least two rows (its halves' estimates enter the squared term; of
        an odd batch, the last row enters neither)."""
        probs, grouped = self._cell_probabilities(raw, drawn)
        if len(raw) % 2:
            probs, grouped = probs[:, :-1], None if grouped is None else grouped[:, :-1]
        first, second = self._estimates(probs, grouped, parts=2) - self.targets
        per_cell = ((first + second) / 2).abs() + SQUARED_WEIGHT * first * second
        return torch.zeros(self.n_marginals, device=raw.device).index_add_(0, self.segment, per_cell).mean()


def initial_edge_weights(measured: MarginalMeasurements, names: Sequence[str],
                         edges: Sequence[tuple[str, str]]) -> list[np.ndarray]:
    """Per conditioning edge (parent, child), weights that start the child's draw at its measured
    dependence on the parent: the pointwise mutual information log P(a, b) / (P(a) P(b)) of the
    measured pair, its counts clipped at 0 plus its cells' mean noise std each, at least one count
    (so a cell the noise alone could fill is unlikely, not impossible), spread from the pair's groups
    to every cell. Where the release shows the child a function of the parent (``functional_map``), a
    parent value it is sure of draws its child outright (``FUNCTION_WEIGHT``): a structural zero (a
    code and its label) the marginal fit's small steps would take thousands of steps to learn, and
    which pairs of the two columns with others, each with its own noise, pull apart. Post-processing
    of the release."""
    index = {name: j for j, name in enumerate(names)}
    weights = []
    for parent, child in edges:
        a, b = index[parent], index[child]
        m = next(m for m, pair in enumerate(measured.pairs) if pair in ((a, b), (b, a)))
        rows, columns = measured.pair_axes(m)
        joint = np.clip(measured.two_way[m], 0.0, None).reshape(int(rows.max()) + 1, int(columns.max()) + 1)
        joint = joint + max(1.0, measured.noise_of(m) / len(measured.two_way[m]))
        joint /= joint.sum()
        information = np.log(joint) - np.log(joint.sum(1, keepdims=True)) - np.log(joint.sum(0, keepdims=True))
        if measured.pairs[m] != (a, b):
            information, rows, columns = information.T, columns, rows
        function = functional_map(measured, a, b)
        if function is not None:
            sure = function >= 0
            information[sure] = -FUNCTION_WEIGHT
            information[sure, function[sure]] = FUNCTION_WEIGHT
        weights.append(information[rows][:, columns])
    return weights


def functional_edges(measured: MarginalMeasurements, names: Sequence[str],
                     edges: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The conditioning edges whose child the release shows to be a function of the parent
    (``functional_map``), which ``initial_edge_weights`` draw outright. Post-processing."""
    index = {name: j for j, name in enumerate(names)}
    return [(parent, child) for parent, child in edges
            if functional_map(measured, index[parent], index[child]) is not None]


def marginal_effort(measured: MarginalMeasurements) -> float:
    """How hard to fit marginals this noisy: 1 up to ``MARGINAL_NOISE_REF``, then falling in proportion
    to the noise, to ``MIN_MARGINAL_EFFORT``."""
    return min(1.0, max(MIN_MARGINAL_EFFORT, MARGINAL_NOISE_REF / measured.relative_noise))


def marginal_learning_rate(full_rate: float, measured: MarginalMeasurements) -> float:
    """The marginal fit's learning rate: ``full_rate`` times the effort."""
    return full_rate * marginal_effort(measured)


def marginal_step_count(full_steps: int, measured: MarginalMeasurements) -> int:
    """The marginal fit's steps: ``full_steps`` times the effort, and at least
    ``MIN_MARGINAL_STEP_SHARE`` of them."""
    return round(full_steps * max(MIN_MARGINAL_STEP_SHARE, marginal_effort(measured)))


class DPGANTrainer:
    """Runs the plan: every discriminator step is one accounted subsampled Gaussian mechanism."""

    def __init__(self, generator: Generator, discriminator: Discriminator, groups: ClippingGroups,
                 plan: TrainingPlan, *, objective: Objective, gp_weight: float, generator_steps: int,
                 generator_lr: float, discriminator_lr: float, torch_generator: torch.Generator,
                 privacy_rng: np.random.Generator, privacy_generator: torch.Generator,
                 schedule: ClippingSchedule = ClippingSchedule("off"), marginal_loss: MarginalLoss | None = None,
                 marginal_weight: float = 1.0, marginal_lr: float = 3e-3,
                 generator_dtype: torch.dtype = torch.float32) -> None:
        self.generator, self.discriminator = generator, discriminator
        self.groups, self.plan, self.schedule = groups, plan, schedule
        self.objective = objective
        self.loss = wgan_gp_loss(gp_weight) if objective == "wgan-gp" else gan_loss
        self.generator_steps = generator_steps
        self.marginal_loss, self.marginal_weight = marginal_loss, marginal_weight
        self.generator_dtype = generator_dtype  # of the generator steps' matrix products (autocast); DP steps: float32
        self.device = next(discriminator.parameters()).device
        self.layout = generator.heads.compact.to(self.device)  # what the discriminator sees: the generator's output space
        # Model randomness may be seeded; the privacy randomness (Poisson sampling, Gaussian noise)
        # comes from OS entropy, so a known seed cannot be used to replay the noise.
        self.torch_generator = torch_generator
        self.privacy_rng, self.privacy_generator = privacy_rng, privacy_generator
        betas = (0.5, 0.9)
        self.g_optimizer = torch.optim.Adam(generator.parameters(), lr=generator_lr, betas=betas)
        self.d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=discriminator_lr, betas=betas)
        self.marginal_optimizer = torch.optim.Adam(generator.parameters(), lr=marginal_lr, betas=betas)
        self.steps_done = 0

    def noise(self, n: int, device: torch.device, rng: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.generator.noise_dim), generator=rng or self.torch_generator, device=device)

    def rows(self, store: CompactStore, index: np.ndarray) -> torch.Tensor:
        """Encoded rows of ``store`` at ``index`` as the networks see them (no places in cells), on the device."""
        return self.layout.expand(torch.from_numpy(store.take(index)).to(self.device), places=False)

    def _paired(self, real: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``real`` rows, each paired with its own fake, and the interpolation weights of WGAN-GP, drawn
        from ``rng``.

        The fakes are drawn in eval mode: no fake (and no stored batch-norm statistic) depends on
        the realised, data-dependent batch size. For a private batch ``rng`` is the privacy generator
        (secret, like the noise): a private batch's realised size decides how many draws it takes, and
        from the seeded generator that would shift every later fake and generator step by it.
        """
        self.generator.eval()
        with torch.no_grad():
            fake = self.generator(self.noise(len(real), self.device, rng), rng)
        self.generator.train()
        alpha = torch.rand((len(real), 1), generator=rng, device=self.device)
        return real, fake, alpha

    def _per_example(self, real: torch.Tensor, rng: torch.Generator) -> dict[str, torch.Tensor]:
        """Per-example discriminator gradients for ``real`` rows and their fakes."""
        return per_example_gradients(self.discriminator, self.loss, *self._paired(real, rng))

    def _apply(self, gradients: dict[str, torch.Tensor]) -> None:
        for name, parameter in self.discriminator.named_parameters():
            parameter.grad = gradients[name]
        self.d_optimizer.step()

    def discriminator_step(self, data: CompactStore) -> PrivateStep:
        """One DP-SGD step on a Poisson batch of the private rows; returns what it released."""
        real = self.rows(data, poisson_sample(len(data), self.plan.sample_rate, self.privacy_rng))
        if self.objective == "gan":  # linear layers and a loss of two rows per example: no per-example gradients
            real, fake, _ = self._paired(real, self.privacy_generator)
            released = privatize_linear(self.discriminator, gan_row_losses, torch.stack([real, fake]), self.groups,
                                        self.plan.expected_batch_size, self.privacy_generator)
        else:
            released = privatize(self._per_example(real, self.privacy_generator), self.groups,
                                 self.plan.expected_batch_size, self.privacy_generator)
        self._apply(released.gradients)
        self.steps_done += 1
        return released

    def _public_batch(self, public: CompactStore, batch_size: int) -> torch.Tensor:
        index = torch.randint(len(public), (batch_size,), generator=self.torch_generator, device=self.device)
        return self.rows(public, index.cpu().numpy())

    def public_discriminator_step(self, public: CompactStore, batch_size: int) -> None:
        """An ordinary (non-private) discriminator step on public rows: no clipping, no noise, no budget."""
        self.d_optimizer.zero_grad(set_to_none=True)
        mean_loss(self.discriminator, self.loss,
                  *self._paired(self._public_batch(public, batch_size), self.torch_generator)).backward()
        self.d_optimizer.step()

    def public_group_norms(self, public: CompactStore, names: tuple[tuple[str, ...], ...]) -> np.ndarray:
        """Mean per-example gradient norm of each group on a public batch: clipping bounds at no privacy cost."""
        real = self._public_batch(public, PUBLIC_NORM_BATCH)
        if self.objective == "gan":
            real, fake, _ = self._paired(real, self.torch_generator)
            norms = linear_group_norms(self.discriminator, gan_row_losses, torch.stack([real, fake]), names)
        else:
            norms = group_norms(self._per_example(real, self.torch_generator), names)
        return norms.mean(0).cpu().numpy()

    def _groups_for(self, step: int, bounds: tuple[float, ...], public: CompactStore | None) -> ClippingGroups:
        """The groups for DP step ``step`` with ``bounds``: clustered when the schedule says so, noise re-allocated.

        Whatever changes, the step's effective noise multiplier stays the calibrated one.
        """
        schedule, sigma, groups = self.schedule, self.plan.noise_multiplier, self.groups
        if schedule.clusters is not None and step == schedule.cluster_after:
            groups = groups.reallocated(bounds, sigma, 0.0).clustered(schedule.clusters, sigma)
            if schedule.adaptive == "public" and public is not None:
                bounds = positive_bounds(self.public_group_norms(public, groups.names), groups.clip_bounds)
            else:
                bounds = groups.clip_bounds
        count_noise = (quantile_count_noise(self.plan.expected_batch_size, len(groups.names), sigma)
                       if schedule.counts_at(step) else 0.0)
        groups = groups.reallocated(bounds, sigma, count_noise)
        if not math.isclose(groups.noise_multiplier, sigma, rel_tol=1e-9):
            raise AssertionError("clipping groups do not realise the calibrated noise multiplier")
        return groups

    def _initial_bounds(self, public: CompactStore | None) -> tuple[float, ...]:
        """Bounds for the first DP step: public norm estimates where the schedule uses them, else the built ones."""
        uses_public = self.schedule.adaptive == "public" or (self.schedule.clusters is not None
                                                             and self.schedule.cluster_after == 0)
        if public is None or not uses_public:
            return self.groups.clip_bounds
        return positive_bounds(self.public_group_norms(public, self.groups.names), self.groups.clip_bounds)

    def _generator_precision(self) -> torch.autocast:
        """Matrix products of a generator step in ``generator_dtype`` (weights and optimizer stay float32)."""
        return torch.autocast(self.device.type, dtype=self.generator_dtype,
                              enabled=self.generator_dtype != torch.float32)

    def _raw(self, batch_size: int) -> torch.Tensor:
        """The generator body's outputs for fresh noise, in float32 (the draws and soft cells need its precision)."""
        return self.generator.raw(self.noise(batch_size, self.device)).float()

    def generator_step(self, batch_size: int) -> torch.Tensor:
        """Post-processing: the generator learns from the (already private) discriminator and DP marginals only.
        Returns the loss where it was computed (reading it on the host waits for the device)."""
        self.g_optimizer.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        with self._generator_precision():
            rows, raw, drawn = self.generator.heads.draw(self._raw(batch_size), self.torch_generator)
            scores = self.discriminator(rows).float()
            loss = -scores.mean() if self.objective == "wgan-gp" else torch.nn.functional.softplus(-scores).mean()
            if self.marginal_loss is not None and self.marginal_weight > 0:
                loss = loss + self.marginal_weight * self.marginal_loss(raw, drawn).float()
        loss.backward()
        self.g_optimizer.step()
        self.discriminator.requires_grad_(True)
        return loss.detach()

    def marginal_step(self, batch_size: int) -> torch.Tensor:
        """A generator step on the DP marginals alone (post-processing: no private data, no budget); its
        loss, left on the device like ``generator_step``'s."""
        self.marginal_optimizer.zero_grad(set_to_none=True)
        with self._generator_precision():
            raw, drawn = self.generator.heads.condition(self._raw(batch_size), self.torch_generator, inverse=True)
            loss = self.marginal_loss(raw, drawn).float()
        loss.backward()
        self.marginal_optimizer.step()
        return loss.detach()

    def epsilon_spent(self) -> float:
        """Epsilon of the whole-table Gaussian mechanisms and the steps done so far (the accountant the plan
        was calibrated with), at the plan's delta."""
        return compute_epsilon(self.plan.noise_multiplier, self.plan.sample_rate, self.steps_done,
                               self.plan.delta, self.plan.accountant, self.plan.gaussian_noise_multiplier)

    def run(self, data: CompactStore, progress: Callable[[int, torch.Tensor], None] | None = None,
            public: CompactStore | None = None, warm_start_steps: int = 0, marginal_steps: int = 0) -> None:
        """Generator steps on the DP marginals, an optional warm start on public rows, then all planned DP
        steps (calibrated for exactly this many)."""
        batch = max(2, int(round(self.plan.expected_batch_size)))  # batch norm needs two rows
        self.generator.train()
        for _ in range(marginal_steps if self.marginal_loss is not None else 0):
            self.marginal_step(MARGINAL_BATCH)
        for _ in range(warm_start_steps if public is not None else 0):
            self.public_discriminator_step(public, batch)
            for _ in range(self.generator_steps):
                self.generator_step(batch)
        self.groups = self._groups_for(0, self._initial_bounds(public), public)
        for step in range(self.plan.steps):
            released = self.discriminator_step(data)
            for _ in range(self.generator_steps):
                loss = self.generator_step(batch)
            if step + 1 < self.plan.steps:
                self._next_groups(step, released, public)
            if progress is not None:
                progress(step + 1, loss)
        self.generator.eval()

    def _next_groups(self, step: int, released: PrivateStep, public: CompactStore | None) -> None:
        """Adapt the bounds after DP step ``step`` from its released counts or from public norms."""
        norms = (lambda: self.public_group_norms(public, self.groups.names)) if public is not None else None
        bounds = self.schedule.next_bounds(step, self.groups.clip_bounds, released.unclipped_fraction, norms)
        self.groups = self._groups_for(step + 1, bounds, public)


__all__ = ["DPGANTrainer", "MarginalLoss", "TrainingPlan", "gan_loss", "gan_row_losses", "functional_edges", "initial_edge_weights",
           "marginal_effort",
           "marginal_learning_rate", "marginal_step_count", "wgan_gp_loss"]
