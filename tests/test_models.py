"""The GAN networks: the discriminator has no cross-example coupling; the sampling fast path draws
from the same distributions as the training forward pass."""

from __future__ import annotations

import pytest
import torch

from tabsynth import BooleanColumn, CategoricalColumn, ContinuousColumn, Encoder, IntegerColumn, Schema
from tabsynth.models import LATENT_SCALE, Generator, OutputHeads, init_linear


def encoder() -> Encoder:
    return Encoder(Schema((CategoricalColumn("c", nullable=True, categories=("a", "b", "c")),
                           IntegerColumn("small", lower=0, upper=5), BooleanColumn("flag"),
                           ContinuousColumn("x", lower=0.0, upper=1.0))))


def trained_like_generator(enc: Encoder, latent_classes: int = 0) -> Generator:
    """A generator whose batch-norm statistics are not the identity, as after training."""
    generator = Generator(8, enc.layout, (32, 32), latent_classes=latent_classes)
    init_linear(generator, torch.Generator().manual_seed(0))
    generator.train()
    with torch.no_grad():
        for _ in range(5):
            generator.body(3.0 * torch.randn(256, generator.noise_dim, generator=torch.Generator().manual_seed(1)) + 1.0)
    return generator.eval()


def test_folded_batch_norm_layers_compute_the_eval_mode_body() -> None:
    generator = trained_like_generator(encoder())
    noise = torch.randn(100, 8)
    hidden = noise
    layers = generator.folded_layers()
    for weight, bias in layers[:-1]:
        hidden = torch.relu(hidden @ weight + bias)
    with torch.no_grad():
        torch.testing.assert_close(hidden @ layers[-1][0] + layers[-1][1], generator.body(noise), rtol=1e-4, atol=1e-5)


def test_compact_draws_follow_the_same_distribution_as_hard_one_hot_draws() -> None:
    enc = encoder()
    heads = OutputHeads(enc.layout)
    logits = torch.randn(1, heads.raw_dim, generator=torch.Generator().manual_seed(2)).repeat(40_000, 1)
    gen = torch.Generator().manual_seed(3)
    fast = enc.marginal_cells(heads.sample_compact(logits, gen).numpy())[0]
    slow = enc.marginal_cells(enc.compress(heads(logits, gen, hard=True)))[0]
    for j in range(fast.shape[1]):
        size = int(max(fast[:, j].max(), slow[:, j].max())) + 1
        shares_fast = torch.bincount(torch.from_numpy(fast[:, j]), minlength=size) / len(fast)
        shares_slow = torch.bincount(torch.from_numpy(slow[:, j]), minlength=size) / len(slow)
        assert (shares_fast - shares_slow).abs().max() < 0.015, j


def test_bfloat16_hidden_layers_change_the_output_layer_only_slightly() -> None:
    equal_mass = (0.0, 0.25, 0.5, 0.75, 1.0)  # knots without a point mass: one tanh output each
    enc = Encoder(Schema((*encoder().schema.columns, ContinuousColumn("u", lower=0.0, upper=1.0, knots=equal_mass),
                          ContinuousColumn("v", lower=0.0, upper=1.0, knots=equal_mass))))
    generator = trained_like_generator(enc)
    noise = torch.randn(2000, 8)
    exact = generator.sample_compact(noise, torch.Generator().manual_seed(4))
    fast = generator.sample_compact(noise, torch.Generator().manual_seed(4), hidden_dtype=torch.bfloat16)
    numbers = enc.compact.number_compact  # the tanh outputs, recomputed in float32
    assert len(numbers) == 2 and (exact[:, numbers] - fast[:, numbers]).abs().mean() < 0.01
    # Category and bit logits come out in bfloat16: the same uniforms give the same draw almost always.
    discrete = [f for f in range(exact.shape[1]) if f not in set(numbers.tolist())]
    assert (exact[:, discrete] != fast[:, discrete]).any(1).float().mean() < 0.01


def test_soft_cells_are_the_probabilities_of_the_sampled_cells() -> None:
    from tabsynth.models import SoftCells

    enc = Encoder(Schema((CategoricalColumn("c", nullable=True, categories=("a", "b", "c")),
                          IntegerColumn("small", lower=0, upper=4),  # drawn as one of its 5 values
                          BooleanColumn("flag"))))
    heads = OutputHeads(enc.layout)
    raw = (2.0 * torch.randn(1, heads.raw_dim, generator=torch.Generator().manual_seed(5))).repeat(60_000, 1)
    sampled = enc.marginal_cells(heads.sample_compact(raw, torch.Generator().manual_seed(6)).numpy())[0]
    for j, probs in enumerate(SoftCells(heads.raw_cell_specs(enc.cell_specs))(raw[:1])):
        shares = torch.bincount(torch.from_numpy(sampled[:, j]), minlength=probs.shape[1]) / len(sampled)
        assert (shares - probs[0]).abs().max() < 0.01, enc.cell_specs[j].name


def test_a_tanh_number_deep_inside_a_narrow_cell_still_gets_a_gradient_towards_its_target() -> None:
    from tabsynth.models import SoftCells

    knots = tuple(i / 100 for i in range(101))  # equal-mass: one tanh output, 100 cells of width 0.02
    enc = Encoder(Schema((ContinuousColumn("x", lower=0.0, upper=1.0, knots=knots),)))
    cells = SoftCells(enc.cell_specs)
    centre = torch.atanh(torch.tensor(-1.0 + 0.02 * 40.5))  # the middle of cell 40
    raw = centre.reshape(1, 1).clone().requires_grad_(True)
    probs = cells(raw)[0]
    assert probs[0, 40].item() > 0.999  # the value is (nearly) the hard cell's
    probs[0, 41].backward()  # more mass in the next cell up: push the value up
    assert raw.grad[0, 0].item() > 0.1


def test_the_discriminator_scores_each_row_independently_of_its_batch() -> None:
    from tabsynth.models import Discriminator

    discriminator = Discriminator(10, (16, 16))
    assert not any(isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)) for m in discriminator.modules())
    rows = torch.randn(50, 10)
    torch.testing.assert_close(discriminator(rows)[:1], discriminator(rows[:1]))


def test_a_numbers_place_in_its_cell_is_drawn_uniformly_whatever_the_generator_outputs() -> None:
    enc = encoder()
    heads = OutputHeads(enc.layout)
    places = enc.compact.place_compact
    assert len(places) == 1  # x: its cell is a category, its place is not modelled
    raw = torch.full((50_000, heads.raw_dim), 3.0)
    drawn = heads.sample_compact(raw, torch.Generator().manual_seed(7))[:, places].ravel()
    quartiles = torch.quantile(drawn, torch.tensor([0.25, 0.5, 0.75]))
    torch.testing.assert_close(quartiles, torch.tensor([-0.5, 0.0, 0.5]), atol=0.02, rtol=0)
    assert drawn.min() >= -1 and drawn.max() <= 1


def test_the_networks_see_no_place_in_a_cell_for_real_or_generated_rows() -> None:
    enc = encoder()
    place = enc.compact.place_dense
    real = enc.compact.expand(torch.tensor([[0.0, 1.0, 1.0, 1.0, 3.0, 0.7]]), places=False)
    heads = OutputHeads(enc.layout)
    fake = heads(torch.randn(10, heads.raw_dim), torch.Generator().manual_seed(8))
    assert real[:, place].eq(0).all() and fake[:, place].eq(0).all()
    assert enc.compact.expand(torch.tensor([[0.0, 1.0, 1.0, 1.0, 3.0, 0.7]]))[0, place].item() == pytest.approx(0.7)


def test_the_latent_class_is_one_hot_uniform_and_leaves_the_gaussian_inputs_alone() -> None:
    enc = encoder()
    generator = Generator(8, enc.layout, (32,), latent_classes=4)
    assert generator.noise_dim == 12  # one Gaussian draw per row: 4 pick the class, 8 go in as they are
    noise = torch.randn(40_000, 12, generator=torch.Generator().manual_seed(0))
    inputs = generator.inputs(noise)
    classes = inputs[:, :4]
    assert set(classes.unique().tolist()) == {0.0, LATENT_SCALE} and (classes.sum(1) == LATENT_SCALE).all()
    frequencies = (classes > 0).float().mean(0)
    torch.testing.assert_close(frequencies, torch.full((4,), 0.25), atol=0.01, rtol=0)
    torch.testing.assert_close(inputs[:, 4:], noise[:, 4:])


def test_the_fast_sampling_path_draws_what_the_eval_mode_generator_computes_with_its_latent_class() -> None:
    generator = trained_like_generator(encoder(), latent_classes=4)
    noise = torch.randn(500, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = generator.sample_compact(noise, torch.Generator().manual_seed(1))
        plain = generator.heads.sample_compact(generator.raw(noise), torch.Generator().manual_seed(1))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


def test_sampling_draws_the_latent_class_as_an_integer_with_the_distribution_of_the_gaussian_argmax() -> None:
    enc = encoder()
    generator = trained_like_generator(enc, latent_classes=4)
    with torch.no_grad():
        generator.body[0].weight[:, :4] *= 30.0  # the class decides much of each row
        sampled = generator.sample(40_000, torch.Generator().manual_seed(2), batch_size=7_000)
        noise = torch.randn(40_000, generator.noise_dim, generator=torch.Generator().manual_seed(3))
        reference = generator.sample_compact(noise, torch.Generator().manual_seed(4))
    cells, sizes, _ = enc.marginal_cells(sampled.numpy())
    reference_cells = enc.marginal_cells(reference.numpy())[0]
    assert sampled.shape == (40_000, enc.compact_dim)
    for j, size in enumerate(sizes):
        shares = torch.bincount(torch.from_numpy(cells[:, j]), minlength=size) / 40_000
        reference_shares = torch.bincount(torch.from_numpy(reference_cells[:, j]), minlength=size) / 40_000
        assert (shares - reference_shares).abs().max() < 0.015, enc.cell_specs[j].name


def test_sampling_in_batches_reuses_buffers_without_one_batch_overwriting_another() -> None:
    generator = trained_like_generator(encoder(), latent_classes=4)
    with torch.no_grad():
        whole = generator.sample(10_000, torch.Generator().manual_seed(5), batch_size=3_000)
        first = generator.sample(3_000, torch.Generator().manual_seed(5), batch_size=3_000)
    torch.testing.assert_close(whole[:3_000], first)  # same draws, untouched by the three batches after it
    assert not torch.equal(whole[9_000:], whole[:1_000])  # the last, shorter batch is its own


def test_a_category_without_alternatives_is_always_drawn() -> None:
    enc = Encoder(Schema((CategoricalColumn("only", categories=("x",)), BooleanColumn("flag"))))
    heads = OutputHeads(enc.layout)
    drawn = heads.sample_compact(torch.randn(100, heads.raw_dim), torch.Generator().manual_seed(0))
    assert (enc.decode_compact(drawn.numpy())["only"] == "x").all()


def test_a_binary_code_is_drawn_as_one_of_its_values_not_bit_by_bit() -> None:
    # A row split evenly between 0 (bits 000) and 7 (111): drawn bit by bit, it would give all eight codes.
    enc = Encoder(Schema((IntegerColumn("small", lower=0, upper=7),)))
    heads = OutputHeads(enc.layout)
    assert heads.raw_dim == 8 and enc.dim == 3  # a logit per value; the discriminator still sees three bits
    logits = torch.full((20_000, 8), -30.0)
    logits[:, [0, 7]] = 0.0
    draws = torch.Generator().manual_seed(0)
    fast = enc.decode_compact(heads.sample_compact(logits, draws).numpy())["small"]
    dense = heads(logits, draws, hard=True)
    assert set(fast.unique()) == {0, 7} and abs((fast == 7).mean() - 0.5) < 0.02
    assert set(dense.sum(1).tolist()) == {0.0, 3.0}  # the bits of 0 or of 7, never a mix
