"""The CUDA path: the DP step, the budget and the model file are those of the CPU path (skipped without CUDA)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch

from tabsynth import Synthesizer
from tabsynth.datasets import load_demo
from tabsynth.models import Discriminator
from tabsynth.privacy.dp_sgd import ClippingGroups, per_example_gradients, privatize, privatize_linear
from tabsynth.synthesizer import _resolve_device
from tabsynth.training import gan_row_losses, wgan_gp_loss

from conftest import recomputed_training_epsilon
from test_dp_sgd import batch, discriminator
from test_synthesizer import FAST

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

def on(device: str) -> tuple[Discriminator, Callable[[int], tuple[torch.Tensor, ...]]]:
    """test_dp_sgd's discriminator and batches, on ``device``."""
    return discriminator().to(device), lambda n: tuple(t.to(device) for t in batch(n))


def noiseless(groups: ClippingGroups) -> ClippingGroups:
    return replace(groups, noise_stds=(0.0,) * len(groups.names), count_noise_std=1e-12)


def assert_same_on_cpu_and_cuda(release: Callable[[str], dict[str, torch.Tensor]]) -> None:
    """``release(device)``'s gradients on CUDA equal those on the CPU, name by name."""
    on_cpu, on_cuda = release("cpu"), release("cuda")
    for name, value in on_cpu.items():
        torch.testing.assert_close(on_cuda[name].cpu(), value)


def test_clipped_per_example_gradients_on_cuda_equal_those_on_cpu() -> None:
    def release(device: str) -> dict[str, torch.Tensor]:
        model, batches = on(device)
        groups = noiseless(ClippingGroups.build(model, 1.0, clip_bound=0.3, grouping="weight_bias"))
        real, fake, alpha = batches(16)
        per_example = per_example_gradients(model, wgan_gp_loss(10.0), real * 3, fake, alpha)
        return privatize(per_example, groups, 16.0, None).gradients

    assert_same_on_cpu_and_cuda(release)


def test_ghost_clipping_on_cuda_equals_ghost_clipping_on_cpu() -> None:
    def release(device: str) -> dict[str, torch.Tensor]:
        model, batches = on(device)
        groups = noiseless(ClippingGroups.build(model, 1.0, clip_bound=0.3, grouping="clustered"))
        real, fake, _ = batches(20)
        return privatize_linear(model, gan_row_losses, torch.stack([real * 3, fake]), groups, 20.0, None).gradients

    assert_same_on_cpu_and_cuda(release)


def test_noise_drawn_on_cuda_has_the_planned_std() -> None:
    model, _ = on("cuda")
    groups = ClippingGroups.build(model, noise_multiplier=2.0, clip_bound=1.0, grouping="weight_bias")
    empty = {n: torch.zeros((0, *p.shape), dtype=torch.float64, device="cuda") for n, p in model.named_parameters()}
    gen = torch.Generator(device="cuda").manual_seed(0)
    draws = [privatize(empty, groups, 1.0, gen).gradients for _ in range(200)]
    for names, std in zip(groups.names, groups.noise_stds):
        values = torch.cat([torch.cat([d[n].flatten() for n in names]) for d in draws])
        assert float(values.std()) == pytest.approx(std, rel=0.05)


@pytest.fixture(scope="module")
def cps() -> pd.DataFrame:
    return load_demo("cps_2004").head(1500)


@pytest.fixture(scope="module")
def fitted_on_cuda(cps: pd.DataFrame) -> Synthesizer:
    return Synthesizer(**FAST, device="cuda").fit(cps, epsilon=1.0)


def test_a_fit_on_cuda_spends_no_more_than_its_budget_by_the_reported_mechanism(fitted_on_cuda: Synthesizer) -> None:
    reported, recomputed = recomputed_training_epsilon(fitted_on_cuda)
    assert reported == pytest.approx(recomputed)
    report = fitted_on_cuda.privacy_report()
    assert report["steps"] == FAST["steps"]
    assert 0 < report["epsilon"] <= 1.0


def test_a_model_fitted_on_cuda_samples_the_input_columns_and_dtypes(cps: pd.DataFrame,
                                                                     fitted_on_cuda: Synthesizer) -> None:
    sample = fitted_on_cuda.sample(500, seed=0)
    assert list(sample.columns) == list(cps.columns)
    assert sample.dtypes.astype(str).tolist() == cps.dtypes.astype(str).tolist()
    assert next(fitted_on_cuda.generator_.parameters()).device.type == "cpu"


def test_a_model_fitted_on_cuda_loads_and_samples_where_no_gpu_is_visible(fitted_on_cuda: Synthesizer,
                                                                          tmp_path: Path) -> None:
    model, out = tmp_path / "model.tabsynth", tmp_path / "sample.parquet"
    fitted_on_cuda.save(model)
    script = ("import sys, torch; from tabsynth import Synthesizer; assert not torch.cuda.is_available(); "
              "Synthesizer.load(sys.argv[1]).sample(300, seed=7).to_parquet(sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, str(model), str(out)], check=True,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    fitted_on_cuda.sample(300, seed=7).to_parquet(tmp_path / "here.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "here.parquet"))


def test_device_auto_resolves_to_cuda_when_it_is_there() -> None:
    assert _resolve_device("auto") == torch.device("cuda")
