"""DP-SGD for the discriminator: per-example gradients, clipping by parameter groups, Gaussian noise.

Split as in Opacus: ``per_example_gradients`` computes, ``privatize`` clips, sums and noises,
the optimizer steps on the result, and the accountant (``tabsynth.privacy.accounting``) is told the
effective noise multiplier of the whole vector, because one record touches every group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from tabsynth.privacy.accounting import allocate_group_noise, effective_noise_multiplier

PerExampleLoss = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class ClippingGroups:
    """Which parameters are clipped together, each group's bound and its Gaussian noise std.

    ``noise_stds[j]`` is the standard deviation added to each coordinate of group j's summed
    gradient; ``noise_multiplier`` is what the accountant must see (see ``effective_noise_multiplier``).
    """

    names: tuple[tuple[str, ...], ...]
    clip_bounds: tuple[float, ...]
    noise_stds: tuple[float, ...]

    @property
    def noise_multiplier(self) -> float:
        return effective_noise_multiplier(self.clip_bounds, self.noise_stds)

    @classmethod
    def build(cls, model: nn.Module, noise_multiplier: float, clip_bound: float = 1.0,
              split_biases: bool = False, strategy: str = "min_variance") -> "ClippingGroups":
        """One group (all parameters) or two (weights, biases), sharing ``clip_bound`` equally by norm.

        With k groups each bound is clip_bound / sqrt(k), so the whole vector's norm is at most
        ``clip_bound``; noise is allocated so the effective multiplier equals ``noise_multiplier``.
        """
        if not np.isfinite(clip_bound) or clip_bound <= 0:
            raise ValueError(f"clip_bound must be a positive finite number, got {clip_bound}")
        params = dict(model.named_parameters())
        if split_biases:
            groups = [tuple(n for n, p in params.items() if p.ndim > 1),
                      tuple(n for n, p in params.items() if p.ndim <= 1)]
            groups = [g for g in groups if g]
        else:
            groups = [tuple(params)]
        bounds = [clip_bound / np.sqrt(len(groups))] * len(groups)
        sizes = [sum(params[n].numel() for n in g) for g in groups]
        stds = allocate_group_noise(bounds, sizes, noise_multiplier, strategy=strategy)
        return cls(tuple(groups), tuple(float(b) for b in bounds), tuple(float(s) for s in stds))


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


def privatize(per_example: dict[str, torch.Tensor], groups: ClippingGroups, expected_batch_size: float,
              generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """Clip each example's gradient per group, sum, add the group's Gaussian noise, divide by the expected batch size.

    Normalising by the expected (not the realised) batch size keeps the batch size, which depends
    on the private data through Poisson sampling, out of the released update.
    """
    if expected_batch_size <= 0:
        raise ValueError(f"expected_batch_size must be positive, got {expected_batch_size}")
    out: dict[str, torch.Tensor] = {}
    for names, bound, std in zip(groups.names, groups.clip_bounds, groups.noise_stds):
        norms = torch.cat([per_example[n].flatten(start_dim=1) for n in names], dim=1).norm(dim=1)
        factors = (bound / (norms + 1e-12)).clamp(max=1.0)
        for name in names:
            g = per_example[name]
            summed = torch.einsum("b,b...->...", factors.to(g.dtype), g)  # zeros for an empty batch
            if std > 0:
                summed = summed + std * torch.randn(summed.shape, generator=generator, device=summed.device,
                                                    dtype=summed.dtype)
            out[name] = summed / expected_batch_size
    return out


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


__all__ = ["ClippingGroups", "per_example_gradients", "poisson_sample", "privatize"]
