"""Clipping groups: weight clustering, adaptive bounds (public and private), and their accounting."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from tabsynth import Schema, Synthesizer
from tabsynth.datasets import load_demo
from tabsynth.models import Discriminator, init_linear
from tabsynth.privacy.accounting import compute_epsilon, effective_noise_multiplier
from tabsynth.privacy.clipping import (MAX_COUNT_SHARE, ClippingSchedule, cluster_groups, parameter_groups,
                                       quantile_count_noise, quantile_update)
from tabsynth.privacy.dp_sgd import ClippingGroups, privatize

FAST = dict(marginal_steps=5, batch_size=64, generator_hidden=(16,), discriminator_hidden=(16,), noise_dim=8, seed=0,
            warm_start_epochs=0)


def discriminator() -> Discriminator:
    model = Discriminator(5, (8, 4))
    init_linear(model, torch.Generator().manual_seed(0))
    return model.double()


def gradients_with_norms(norms: np.ndarray, groups: ClippingGroups) -> dict[str, torch.Tensor]:
    """Per-example gradients whose group-j norm is norms[:, j] (each spread evenly over the group's tensors)."""
    model = dict(discriminator().named_parameters())
    out = {}
    for j, names in enumerate(groups.names):
        for name in names:
            shape = model[name].shape
            unit = torch.ones((len(norms), *shape), dtype=torch.float64) / math.sqrt(groups.sizes[j])
            out[name] = unit * torch.as_tensor(norms[:, j]).reshape(-1, *([1] * len(shape)))
    return out


# --- grouping and clustering -------------------------------------------------------------------


def test_parameter_groups_are_one_weights_and_biases_or_one_per_tensor() -> None:
    model = discriminator()
    names = [n for n, _ in model.named_parameters()]
    assert parameter_groups(model, "flat") == (tuple(names),)
    weights, biases = parameter_groups(model, "weight_bias")
    assert all(n.endswith("weight") for n in weights) and all(n.endswith("bias") for n in biases)
    assert parameter_groups(model, "clustered") == tuple((n,) for n in names)
    with pytest.raises(ValueError, match="clip_grouping"):
        parameter_groups(model, "per_layer")


def test_clustering_merges_the_two_groups_closest_in_ratio_first() -> None:
    names = (("a",), ("b",), ("c",), ("d",))
    merged, bounds = cluster_groups(names, [1.0, 1.1, 5.0, 20.0], k=3)
    assert merged == (("a", "b"), ("c",), ("d",))
    assert bounds == pytest.approx((math.hypot(1.0, 1.1), 5.0, 20.0))
    merged, bounds = cluster_groups(names, [1.0, 1.1, 5.0, 20.0], k=2)
    assert merged == (("a", "b", "c"), ("d",))  # 5 / 1.487 beats 20 / 5
    assert bounds == pytest.approx((math.sqrt(1.0 + 1.21 + 25.0), 20.0))


def test_clustering_keeps_the_whole_vectors_bound() -> None:
    bounds = np.random.default_rng(0).uniform(0.1, 3.0, size=9)
    for k in range(1, 10):
        _, merged = cluster_groups(tuple((str(i),) for i in range(9)), bounds, k)
        assert len(merged) == k
        assert math.sqrt(sum(b * b for b in merged)) == pytest.approx(float(np.linalg.norm(bounds)))


def test_clustered_groups_keep_every_parameter_once_and_their_sizes() -> None:
    model = discriminator()
    groups = ClippingGroups.build(model, 1.0, grouping="clustered")
    clustered = groups.clustered(3, 1.0)
    assert sorted(n for g in clustered.names for n in g) == sorted(n for n, _ in model.named_parameters())
    numel = dict((n, p.numel()) for n, p in model.named_parameters())
    assert clustered.sizes == tuple(sum(numel[n] for n in g) for g in clustered.names)
    assert clustered.noise_multiplier == pytest.approx(1.0, rel=1e-12)


def test_clustering_refuses_bad_bounds_and_cluster_counts() -> None:
    with pytest.raises(ValueError, match="positive"):
        cluster_groups((("a",), ("b",)), [1.0, 0.0], 1)
    with pytest.raises(ValueError, match="clusters"):
        cluster_groups((("a",),), [1.0], 0)


# --- accounting of released counts --------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 6])
def test_released_counts_and_gradient_form_one_gaussian_at_the_calibrated_multiplier(k: int) -> None:
    sizes, bounds = [10 * (j + 1) for j in range(k)], [0.2 * (j + 1) for j in range(k)]
    count_std = quantile_count_noise(512, k, 1.7)
    groups = ClippingGroups.allocate([(str(j),) for j in range(k)], sizes, bounds, 1.7, count_std)
    # The counts are k more coordinates of sensitivity 1/2 each: as one more group of bound sqrt(k)/2.
    whole = effective_noise_multiplier([*groups.clip_bounds, math.sqrt(k) / 2], [*groups.noise_stds, count_std])
    assert whole == pytest.approx(1.7, rel=1e-12)
    assert groups.noise_multiplier == pytest.approx(1.7, rel=1e-12)
    # ... and the gradient alone is noisier than it would be without the counts, by at most the cap.
    share = (k / (4 * count_std**2)) * 1.7**2
    assert 0 < share <= MAX_COUNT_SHARE + 1e-12
    assert effective_noise_multiplier(groups.clip_bounds, groups.noise_stds) > 1.7


def test_one_added_record_moves_each_released_count_by_one_half() -> None:
    groups = ClippingGroups.build(discriminator(), 1.0, clip_bound=1.0, grouping="weight_bias")
    groups = replace(groups, noise_stds=(0.0, 0.0), count_noise_std=1e-12)  # (almost) no noise: the raw counts
    norms = np.abs(np.random.default_rng(0).normal(0.7, 0.5, size=(20, 2)))
    with_all = privatize(gradients_with_norms(norms, groups), groups, 10.0, None).unclipped_fraction
    without = privatize(gradients_with_norms(norms[:-1], groups), groups, 10.0, None).unclipped_fraction
    np.testing.assert_allclose(np.abs(with_all - without) * 10.0, 0.5, atol=1e-9)


def test_released_counts_estimate_the_unclipped_fraction() -> None:
    groups = ClippingGroups.build(discriminator(), 1.0, clip_bound=math.sqrt(2), grouping="weight_bias",
                                  count_noise_std=quantile_count_noise(400, 2, 1.0))
    norms = np.column_stack([np.full(400, 0.5), np.full(400, 2.0)])  # bounds are 1.0 each
    norms[:100, 1] = 0.1
    fractions = np.array([privatize(gradients_with_norms(norms, groups), groups, 400.0,
                                    torch.Generator().manual_seed(s)).unclipped_fraction for s in range(50)])
    np.testing.assert_allclose(fractions.mean(0), [1.0, 0.25], atol=0.02)


def test_no_counts_are_released_without_private_adaptive_clipping() -> None:
    groups = ClippingGroups.build(discriminator(), 1.0)
    norms = np.ones((4, 1))
    assert privatize(gradients_with_norms(norms, groups), groups, 4.0, None).unclipped_fraction is None


def test_count_noise_that_would_leave_the_gradient_no_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="no privacy budget"):
        ClippingGroups.allocate([("a",)], [3], [1.0], noise_multiplier=2.0, count_noise_std=0.5)


# --- adaptive bounds ------------------------------------------------------------------------------


def test_quantile_tracking_converges_to_the_target_quantile_of_the_norms() -> None:
    rng = np.random.default_rng(0)
    groups = ClippingGroups.build(discriminator(), 1.0, clip_bound=0.01, grouping="weight_bias",
                                  count_noise_std=quantile_count_noise(500, 2, 1.0))
    gen = torch.Generator().manual_seed(0)
    scales = np.array([1.0, 4.0])
    bounds = groups.clip_bounds
    for _ in range(300):
        norms = rng.lognormal(0.0, 0.5, size=(500, 2)) * scales
        released = privatize(gradients_with_norms(norms, groups), groups, 500.0, gen)
        bounds = quantile_update(bounds, released.unclipped_fraction, target_quantile=0.5, learning_rate=0.2)
        groups = groups.reallocated(bounds, 1.0)
    np.testing.assert_allclose(bounds, scales * 1.0, rtol=0.1)  # the median of lognormal(0, s) is 1


def test_the_schedule_adapts_from_counts_or_public_norms_only_when_told() -> None:
    bounds = (1.0, 1.0)
    public = lambda: np.array([0.3, 0.0])  # noqa: E731 (a zero estimate keeps the old bound)
    assert ClippingSchedule("public").next_bounds(0, bounds, None, public) == (0.3, 1.0)
    assert ClippingSchedule("off").next_bounds(0, bounds, None, public) == bounds
    moved = ClippingSchedule("private").next_bounds(0, bounds, np.array([1.0, 0.0]), None)
    assert moved[0] < 1.0 < moved[1]
    schedule = ClippingSchedule("off", clusters=2, cluster_after=5)
    assert schedule.counts_at(4) and not schedule.counts_at(5) and schedule.releases_counts


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cps() -> pd.DataFrame:
    return load_demo("cps_2004").head(1200)


@pytest.mark.parametrize("adaptive", ["public", "private"])
def test_clustered_adaptive_training_reports_k_groups_and_recomputes_its_epsilon(adaptive: str,
                                                                                  cps: pd.DataFrame) -> None:
    synth = Synthesizer(**FAST, steps=6, clip_grouping="clustered", clip_clusters=2,
                        adaptive_clipping=adaptive).fit(cps, epsilon=1.0, public=load_demo("cps_1992"))
    report = synth.privacy_report()
    clipping = report["clipping"]
    assert len(clipping["groups"]) == 2 and clipping["adaptive"] == adaptive
    assert clipping["effective_noise_multiplier"] == pytest.approx(report["noise_multiplier"], rel=1e-9)
    training = report["ledger"]["entries"][-1]
    assert training["epsilon"] == pytest.approx(compute_epsilon(
        report["noise_multiplier"], report["sample_rate"], report["steps"], training["details"]["accountant_delta"],
        synth.settings.accountant,
        extra_gaussian=training["details"]["gaussian_noise_multiplier"]))
    assert ("adaptive_clipping" in training["details"]) == (adaptive == "private")
    assert (clipping["count_noise_std"] > 0) == (adaptive == "private")


def test_clustering_without_public_data_estimates_bounds_privately_first(cps: pd.DataFrame) -> None:
    schema = Schema.infer(load_demo("cps_1992"))
    synth = Synthesizer(**FAST, steps=10, clip_grouping="clustered", clip_clusters=3,
                        adaptive_clipping="off").fit(cps, 1.0, schema=schema)
    report = synth.privacy_report()
    assert len(report["clipping"]["groups"]) == 3
    assert report["clipping"]["count_noise_std"] == 0  # counts only before clustering; bounds fixed after
    assert "adaptive_clipping" in report["ledger"]["entries"][-1]["details"]


def test_public_adaptive_clipping_without_public_data_is_refused(cps: pd.DataFrame) -> None:
    schema = Schema.infer(load_demo("cps_1992"))
    with pytest.raises(ValueError, match="adaptive_clipping='public' needs a public table"):
        Synthesizer(**FAST, steps=2, adaptive_clipping="public").fit(cps, 1.0, schema=schema)


def test_auto_adaptive_clipping_is_public_with_public_data_and_private_without(cps: pd.DataFrame) -> None:
    public = load_demo("cps_1992")
    with_public = Synthesizer(**FAST, steps=2, adaptive_clipping="auto").fit(cps, 1.0, public=public)
    without = Synthesizer(**FAST, steps=2, adaptive_clipping="auto").fit(cps, 1.0, schema=Schema.infer(public))
    assert with_public.privacy_report()["clipping"]["adaptive"] == "public"
    assert without.privacy_report()["clipping"]["adaptive"] == "private"


@pytest.mark.parametrize("setting, value", [("clip_grouping", "per_layer"), ("clip_clusters", 0),
                                            ("adaptive_clipping", "always"), ("clip_quantile", 1.0)])
def test_bad_clipping_settings_are_refused_by_name(setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=setting):
        Synthesizer(**{setting: value})
