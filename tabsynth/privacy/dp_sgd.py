"""DP-SGD for the discriminator: per-example gradients, clipping by parameter groups, Gaussian noise.

Split as in Opacus: ``per_example_gradients`` computes, ``privatize`` clips, sums and noises,
the optimizer steps on the result, and the accountant (``tabsynth.privacy.accounting``) is told the
effective noise multiplier of the whole vector, because one record touches every group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from tabsynth.privacy.accounting import allocate_group_noise, effective_noise_multiplier
from tabsynth.privacy.clipping import Grouping, cluster_groups, group_norms, parameter_groups

PerExampleLoss = Callable[..., torch.Tensor]
RowLoss = Callable[[torch.Tensor], torch.Tensor]  # scores of shape (T, B) -> per-row losses of that shape


@dataclass(frozen=True)
class ClippingGroups:
    """Which parameters are clipped together, each group's bound and its Gaussian noise std.

    ``noise_stds[j]`` is the standard deviation added to each coordinate of group j's summed
    gradient. With ``count_noise_std > 0`` the step also releases, per group, the noisy count of
    examples left unclipped (for private adaptive clipping). ``noise_multiplier`` is what the
    accountant must see: that of the one Gaussian mechanism all of it forms together.
    """

    names: tuple[tuple[str, ...], ...]
    sizes: tuple[int, ...]
    clip_bounds: tuple[float, ...]
    noise_stds: tuple[float, ...]
    count_noise_std: float = 0.0

    @property
    def noise_multiplier(self) -> float:
        gradient_precision = effective_noise_multiplier(self.clip_bounds, self.noise_stds) ** -2
        return float((gradient_precision + _count_precision(len(self.names), self.count_noise_std)) ** -0.5)

    @classmethod
    def allocate(cls, names: Sequence[tuple[str, ...]], sizes: Sequence[int], clip_bounds: Sequence[float],
                 noise_multiplier: float, count_noise_std: float = 0.0,
                 strategy: str = "min_variance") -> "ClippingGroups":
        """Groups with per-group noise chosen (``allocate_group_noise``) so the whole step has ``noise_multiplier``.

        The released counts, if any, take their share of the precision first; the gradient gets the rest.
        """
        if not np.isfinite(noise_multiplier) or noise_multiplier <= 0:
            raise ValueError(f"noise_multiplier must be a positive finite number, got {noise_multiplier}")
        gradient_precision = noise_multiplier ** -2 - _count_precision(len(names), count_noise_std)
        if gradient_precision <= 0:
            raise ValueError(f"count noise {count_noise_std} leaves no privacy budget for the gradient")
        stds = allocate_group_noise(clip_bounds, sizes, gradient_precision ** -0.5, strategy=strategy)
        return cls(tuple(tuple(g) for g in names), tuple(int(d) for d in sizes),
                   tuple(float(c) for c in clip_bounds), tuple(float(v) for v in stds), float(count_noise_std))

    @classmethod
    def build(cls, model: nn.Module, noise_multiplier: float, clip_bound: float = 1.0,
              grouping: Grouping = "flat", count_noise_std: float = 0.0) -> "ClippingGroups":
        """The initial groups of ``model`` (see ``parameter_groups``), sharing ``clip_bound`` equally by norm.

        With k groups each bound is clip_bound / sqrt(k), so the whole vector's norm is at most ``clip_bound``.
        """
        if not np.isfinite(clip_bound) or clip_bound <= 0:
            raise ValueError(f"clip_bound must be a positive finite number, got {clip_bound}")
        names = parameter_groups(model, grouping)
        params = dict(model.named_parameters())
        sizes = [sum(params[n].numel() for n in g) for g in names]
        return cls.allocate(names, sizes, [clip_bound / np.sqrt(len(names))] * len(names), noise_multiplier,
                            count_noise_std)

    def reallocated(self, clip_bounds: Sequence[float], noise_multiplier: float,
                    count_noise_std: float | None = None) -> "ClippingGroups":
        """The same groups with new bounds (and optionally new count noise), noise re-allocated for ``noise_multiplier``."""
        count = self.count_noise_std if count_noise_std is None else count_noise_std
        return ClippingGroups.allocate(self.names, self.sizes, clip_bounds, noise_multiplier, count)

    def clustered(self, k: int, noise_multiplier: float, count_noise_std: float = 0.0) -> "ClippingGroups":
        """Weight clustering down to ``k`` groups (``cluster_groups``), noise re-allocated for ``noise_multiplier``."""
        size_of = {g: d for g, d in zip(self.names, self.sizes)}
        names, bounds = cluster_groups(self.names, self.clip_bounds, k)
        sizes = []
        for merged in names:  # a merged group is a concatenation of original groups, in merge order
            sizes.append(sum(d for g, d in size_of.items() if set(g) <= set(merged)))
        return ClippingGroups.allocate(names, sizes, bounds, noise_multiplier, count_noise_std)


def _count_precision(groups: int, count_noise_std: float) -> float:
    """Whitened precision taken by k released counts of sensitivity 1/2 each: k / (4 s^2); none without counts."""
    if count_noise_std < 0 or not np.isfinite(count_noise_std):
        raise ValueError(f"count_noise_std must be a finite number >= 0, got {count_noise_std}")
    return 0.0 if count_noise_std == 0 else groups / (4.0 * count_noise_std**2)


def per_example_gradients(model: nn.Module, loss: PerExampleLoss, *batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of ``loss(model_fn, *example)`` for every example, stacked on a leading batch axis.

    ``loss`` receives a function ``model_fn(x)`` evaluating the model with the parameters being
    differentiated, and one example's tensors (no batch axis); it may itself take gradients (WGAN-GP).
    """
    if len(batch[0]) == 0:  # an empty Poisson batch: no example, zero gradient
        return {name: torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
                for name, p in model.named_parameters()}
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def example_loss(parameters: dict[str, torch.Tensor], *example: torch.Tensor) -> torch.Tensor:
        def model_fn(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (parameters, buffers), (x.unsqueeze(0),)).squeeze(0)
        return loss(model_fn, *example)

    return vmap(grad(example_loss), in_dims=(None,) + (0,) * len(batch))(params, *batch)


@dataclass(frozen=True)
class PrivateStep:
    """What one DP-SGD step releases: the noised mean gradient and, if asked for, each group's noisy
    fraction of examples whose gradient the bound left unclipped."""

    gradients: dict[str, torch.Tensor]
    unclipped_fraction: np.ndarray | None


def mean_loss(model: nn.Module, loss: PerExampleLoss, *batch: torch.Tensor) -> torch.Tensor:
    """The mean of ``loss`` over the examples of ``batch``, for ordinary autograd (public, non-private steps).

    The same per-example loss as ``per_example_gradients`` differentiates, without the cost of one
    gradient per example: its gradient is the mean of theirs.
    """
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    params = dict(model.named_parameters())

    def example_loss(*example: torch.Tensor) -> torch.Tensor:
        def model_fn(x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, buffers), (x.unsqueeze(0),)).squeeze(0)
        return loss(model_fn, *example)

    return vmap(example_loss)(*batch).mean()


def privatize(per_example: dict[str, torch.Tensor], groups: ClippingGroups, expected_batch_size: float,
              generator: torch.Generator | None) -> PrivateStep:
    """Clip each example's gradient per group, sum, add the group's Gaussian noise, divide by the expected batch size.

    Normalising by the expected (not the realised) batch size keeps the batch size, which depends
    on the private data through Poisson sampling, out of the released update; the unclipped counts
    are centred (each example adds +-1/2) and re-based on the expected size for the same reason.
    """
    norms = group_norms(per_example, groups.names)
    factors = clip_factors(norms, groups)
    summed = {name: torch.einsum("b,b...->...", factors[:, j].to(per_example[name].dtype), per_example[name])
              for j, names in enumerate(groups.names) for name in names}  # zeros for an empty batch
    return release(summed, norms, groups, expected_batch_size, generator)


def privatize_linear(model: nn.Module, row_loss: RowLoss, rows: torch.Tensor, groups: ClippingGroups,
                     expected_batch_size: float, generator: torch.Generator | None) -> PrivateStep:
    """``privatize`` for a model of ``nn.Linear`` layers and parameter-free layers, without per-example gradients.

    ``rows`` has shape (T, B, d): example i is the T rows ``rows[:, i]`` (for the GAN loss, its real row
    and its fake), and its loss is ``row_loss(model(rows)).sum()`` over them. The gradient of a linear
    layer for example i is sum_t g_ti a_ti^T (a: the layer's input, g: the loss gradient at its output),
    so its norm is sqrt(sum_tu (g_ti . g_ui)(a_ti . a_ui)) and the clipped sum is sum_t (c * G_t)^T A_t:
    exactly what ``privatize`` computes from materialised per-example gradients, at the cost of about
    one ordinary backward pass (the "ghost clipping" of Goodfellow 2015 and Li et al. 2022).
    """
    backward = _LinearBackward(model, row_loss, rows)
    norms = backward.group_norms(groups.names)
    factors = clip_factors(norms, groups)
    group_of = {n: j for j, group in enumerate(groups.names) for n in group}
    summed: dict[str, torch.Tensor] = {}
    for name, layer in backward.layers.items():
        a, g = backward.activations[name], backward.gradients[name]

        def clipped(parameter: str) -> torch.Tensor:  # output gradients scaled by each example's clip factor
            return g * factors[:, group_of[parameter]].to(g.dtype)[None, :, None]

        summed[f"{name}.weight"] = torch.einsum("tbo,tbi->oi", clipped(f"{name}.weight"), a)
        if layer.bias is not None:
            summed[f"{name}.bias"] = clipped(f"{name}.bias").sum((0, 1))
    return release(summed, norms, groups, expected_batch_size, generator)


def linear_group_norms(model: nn.Module, row_loss: RowLoss, rows: torch.Tensor,
                       names: Sequence[tuple[str, ...]]) -> torch.Tensor:
    """Per-example gradient norm of every group, shape (B, groups), by ghost norms (see ``privatize_linear``)."""
    return _LinearBackward(model, row_loss, rows).group_norms(names)


class _LinearBackward:
    """One backward pass of the summed row losses, keeping each linear layer's inputs and output gradients."""

    def __init__(self, model: nn.Module, row_loss: RowLoss, rows: torch.Tensor) -> None:
        self.layers = _linear_layers(model)
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}

        def recorder(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                inputs[name], outputs[name] = args[0].detach(), output
            return hook

        handles = [layer.register_forward_hook(recorder(name)) for name, layer in self.layers.items()]
        t, b = rows.shape[:2]
        try:
            with torch.enable_grad():
                flat = rows.reshape(t * b, rows.shape[-1]).detach().requires_grad_(True)  # every output in the graph
                losses = row_loss(model(flat).reshape(t, b))
                names = list(self.layers)
                grads = (torch.autograd.grad(losses.sum(), [outputs[n] for n in names]) if b
                         else [torch.zeros_like(outputs[n]) for n in names])
        finally:
            for handle in handles:
                handle.remove()
        self.activations = {n: inputs[n].reshape(t, b, self.layers[n].in_features) for n in names}
        self.gradients = {n: g.reshape(t, b, self.layers[n].out_features) for n, g in zip(names, grads)}
        self.examples, self.dtype, self.device = b, rows.dtype, rows.device

    def group_norms(self, names: Sequence[tuple[str, ...]]) -> torch.Tensor:
        """Per-example gradient norms of the parameter groups ``names``, shape (B, groups)."""
        if self.examples == 0:
            return torch.zeros((0, len(names)), dtype=self.dtype, device=self.device)
        squared: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            a, g = self.activations[name], self.gradients[name]
            gram_a, gram_g = torch.einsum("tbi,ubi->btu", a, a), torch.einsum("tbo,ubo->btu", g, g)
            squared[f"{name}.weight"] = (gram_a * gram_g).sum((1, 2)).clamp(min=0)
            if layer.bias is not None:
                squared[f"{name}.bias"] = g.sum(0).pow(2).sum(1)
        return torch.stack([sum(squared[n] for n in group).sqrt() for group in names], dim=1)


def _linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's linear layers by name; refuses a model with parameters anywhere else."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    owned = {f"{name}.{p}" for name, layer in layers.items() for p, _ in layer.named_parameters(recurse=False)}
    others = sorted(set(dict(model.named_parameters())) - owned)
    if others:
        raise TypeError(f"privatize_linear needs a model whose parameters all belong to nn.Linear layers; "
                        f"{others} do not")
    return layers


def clip_factors(norms: torch.Tensor, groups: ClippingGroups) -> torch.Tensor:
    """min(1, c_j / norm_ij): the factor that clips example i's group-j gradient to its bound."""
    bounds = torch.tensor(groups.clip_bounds, dtype=norms.dtype, device=norms.device)
    return (bounds / (norms + 1e-12)).clamp(max=1.0)


def release(summed: dict[str, torch.Tensor], norms: torch.Tensor, groups: ClippingGroups,
            expected_batch_size: float, generator: torch.Generator | None) -> PrivateStep:
    """Add each group's Gaussian noise to the clipped sums and divide by the expected batch size; noisy counts too."""
    if expected_batch_size <= 0:
        raise ValueError(f"expected_batch_size must be positive, got {expected_batch_size}")
    out: dict[str, torch.Tensor] = {}
    for names, std in zip(groups.names, groups.noise_stds):
        for name in names:
            value = summed[name]
            if std > 0:
                value = value + std * torch.randn(value.shape, generator=generator, device=value.device,
                                                  dtype=value.dtype)
            out[name] = value / expected_batch_size
    fraction = None
    if groups.count_noise_std > 0:
        bounds = torch.tensor(groups.clip_bounds, dtype=norms.dtype, device=norms.device)
        centred = ((norms <= bounds).to(torch.float64) - 0.5).sum(0)
        noisy = centred + groups.count_noise_std * torch.randn(centred.shape, generator=generator,
                                                               device=centred.device, dtype=torch.float64)
        fraction = (noisy / expected_batch_size + 0.5).cpu().numpy()
    return PrivateStep(out, fraction)


def poisson_sample(n_rows: int, sample_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of the rows in one Poisson-subsampled batch: each row independently with probability q.

    Drawn as a Binomial(n, q) size and then a uniform subset of that size, which gives every subset S
    the probability q^|S| (1-q)^(n-|S|), exactly as independent coin flips do, in time proportional
    to the batch rather than to the table.
    """
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate}")
    size = int(rng.binomial(n_rows, sample_rate))
    return np.sort(rng.choice(n_rows, size=size, replace=False))


__all__ = ["ClippingGroups", "PrivateStep", "clip_factors", "mean_loss", "per_example_gradients", "poisson_sample",
           "linear_group_norms", "privatize", "privatize_linear", "release"]
