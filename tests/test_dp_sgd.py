"""DP-SGD pieces: per-example gradients, clipping and noise, Poisson sampling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tabsynth.models import Discriminator, init_linear
from tabsynth.privacy.accounting import effective_noise_multiplier
from tabsynth.privacy.dp_sgd import ClippingGroups, per_example_gradients, poisson_sample, privatize
from tabsynth.training import gan_loss, wgan_gp_loss

DIM = 6


def discriminator(seed: int = 0) -> Discriminator:
    model = Discriminator(DIM, (8, 8))
    init_linear(model, torch.Generator().manual_seed(seed))
    return model.double()


def batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, DIM, generator=gen, dtype=torch.float64),
            torch.randn(n, DIM, generator=gen, dtype=torch.float64),
            torch.rand(n, 1, generator=gen, dtype=torch.float64))


def ordinary_gradient(model: Discriminator, loss, real, fake, alpha) -> dict[str, torch.Tensor]:
    """The gradient of the summed per-example loss by plain autograd, one example at a time."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(real)):
        model.zero_grad()
        model_fn = lambda x: model(x.unsqueeze(0)).squeeze(0)  # noqa: E731
        if loss is gan_loss:
            value = gan_loss(model_fn, real[i], fake[i], alpha[i])
        else:  # WGAN-GP needs create_graph for the gradient penalty
            interpolate = (alpha[i] * real[i] + (1 - alpha[i]) * fake[i]).requires_grad_(True)
            slope, = torch.autograd.grad(model_fn(interpolate), interpolate, create_graph=True)
            norm = torch.sqrt((slope**2).sum() + 1e-12)
            value = model_fn(fake[i]) - model_fn(real[i]) + 10.0 * (norm - 1) ** 2
        value.backward()
        for n, p in model.named_parameters():
            total[n] += p.grad
    return total


@pytest.mark.parametrize("loss", [gan_loss, wgan_gp_loss(10.0)], ids=["gan", "wgan-gp"])
def test_per_example_gradients_equal_batch_of_one_gradients(loss) -> None:
    model = discriminator()
    real, fake, alpha = batch(5)
    per_example = per_example_gradients(model, loss, real, fake, alpha)
    for i in range(5):
        single = ordinary_gradient(model, loss, real[i:i + 1], fake[i:i + 1], alpha[i:i + 1])
        for name, value in single.items():
            torch.testing.assert_close(per_example[name][i], value)


@pytest.mark.parametrize("loss", [gan_loss, wgan_gp_loss(10.0)], ids=["gan", "wgan-gp"])
def test_without_noise_or_clipping_the_dp_step_is_the_ordinary_step(loss) -> None:
    model = discriminator()
    real, fake, alpha = batch(16)
    groups = ClippingGroups.build(model, noise_multiplier=1.0, clip_bound=1e12)
    groups = replace(groups, noise_stds=(0.0,) * len(groups.names))
    private = privatize(per_example_gradients(model, loss, real, fake, alpha), groups, 16.0, None).gradients
    ordinary = ordinary_gradient(model, loss, real, fake, alpha)
    for name, value in ordinary.items():
        torch.testing.assert_close(private[name], value / 16.0)


@pytest.mark.parametrize("grouping", ["flat", "weight_bias", "clustered"])
def test_one_added_record_moves_the_summed_gradient_by_at_most_the_clip_bound(grouping: str) -> None:
    model = discriminator()
    real, fake, alpha = batch(9)
    groups = ClippingGroups.build(model, 1.0, clip_bound=0.5, grouping=grouping)
    groups = replace(groups, noise_stds=(0.0,) * len(groups.names))
    loss = wgan_gp_loss(10.0)
    with_all = privatize(per_example_gradients(model, loss, real * 50, fake, alpha), groups, 1.0, None).gradients
    without = privatize(per_example_gradients(model, loss, real[:-1] * 50, fake[:-1], alpha[:-1]), groups, 1.0,
                        None).gradients
    moved = torch.sqrt(sum(((with_all[n] - without[n]) ** 2).sum() for n in with_all))
    assert 0.4 < moved <= 0.5 + 1e-9


def test_noise_std_per_group_matches_the_plan() -> None:
    model = discriminator()
    groups = ClippingGroups.build(model, noise_multiplier=2.0, clip_bound=1.0, grouping="weight_bias")
    empty = {n: torch.zeros((0, *p.shape), dtype=torch.float64) for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    draws = [privatize(empty, groups, 1.0, gen).gradients for _ in range(200)]
    for names, std in zip(groups.names, groups.noise_stds):
        values = torch.cat([torch.cat([d[n].flatten() for n in names]) for d in draws])
        assert float(values.std()) == pytest.approx(std, rel=0.05)


def test_grouped_clipping_reports_the_effective_noise_multiplier_of_the_whole_vector() -> None:
    groups = ClippingGroups.build(discriminator(), noise_multiplier=1.3, clip_bound=1.0, grouping="weight_bias")
    assert len(groups.names) == 2
    assert effective_noise_multiplier(groups.clip_bounds, groups.noise_stds) == pytest.approx(1.3)
    assert groups.noise_multiplier == pytest.approx(1.3)


def test_poisson_sampling_includes_each_row_with_probability_q() -> None:
    rng = np.random.default_rng(0)
    counts = np.zeros(50)
    for _ in range(4000):
        counts[poisson_sample(50, 0.1, rng)] += 1
    frequencies = counts / 4000
    assert np.all(np.abs(frequencies - 0.1) < 0.02)
    assert frequencies.mean() == pytest.approx(0.1, abs=0.003)


def test_poisson_batches_vary_in_size() -> None:
    rng = np.random.default_rng(0)
    sizes = {len(poisson_sample(1000, 0.05, rng)) for _ in range(20)}
    assert len(sizes) > 5
