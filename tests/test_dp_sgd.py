"""DP-SGD pieces: per-example gradients, clipping and noise, Poisson sampling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tabsynth.models import Discriminator, init_linear
from tabsynth.privacy.accounting import effective_noise_multiplier
from tabsynth.privacy.clipping import group_norms
from tabsynth.privacy.dp_sgd import (ClippingGroups, linear_group_norms, mean_loss, per_example_gradients, poisson_sample,
                                     privatize, privatize_linear)
from tabsynth.training import gan_loss, gan_row_losses, wgan_gp_loss

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


@pytest.mark.parametrize("loss", [gan_loss, wgan_gp_loss(10.0)], ids=["gan", "wgan-gp"])
def test_the_gradient_of_the_mean_loss_is_the_mean_per_example_gradient(loss) -> None:
    model = discriminator()
    real, fake, alpha = batch(12)
    per_example = per_example_gradients(model, loss, real, fake, alpha)
    model.zero_grad()
    mean_loss(model, loss, real, fake, alpha).backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, per_example[name].mean(0))


@pytest.mark.parametrize("grouping, clip_bound", [("flat", 0.3), ("weight_bias", 0.3), ("clustered", 0.2),
                                                  ("flat", 1e12)])
def test_ghost_clipping_equals_clipping_materialised_per_example_gradients(grouping: str, clip_bound: float) -> None:
    model = discriminator()
    real, fake, alpha = batch(20)
    groups = ClippingGroups.build(model, 1.0, clip_bound=clip_bound, grouping=grouping)
    groups = replace(groups, noise_stds=(0.0,) * len(groups.names), count_noise_std=1e-12)
    slow = privatize(per_example_gradients(model, gan_loss, real * 3, fake, alpha), groups, 20.0, None)
    fast = privatize_linear(model, gan_row_losses, torch.stack([real * 3, fake]), groups, 20.0, None)
    for name, value in slow.gradients.items():
        torch.testing.assert_close(fast.gradients[name], value)
    np.testing.assert_allclose(fast.unclipped_fraction, slow.unclipped_fraction, atol=1e-9)


def test_ghost_clipping_of_an_empty_batch_releases_only_noise() -> None:
    model = discriminator()
    groups = ClippingGroups.build(model, 1.0)
    groups = replace(groups, noise_stds=(0.0,))
    released = privatize_linear(model, gan_row_losses, torch.zeros((2, 0, DIM), dtype=torch.float64), groups, 8.0,
                                None)
    assert all(float(g.abs().sum()) == 0 for g in released.gradients.values())
    assert set(released.gradients) == {n for n, _ in model.named_parameters()}


def test_ghost_clipping_refuses_a_model_with_parameters_outside_linear_layers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(DIM, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1)).double()
    groups = ClippingGroups.build(model, 1.0)
    with pytest.raises(TypeError, match="nn.Linear"):
        privatize_linear(model, gan_row_losses, torch.zeros((2, 3, DIM), dtype=torch.float64), groups, 3.0, None)


def test_ghost_group_norms_equal_the_norms_of_materialised_per_example_gradients() -> None:
    model = discriminator()
    real, fake, alpha = batch(7)
    names = ClippingGroups.build(model, 1.0, grouping="clustered").names
    expected = group_norms(per_example_gradients(model, gan_loss, real, fake, alpha), names)
    torch.testing.assert_close(linear_group_norms(model, gan_row_losses, torch.stack([real, fake]), names), expected)


@pytest.mark.parametrize("objective", ["wgan-gp", "gan"])
def test_a_dp_step_draws_its_fakes_from_the_privacy_generator_not_the_seeded_one(objective: str) -> None:
    # A private batch's realised size decides how many fakes it draws: from the seeded generator, every
    # later fake and generator step would shift with it, outside what the accountant sees.
    import pandas as pd

    from tabsynth import CategoricalColumn, ContinuousColumn, Encoder, Schema
    from tabsynth.models import Generator
    from tabsynth.store import CompactStore
    from tabsynth.training import DPGANTrainer, TrainingPlan

    schema = Schema((ContinuousColumn("x", lower=0, upper=1), CategoricalColumn("c", categories=("a", "b"))))
    encoder = Encoder(schema)
    rng = np.random.default_rng(0)
    rows = encoder.encode_compact(pd.DataFrame({"x": rng.random(200), "c": rng.choice(["a", "b"], 200)}))
    generator = Generator(8, encoder.layout, (16,), 0.2, 4, [])
    discriminator = Discriminator(encoder.dim, (16,))
    init = torch.Generator().manual_seed(0)
    init_linear(generator, init)
    init_linear(discriminator, init)
    seeded = torch.Generator().manual_seed(1)
    trainer = DPGANTrainer(generator, discriminator, ClippingGroups.build(discriminator, 1.0),
                           TrainingPlan(2, 0.25, 50.0, 1.0, 1e-5, "prv"), objective=objective, gp_weight=10.0,
                           generator_steps=1, generator_lr=1e-3, discriminator_lr=1e-3, torch_generator=seeded,
                           privacy_rng=np.random.default_rng(), privacy_generator=torch.Generator().manual_seed(2))
    before = seeded.get_state()
    trainer.discriminator_step(CompactStore(rows=rows))
    assert torch.equal(seeded.get_state(), before)
