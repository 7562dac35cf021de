"""The DP-GAN training loop: DP-SGD discriminator steps on Poisson batches, free generator steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch.func import grad

from tabsynth.models import Discriminator, Generator
from tabsynth.privacy.accounting import compute_epsilon
from tabsynth.privacy.dp_sgd import ClippingGroups, per_example_gradients, poisson_sample, privatize
from tabsynth.store import CompactStore

Objective = Literal["wgan-gp", "gan"]


@dataclass(frozen=True)
class TrainingPlan:
    """Everything the accountant needs, fixed before the first step: q, T, sigma, delta."""

    steps: int
    sample_rate: float
    expected_batch_size: float
    noise_multiplier: float
    delta: float
    accountant: str


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


class DPGANTrainer:
    """Runs the plan: every discriminator step is one accounted subsampled Gaussian mechanism."""

    def __init__(self, generator: Generator, discriminator: Discriminator, groups: ClippingGroups,
                 plan: TrainingPlan, *, objective: Objective, gp_weight: float, generator_steps: int,
                 generator_lr: float, discriminator_lr: float, torch_generator: torch.Generator,
                 privacy_rng: np.random.Generator, privacy_generator: torch.Generator) -> None:
        self.generator, self.discriminator = generator, discriminator
        self.groups, self.plan = groups, plan
        self.objective = objective
        self.loss = wgan_gp_loss(gp_weight) if objective == "wgan-gp" else gan_loss
        self.generator_steps = generator_steps
        self.device = next(discriminator.parameters()).device
        self.layout = generator.heads.compact.to(self.device)  # what the discriminator sees: the generator's output space
        # Model randomness may be seeded; the privacy randomness (Poisson sampling, Gaussian noise)
        # comes from OS entropy, so a known seed cannot be used to replay the noise.
        self.torch_generator = torch_generator
        self.privacy_rng, self.privacy_generator = privacy_rng, privacy_generator
        betas = (0.5, 0.9)
        self.g_optimizer = torch.optim.Adam(generator.parameters(), lr=generator_lr, betas=betas)
        self.d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=discriminator_lr, betas=betas)
        self.steps_done = 0

    def noise(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn((n, self.generator.noise_dim), generator=self.torch_generator, device=device)

    def rows(self, store: CompactStore, index: np.ndarray) -> torch.Tensor:
        """Encoded rows of ``store`` at ``index``, on the training device."""
        return self.layout.expand(torch.from_numpy(store.take(index)).to(self.device))

    def discriminator_step(self, data: CompactStore) -> None:
        """One DP-SGD step on a Poisson batch of the private rows."""
        real = self.rows(data, poisson_sample(len(data), self.plan.sample_rate, self.privacy_rng))
        # Each real row is paired with its own fake, drawn in eval mode: no fake (and no stored
        # batch-norm statistic) depends on the realised, data-dependent batch size.
        self.generator.eval()
        with torch.no_grad():
            fake = self.generator(self.noise(len(real), self.device), self.torch_generator)
        self.generator.train()
        alpha = torch.rand((len(real), 1), generator=self.torch_generator, device=self.device)
        per_example = per_example_gradients(self.discriminator, self.loss, real, fake, alpha)
        gradients = privatize(per_example, self.groups, self.plan.expected_batch_size, self.privacy_generator)
        for name, parameter in self.discriminator.named_parameters():
            parameter.grad = gradients[name]
        self.d_optimizer.step()
        self.steps_done += 1

    def public_discriminator_step(self, public: CompactStore, batch_size: int) -> None:
        """An ordinary (non-private) discriminator step on public rows: no clipping, no noise, no budget."""
        index = torch.randint(len(public), (batch_size,), generator=self.torch_generator, device=self.device)
        real = self.rows(public, index.cpu().numpy())
        self.generator.eval()
        with torch.no_grad():
            fake = self.generator(self.noise(batch_size, self.device), self.torch_generator)
        self.generator.train()
        alpha = torch.rand((batch_size, 1), generator=self.torch_generator, device=self.device)
        per_example = per_example_gradients(self.discriminator, self.loss, real, fake, alpha)
        for name, parameter in self.discriminator.named_parameters():
            parameter.grad = per_example[name].mean(0)
        self.d_optimizer.step()

    def generator_step(self, batch_size: int, device: torch.device) -> float:
        """Post-processing: the generator learns from the (already private) discriminator only."""
        self.g_optimizer.zero_grad(set_to_none=True)
        self.discriminator.requires_grad_(False)
        scores = self.discriminator(self.generator(self.noise(batch_size, device), self.torch_generator))
        loss = -scores.mean() if self.objective == "wgan-gp" else torch.nn.functional.softplus(-scores).mean()
        loss.backward()
        self.g_optimizer.step()
        self.discriminator.requires_grad_(True)
        return float(loss.detach())

    def epsilon_spent(self) -> float:
        """Training epsilon after the steps done so far (the same accountant the plan was calibrated with)."""
        return compute_epsilon(self.plan.noise_multiplier, self.plan.sample_rate, self.steps_done,
                               self.plan.delta, self.plan.accountant)

    def run(self, data: CompactStore, progress: Callable[[int, float], None] | None = None,
            public: CompactStore | None = None, warm_start_steps: int = 0) -> None:
        """Optional warm start on public rows, then all planned DP steps (calibrated for exactly this many)."""
        batch = max(2, int(round(self.plan.expected_batch_size)))  # batch norm needs two rows
        self.generator.train()
        for _ in range(warm_start_steps if public is not None else 0):
            self.public_discriminator_step(public, batch)
            for _ in range(self.generator_steps):
                self.generator_step(batch, self.device)
        for step in range(self.plan.steps):
            self.discriminator_step(data)
            for _ in range(self.generator_steps):
                loss = self.generator_step(batch, self.device)
            if progress is not None:
                progress(step + 1, loss)
        self.generator.eval()


__all__ = ["DPGANTrainer", "TrainingPlan", "gan_loss", "wgan_gp_loss"]
