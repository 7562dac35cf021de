"""``Synthesizer``: the facade that wires schema, encoder, DP machinery, GAN and persistence together.

Unit of privacy: one row of the private table (add/remove adjacency). If one person spans several
rows, the guarantee per person is weaker (group privacy: k rows cost about k times epsilon);
aggregate to one row per person first.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from tabsynth.encoding import Encoder
from tabsynth.io import TableLike, TableSource, new_file_mode, open_table, schema_from_text, schema_to_text
from tabsynth.models import Discriminator, Generator, OutputHeads, init_linear
from tabsynth.privacy.accounting import (ACCOUNTANTS, DEFAULT_ACCOUNTANT, PRV_MAX_POINTS, calibrate_noise_multiplier,
                                         zcdp_budget)
from tabsynth.privacy.clipping import ADAPTIVE_CLIPPING, GROUPINGS, MAX_COUNT_SHARE, ClippingSchedule
from tabsynth.privacy.discovery import (ComposedDiscovery, discover_new_categories_composed, discover_schema_composed,
                                        known_rows)
from tabsynth.privacy.dp_sgd import ClippingGroups
from tabsynth.privacy.ledger import BudgetExceededError, PrivacyLedger
from tabsynth.privacy.marginals import (PAIR_RESOLUTION, PUBLIC_PAIR_CELLS, MarginalMeasurements, choose_pairs, dependence_stars,
                                        group_cells, histograms, measure_marginals, pair_groups, pair_size_bounds,
                                        pooled_one_way, public_prior, smoothed, with_public_pairs)
from tabsynth.privacy.mechanisms import MIN_COUNT_EPSILON, discrete_laplace_count
from tabsynth.sampling import rake, systematic_resample, target_distributions
from tabsynth.rules import Rule, RulesUnmetError
from tabsynth.schema import (BooleanColumn, CategoricalColumn, ContinuousColumn, DatetimeColumn, DurationColumn,
                             IntegerColumn, Schema, SchemaError, column_differences, is_duration_dtype, level_dtype,
                             read_dtype, zone_of)
from tabsynth.store import CompactStore
from tabsynth.training import (DPGANTrainer, MarginalLoss, TrainingPlan, functional_edges, initial_edge_weights,
                               marginal_learning_rate, marginal_step_count)

MODEL_FORMAT = "tabsynth.model"
MODEL_VERSION = 9  # 4: binary codes up to 128 values, marginal settings; 5: numbers as cell and place;
# 6: the generator's latent class; 7: the generator draws binary codes as whole values; 8: conditioning edges;
# 9: geo coordinates as drawn cells and places
SAMPLE_CHUNK = 131_072  # rows per sampled batch (and per Parquet row group)
# Calibration draws at least this many generator rows: from a pool of 1.25 n a sample of 5 rows
# repeated a heavily weighted row (rows 0 and 1 of a sample of 4 were one generator row).
MIN_CALIBRATION_POOL = 1024
GENERATOR_BATCH = 16_384  # rows per generator forward pass: small enough for its buffers to be reused, not page-faulted anew
DISCOVERY_ROWS = 1_000_000  # DP domain discovery reads a Poisson subsample of about this many rows
# Of the delta left after the row count, the share that bounds DP discovery's release of a category or
# point mass held by one row (its thresholds); the accountant composes the Gaussian mechanisms at the rest.
DISCOVERY_THRESHOLD_SHARE = 0.1
CLUSTER_AFTER_FRACTION = 0.1  # share of DP steps that estimate per-tensor bounds before clustering (no public data)
MAX_REJECTION_DRAWS = 50  # generator rows drawn per wanted row before sampling with rules gives up
# A pair's noisy dependence (total variation from independence, less the noise's share) above which
# its columns may be drawn one given the other.
MIN_EDGE_DEPENDENCE = 0.02
REJECTION_BATCH = 4096  # least generator rows drawn per round of rejection sampling
PUBLIC_ROWS = 1_000_000  # schema inference and warm start read a uniform sample of the public table
UNIT_OF_PRIVACY = ("one row of the private table (add/remove adjacency); a person spanning k rows "
                   "is protected at roughly k times epsilon")


class ModelFileError(ValueError):
    """A model file is missing, corrupt, or from an unsupported format version."""


class TrainingDivergedError(RuntimeError):
    """Training ended with a generator whose weights or draws are not finite numbers."""


@dataclass(frozen=True)
class Settings:
    """Training settings; see ``Synthesizer`` for their meaning."""

    generator_hidden: tuple[int, ...] = (256,)
    discriminator_hidden: tuple[int, ...] = (128, 128)
    noise_dim: int = 64
    latent_classes: int = 32
    batch_size: int = 1024
    epochs: float = 3.0
    steps: int | None = None
    max_steps: int = 1000
    generator_steps: int = 1
    generator_lr: float = 2e-4
    discriminator_lr: float = 2e-4
    objective: Literal["wgan-gp", "gan"] = "gan"
    gp_weight: float = 10.0
    clip_bound: float = 1.0
    clip_grouping: Literal["flat", "weight_bias", "clustered"] = "clustered"
    clip_clusters: int = 3
    adaptive_clipping: Literal["auto", "off", "public", "private"] = "auto"
    clip_quantile: float = 0.5
    temperature: float = 0.2
    accountant: str = DEFAULT_ACCOUNTANT
    count_fraction: float = 0.01
    discovery_fraction: float = 0.3
    new_category_fraction: float = 0.02
    marginal_fraction: float = 0.95
    marginal_pairs: int | None = None
    marginal_weight: float = 5.0
    marginal_steps: int = 3000
    marginal_lr: float = 6e-3
    conditioning: bool = True
    oversample: float = 1.25
    sample_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    fit_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    warm_start_epochs: float = 5.0
    on_invalid: Literal["raise", "clip"] = "clip"
    device: str = "auto"
    seed: int | None = None
    verbose: bool = False

    def validated(self) -> "Settings":
        """These settings checked, numbers as plain ``int`` and ``float`` (numpy scalars accepted), or a
        ``ValueError`` naming the first bad setting."""
        values = asdict(self)
        for name in ("noise_dim", "batch_size", "max_steps", "generator_steps", "clip_clusters"):
            values[name] = _integer(name, values[name], 1)
        values["marginal_steps"] = _integer("marginal_steps", self.marginal_steps, 0)
        if self.marginal_pairs is not None:
            values["marginal_pairs"] = _integer("marginal_pairs", self.marginal_pairs, 0, "None (every pair) or an integer >= 0")
        if self.steps is not None:
            values["steps"] = _integer("steps", self.steps, 1)
        if self.seed is not None:
            values["seed"] = _integer("seed", self.seed, 0)
        latent = _integer("latent_classes", self.latent_classes, 0, "0 (none) or an integer >= 2")
        if latent == 1:
            raise ValueError(f"latent_classes must be 0 (none) or an integer >= 2, got {self.latent_classes!r}")
        values["latent_classes"] = latent
        for name in ("generator_hidden", "discriminator_hidden"):
            widths = getattr(self, name)
            try:
                values[name] = tuple(_integer(name, v, 1) for v in widths)
            except (TypeError, ValueError):
                values[name] = ()
            if not values[name]:
                raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {widths!r}")
        positive = lambda x: x > 0  # noqa: E731
        for name in ("epochs", "generator_lr", "discriminator_lr", "marginal_lr", "clip_bound", "temperature"):
            values[name] = _real(name, values[name], positive, "a positive number")
        values["gp_weight"] = _real("gp_weight", self.gp_weight, lambda x: x >= 0, "a number >= 0")
        values["clip_quantile"] = _real("clip_quantile", self.clip_quantile, lambda x: 0 < x < 1, "a number in (0, 1)")
        for name in ("count_fraction", "discovery_fraction"):
            values[name] = _real(name, values[name], lambda x: 0 < x < 0.5, "a number in (0, 0.5)")
        values["new_category_fraction"] = _real("new_category_fraction", self.new_category_fraction,
                                                lambda x: 0 <= x < 0.5, "a number in [0, 0.5)")
        values["marginal_fraction"] = _real("marginal_fraction", self.marginal_fraction, lambda x: 0 <= x <= 0.99,
                                            "a number in [0, 0.99]")
        for name in ("marginal_weight", "warm_start_epochs"):
            values[name] = _real(name, values[name], lambda x: x >= 0, "a number >= 0")
        values["oversample"] = _real("oversample", self.oversample, lambda x: x >= 1, "a number >= 1")
        choices = {"clip_grouping": GROUPINGS, "adaptive_clipping": ("auto", *ADAPTIVE_CLIPPING),
                   "objective": ("wgan-gp", "gan"), "accountant": ACCOUNTANTS,
                   "sample_precision": ("auto", "float32", "bfloat16"),
                   "fit_precision": ("auto", "float32", "bfloat16"),
                   "on_invalid": ("raise", "clip")}
        for name, allowed in choices.items():
            if not isinstance(values[name], str) or values[name] not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {values[name]!r}")
        for name in ("conditioning", "verbose"):
            if not isinstance(values[name], (bool, np.bool_, numbers.Integral)) or values[name] not in (0, 1):
                raise ValueError(f"{name} must be True or False, got {values[name]!r}")
            values[name] = bool(values[name])
        device = self.device
        if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        return Settings(**values)


def _integer(name: str, value: object, least: int, wanted: str | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (Python or numpy, not a bool) of at least ``least``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < least:
        wanted = wanted or ("a positive integer" if least == 1 else f"an integer >= {least}")
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def _real(name: str, value: object, ok: Callable[[float], bool], wanted: str) -> float:
    """``value`` as a ``float`` if it is a finite real number (Python or numpy, not a bool) for which ``ok`` holds."""
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or not ok(float(value))):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return float(value)


class Synthesizer:
    """Differentially private synthetic data from a GAN whose discriminator is trained by DP-SGD.

    Settings (keyword-only): network widths ``generator_hidden`` / ``discriminator_hidden``,
    ``noise_dim`` (Gaussian inputs of the generator) and ``latent_classes`` (a uniform class it also
    gets, one-hot; 0: none); ``batch_size`` (expected Poisson batch), ``epochs`` or ``steps`` (discriminator
    steps, each one accounted; the steps that ``epochs`` give, and the public warm start's, stop at
    ``max_steps``, so a large table costs no more fitting time than a table of ``max_steps`` batches,
    while an explicit ``steps`` is taken as given); ``generator_steps`` per discriminator step (free:
    no private data); learning rates; ``objective`` "gan" or "wgan-gp" (``gp_weight``); ``clip_bound`` (of the whole
    per-example gradient, shared by the groups), ``clip_grouping`` ("flat"; "weight_bias": weights and
    biases clipped apart; "clustered", the default: one group per tensor, merged by weight clustering
    into ``clip_clusters`` groups), ``adaptive_clipping`` ("off"; "public": bounds from mean gradient
    norms on public rows, free; "private": bounds track the ``clip_quantile`` of the private norms
    through noisy counts inside the DP-SGD mechanism; "auto", the default: public with a public
    table, else private; see docs/ablation.md for what each buys);
    ``accountant`` "prv" (the default) or
    "rdp"; the budget fractions for the private row count (of epsilon), for domain discovery (no schema,
    no public table; ``discovery_fraction``, of the zCDP budget rho left after the row count: one
    Gaussian release the accountant composes with the marginals and DP-SGD) and
    ``new_category_fraction`` (with a public table: private categories the schema lacks, by DP
    discovery, of rho too and composed likewise; 0 skips it); the DP marginals: ``marginal_fraction``
    (share of the zCDP budget left after the row count, less a discovery release's share, that one
    Gaussian mechanism spends on all one-way and two-way marginals, composed
    with DP-SGD by the accountant; 0.95 by default, as the generator learns mostly from them; 0 turns
    them off), ``marginal_pairs`` (None, the default: every pair of
    at most 4,096 cells, coarse where its noise needs it; a number caps them),
    ``marginal_steps`` generator steps fitting them alone at ``marginal_lr`` before the GAN (the step
    count and rate at low noise; for noisier marginals, e.g. at epsilon 0.3 on 30,000 rows, down to
    4/5 of the steps and a third of the rate), and
    ``marginal_weight`` of their loss in every GAN generator step; ``conditioning`` (default on):
    the generator draws some columns given the drawn values of others, each child given up to three
    parents that are children of none, joined strongest first by the marginals' noisy dependence
    (``MIN_EDGE_DEPENDENCE``; ``dependence_stars``; post-processing, free),
    each edge's weights starting at the measured pair's pointwise mutual information, so that
    strongly tied columns (a code and its label, a relationship and a marital status) keep their
    structural zeros, which a generator drawing columns independently given its input blurs;
    ``on_invalid`` for values outside a declared domain; ``oversample`` (generator rows drawn per
    sampled row, for calibration; at least ``MIN_CALIBRATION_POOL`` in all) and ``sample_precision`` ("auto": the generator's hidden layers in
    bfloat16 when the CPU computes it natively, which doubles sampling speed and leaves fidelity
    unchanged; samples for a seed then repeat on the same kind of CPU); ``fit_precision`` ("auto": the
    generator's steps, which read no private data, multiply matrices in bfloat16 where the device
    does so natively: Adult fits in 46 s instead of 63 at the same fidelity; the DP-SGD steps always
    run in float32); ``device``; ``seed`` (model randomness
    only: the privacy noise always comes from OS entropy and the seed is never saved); ``verbose``.
    """

    def __init__(self, **settings: Any) -> None:
        unknown = sorted(set(settings) - {f for f in Settings.__dataclass_fields__})
        if unknown:
            raise TypeError(f"unknown Synthesizer settings: {unknown}")
        self.settings = Settings(**settings).validated()

    # --- fitting --------------------------------------------------------------------------

    def fit(self, df: TableLike, epsilon: float = 1.0, delta: float | None = None,
            schema: Schema | None = None, public: TableLike | None = None) -> "Synthesizer":
        """Train under (epsilon, delta)-DP on ``df``; the domain comes from ``schema``, ``public`` or DP discovery.

        ``df`` and ``public`` are DataFrames or paths of Parquet files, Parquet directories or CSV
        files. A Parquet table is scanned in batches and kept in compact form in a scratch file, so
        it may be larger than memory.
        """
        s = self.settings
        # A DataFrame is named as the argument; a file as what it is (the CLI passes its path).
        source = open_table(df, "df" if isinstance(df, pd.DataFrame) else "private table")
        public_source = open_table(public, "public", public=True) if public is not None else None
        if source.types_from_values and schema is None and public_source is None:
            raise SchemaError("the private table is a CSV file: its column types would be inferred from the private values (one "
                              "record can turn a column of numbers into text, or of integers into floats), "
                              "which DP discovery cannot account for. Pass schema= (tabsynth.Schema.infer on a "
                              "public table, or declared by hand) or public=, or read the file yourself and "
                              "pass a DataFrame whose dtypes you have declared")
        if public_source is not None:
            _check_same_columns(source, public_source)
        epsilon = _real("epsilon", epsilon, lambda x: x > 0, "a positive finite number")
        if delta is not None:
            delta = _real("delta", delta, lambda x: 0 < x < 1, "a number in (0, 1)")
        device = _resolve_device(s.device)
        # ``seed`` fixes model randomness only. Every draw that protects privacy (Laplace, Gaussian,
        # Poisson sampling, discovery) comes from OS entropy: a known seed must not replay the noise.
        rng = np.random.default_rng(s.seed)
        torch_generator_seed = int(rng.integers(2**63 - 1))
        privacy_rng = np.random.default_rng()
        public_frame = None
        if public_source is not None:
            public_frame = public_source.sample(PUBLIC_ROWS / public_source.count_rows(), rng)[source.columns]
            if schema is None:  # the schema will come from the public table
                _check_same_kinds(source.empty(), public_frame, untyped=source.untyped_columns)

        # Row count: a DP estimate, so that q, T and delta's checks depend on the data only through it.
        count_epsilon = s.count_fraction * epsilon
        if count_epsilon < MIN_COUNT_EPSILON:
            raise BudgetExceededError(f"epsilon={epsilon:.4g} is too small: its share for the row count "
                                      f"(count_fraction={s.count_fraction:g}) is below {MIN_COUNT_EPSILON:g}")
        dp_rows = float(max(1, discrete_laplace_count(source.count_rows(), count_epsilon, privacy_rng)))
        if delta is None:
            delta = _default_delta(dp_rows)
        elif delta >= 1.0 / dp_rows:
            raise ValueError(f"delta={delta} is not below 1/n for this table; such a delta permits "
                             f"releasing whole records. Use delta <= 1e-5 and well below 1/n")
        ledger = PrivacyLedger(epsilon, delta)
        ledger.spend("row count", "discrete laplace", count_epsilon, 0.0, value=round(dp_rows),
                     note="sets the sampling rate, the step count, the default delta and the default "
                          "number of rows to sample")

        # Whole-table Gaussian mechanisms (a discovery release, the DP marginals) and DP-SGD share what
        # is left, composed by the accountant (not added up): the releases take shares of its zCDP
        # budget rho, DP-SGD's noise is calibrated for what they leave.
        discovering = schema is None and public_frame is None
        finding_new = public_frame is not None and s.new_category_fraction > 0
        joint = _JointBudget.left_in(ledger, s.accountant,
                                     DISCOVERY_THRESHOLD_SHARE if discovering or finding_new else 0.0)
        discovery = None
        if discovering:
            discovery = self._discover(source, joint, dp_rows, privacy_rng)
            schema = discovery.schema
        source, schema = self._resolve_schema(source, schema, public_frame)
        row_filter = None
        if public_frame is not None:
            # A domain from public knowledge may lack categories of the private year: DP discovery adds
            # those it can release, and rows holding one it cannot are left out of training (a per-row filter).
            if finding_new:
                discovery = discover_new_categories_composed(
                    source.sample(DISCOVERY_ROWS / dp_rows, privacy_rng), schema,
                    math.sqrt(2.0 * s.new_category_fraction * joint.rho), joint.threshold_delta, privacy_rng)
                schema = discovery.schema
            row_filter = known_rows(schema)
        if discovery is not None and discovery.delta == 0:  # nothing was thresholded: its delta goes to the accountant
            joint = joint.without_thresholds()
        discovery_rho = 0.0 if discovery is None else discovery.rho
        encoder = Encoder(schema, on_invalid=s.on_invalid)
        with contextlib.ExitStack() as stack:
            # Progress shows elapsed time only: a row count, even in a log line, is a private statistic.
            reading = stack.enter_context(tqdm(desc="Reading and encoding the private table",
                                               bar_format="{desc}: {elapsed}",
                                               disable=not s.verbose or source.in_memory))
            data = stack.enter_context(CompactStore.build(encoder, source, redact=True, row_filter=row_filter,
                                                          on_rows=lambda _: reading.update(0)))
            reading.close()
            public_data = None
            if public_frame is not None:  # public rows are free: no clipping, no noise
                public_data = CompactStore(rows=Encoder(schema, on_invalid="clip").encode_compact(public_frame))
            expected_batch = min(float(s.batch_size), dp_rows)
            sample_rate = min(1.0, expected_batch / dp_rows)
            steps = s.steps or _epoch_steps(s.epochs, dp_rows, expected_batch, s.max_steps)
            measurements = self._measure_marginals(encoder, data, public_data,
                                                   s.marginal_fraction * (joint.rho - discovery_rho), privacy_rng)
            null_free, null_free_marginals = _null_free_columns(encoder, measurements)
            if measurements is not None:
                measurements = measurements.without_nulls(null_free_marginals)
            gaussian_rho = discovery_rho + (measurements.rho if measurements is not None else 0.0)
            gaussian_sigma = 1.0 / math.sqrt(2.0 * gaussian_rho) if gaussian_rho > 0 else None
            try:
                sigma = calibrate_noise_multiplier(joint.epsilon, joint.accountant_delta, sample_rate, steps,
                                                   s.accountant, extra_gaussian=gaussian_sigma)
            except ValueError as exc:
                raise BudgetExceededError(f"the budget left for training (epsilon={joint.epsilon:.4g}) is too "
                                          f"small for {steps} DP-SGD steps: {exc}") from None
            plan = TrainingPlan(steps, sample_rate, expected_batch, sigma, joint.accountant_delta, s.accountant,
                                gaussian_sigma)

            edges = self._conditioning_edges(encoder, measurements)
            generator, discriminator = self._networks(encoder, torch_generator_seed, device, edges)
            if edges:
                generator.heads.set_edge_weights(initial_edge_weights(
                    measurements, [spec.name for spec in encoder.cell_specs], edges))
            generator.suppress_missing(null_free)
            marginal_lr, marginal_steps = ((marginal_learning_rate(s.marginal_lr, measurements),
                                            marginal_step_count(s.marginal_steps, measurements))
                                           if measurements is not None else (s.marginal_lr, 0))
            warm_start_steps = (_epoch_steps(s.warm_start_epochs, len(public_data), max(2.0, expected_batch),
                                             s.max_steps)
                                if public_data is not None and s.warm_start_epochs > 0 else 0)
            groups = ClippingGroups.build(discriminator, sigma, s.clip_bound, grouping=s.clip_grouping)
            device_gen = torch.Generator(device=device).manual_seed(torch_generator_seed + 1)
            privacy_gen = torch.Generator(device=device).manual_seed(int(privacy_rng.integers(2**63 - 1)))
            trainer = DPGANTrainer(generator, discriminator, groups, plan, objective=s.objective,
                                   gp_weight=s.gp_weight, generator_steps=s.generator_steps,
                                   generator_lr=s.generator_lr, discriminator_lr=s.discriminator_lr,
                                   torch_generator=device_gen, privacy_rng=privacy_rng,
                                   privacy_generator=privacy_gen,
                                   schedule=self._clipping_schedule(public_data is not None, steps),
                                   marginal_loss=(MarginalLoss(generator.heads.raw_cell_specs(encoder.cell_specs),
                                                               measurements, device, generator.heads.ancestors())
                                                  if measurements is not None else None),
                                   marginal_weight=s.marginal_weight, marginal_lr=marginal_lr,
                                   generator_dtype=_precision_dtype(s.fit_precision, device))
            with tqdm(total=steps, desc="DP-GAN training", unit="step", disable=not s.verbose) as bar:
                every = max(25, steps // 10)  # each postfix is an accountant call: 0.1-0.3 s with PRV

                def progress(step: int, loss: torch.Tensor) -> None:
                    bar.update(1)
                    if s.verbose and (step % every == 0 or step == steps):  # only then read the loss off the device
                        total = ledger.spent_epsilon + trainer.epsilon_spent()
                        bar.set_postfix(epsilon=f"{total:.3f}", g_loss=f"{float(loss):.3f}")
                trainer.run(data, progress, public=public_data, warm_start_steps=warm_start_steps,
                            marginal_steps=marginal_steps)

        purpose, mechanism, details = _joint_entry(discovery, joint.rho, measurements, null_free, s.accountant)
        ledger.spend(purpose, mechanism, trainer.epsilon_spent(),
                     joint.accountant_delta + (discovery.delta if discovery is not None else 0.0),
                     steps=trainer.steps_done, noise_multiplier=sigma, sample_rate=sample_rate, accountant=s.accountant,
                     accountant_delta=joint.accountant_delta, gaussian_noise_multiplier=gaussian_sigma, **details,
                     **_clipping_note(trainer.schedule))
        generator = _checked(generator.to("cpu").eval(), encoder,
                             _precision_dtype(s.sample_precision, torch.device("cpu")))
        # Fitted state is assigned only now, all together: a failed fit leaves the object as it was.
        self.schema_ = schema
        self.encoder_ = encoder
        self.marginal_targets_ = [] if measurements is None else target_distributions(measurements.one_way)
        self.generator_ = generator
        self.arrow_schema_ = source.arrow_schema
        warm_start = {"public_rows": len(public_data), "steps": warm_start_steps} if warm_start_steps else None
        self.report_ = _privacy_report(ledger, plan, trainer.groups, trainer.schedule, trainer.steps_done,
                                       warm_start, round(dp_rows), measurements, edges,
                                       [spec.name for spec in encoder.cell_specs])
        return self

    def _clipping_schedule(self, has_public: bool, steps: int) -> ClippingSchedule:
        """How the clipping bounds are set: from public data where there is some, else privately."""
        s = self.settings
        adaptive = s.adaptive_clipping
        if adaptive == "auto":
            adaptive = "public" if has_public else "private"
        if adaptive == "public" and not has_public:
            raise ValueError("adaptive_clipping='public' needs a public table: pass public=..., "
                             "or use adaptive_clipping='private'")
        clusters = s.clip_clusters if s.clip_grouping == "clustered" else None
        # Without public data the per-tensor bounds are first estimated privately, over a tenth of the steps.
        cluster_after = 0 if has_public or clusters is None else max(1, math.ceil(CLUSTER_AFTER_FRACTION * steps))
        return ClippingSchedule(adaptive, clusters, min(cluster_after, steps), target_quantile=s.clip_quantile)

    def _networks(self, encoder: Encoder, seed: int, device: torch.device,
                  edges: Sequence[tuple[str, str]]) -> tuple[Generator, Discriminator]:
        """Fresh generator (conditioned along ``edges``) and discriminator shaped by the encoder layout,
        initialised from ``seed``."""
        s = self.settings
        init = torch.Generator(device="cpu").manual_seed(seed)
        generator = self._generator(encoder, edges)
        discriminator = Discriminator(encoder.dim, s.discriminator_hidden)
        init_linear(generator, init)
        init_linear(discriminator, init)
        return generator.to(device), discriminator.to(device)

    def _generator(self, encoder: Encoder, edges: Sequence[tuple[str, str]]) -> Generator:
        """An untrained generator of these settings, shaped by the encoder layout, conditioned along ``edges``."""
        s = self.settings
        return Generator(s.noise_dim, encoder.layout, s.generator_hidden, s.temperature, s.latent_classes, edges)

    def _conditioning_edges(self, encoder: Encoder, measurements: MarginalMeasurements | None
                            ) -> list[tuple[str, str]]:
        """Which drawn columns the generator draws given which (``dependence_stars`` of the DP
        marginals: post-processing, free); none without marginals or with ``conditioning`` off."""
        if measurements is None or not self.settings.conditioning:
            return []
        heads = OutputHeads(encoder.layout)
        specs = heads.raw_cell_specs(encoder.cell_specs)
        drawable = heads.drawable_columns()
        # A column whose nulls come from a flag it shares (a nullable geo pair's coordinates) takes no edge:
        # an edge moves its child's own missing logit too.
        eligible = [spec.kind == "softmax" and spec.name in drawable
                    and (spec.missing is None or spec.name in heads.missing_raw_of) for spec in specs]
        return dependence_stars(measurements, [spec.name for spec in specs], eligible, MIN_EDGE_DEPENDENCE)

    def _discover(self, source: TableSource, joint: _JointBudget, dp_rows: float,
                  rng: np.random.Generator) -> ComposedDiscovery:
        """The domain discovered under DP at ``discovery_fraction`` of the joint zCDP budget, its
        thresholds at the joint budget's held-back delta (charged with the marginals and training)."""
        # A Poisson subsample of the rows: DP on it is DP on the table (subsampling only amplifies).
        rows = source.sample(DISCOVERY_ROWS / dp_rows, rng)
        return discover_schema_composed(rows, math.sqrt(2.0 * self.settings.discovery_fraction * joint.rho),
                                        joint.threshold_delta, rng, day_columns=source.day_columns,
                                        expected_rows=min(dp_rows, DISCOVERY_ROWS))

    def _resolve_schema(self, source: TableSource, schema: Schema | None, public: pd.DataFrame | None
                        ) -> tuple[TableSource, Schema]:
        """The declared (or discovered) schema or one inferred from public data, with the storage's dtypes;
        and the source, its untyped columns (partition fields read as text) typed by that schema."""
        if schema is not None and not isinstance(schema, Schema):
            raise TypeError(f"schema must be a tabsynth.Schema, got {type(schema).__name__}")
        if schema is None and public is not None:
            # Nullability from the private storage, not from the public values: a field newly left blank
            # this year is kept (drawn as nulls only where the DP marginals count enough of them).
            schema = Schema.infer(public).with_storage_nullability(source.empty(), every=source.types_from_values)
        source = source.typed_by(_storage_types(schema, source.untyped_columns))
        # A CSV's dtypes come from its values: the schema's kinds then set the output dtypes.
        return source, schema.with_dtypes(source.empty(), fill=not source.types_from_values)

    def _measure_marginals(self, encoder: Encoder, data: CompactStore, public: CompactStore | None,
                           rho: float, rng: np.random.Generator) -> MarginalMeasurements | None:
        """DP one-way and two-way marginals at zCDP ``rho``, which the caller composes with DP-SGD.
        None when ``marginal_fraction`` is 0."""
        s = self.settings
        if s.marginal_fraction == 0:
            return None
        specs = encoder.cell_specs
        sizes = [spec.size for spec in specs]
        # Numbers' fine cells enter pairs coarsened; binary codes (ages, hours) keep every value there
        # in a pair small enough for its noise (``fine_pair_cells``; else the pair is measured coarse):
        # Adult at eps = 1, 2-way TVD 0.0385 against 0.0396 with every pair of up to 4,096 cells fine and
        # 0.0389 with codes coarsened in every pair.
        coarsen = [spec.binned for spec in specs]
        ordered = [spec.binned or spec.kind == "bits" for spec in specs]
        missing = [spec.missing is not None for spec in specs]
        cells = public_cells = public_coarse_cells = None
        if public is not None and len(public):
            cells = encoder.marginal_cells(public.take(np.arange(len(public))))[0]
            counts = histograms(cells, sizes)
            public_cells = group_cells(cells, pair_groups(counts, coarsen, missing))
            public_coarse_cells = group_cells(cells, pair_groups(counts, ordered, missing))
        # Without public data, a pair too large even coarse (a category of hundreds of values) is
        # measured with its light categories merged by mass, or nothing would measure it; with it,
        # the public pair at finer resolution does better (ACS at eps = 1, 2-way TVD 0.035 against
        # 0.037 with its 6 such pairs measured merged).
        merge = [spec.kind == "softmax" and not spec.binned for spec in specs] if cells is None else None
        bounds, coarse_bounds = pair_size_bounds(sizes, coarsen, missing), pair_size_bounds(sizes, ordered, missing)
        merged_bounds = pair_size_bounds(sizes, ordered, missing, by_mass=merge) if merge else None
        pairs = choose_pairs(bounds, s.marginal_pairs, public_cells, coarse_bounds, public_coarse_cells,
                             merged_sizes=merged_bounds)
        chunks = (encoder.marginal_cells(chunk)[0] for chunk in data.chunks())
        measured = pooled_one_way(measure_marginals(chunks, sizes, pairs, rho, rng, coarsen, missing, ordered, merge,
                                                    coarse_runs=None if cells is None else PAIR_RESOLUTION))
        if cells is None:
            return smoothed(measured, ordered, missing, codes=[spec.kind == "bits" for spec in specs])
        # Public data is free: the measurements shrink towards it, and pairs left unmeasured (past a
        # cap, the next most dependent on it, as many again at most; pairs of up to PUBLIC_PAIR_CELLS
        # cells: there is no noise to spread) take their dependence from it.
        limit = None if s.marginal_pairs is None else 2 * s.marginal_pairs
        more = choose_pairs(bounds, limit, public_cells, coarse_bounds, public_coarse_cells, max_cells=PUBLIC_PAIR_CELLS)
        return with_public_pairs(public_prior(measured, cells), cells, [p for p in more if p not in pairs])

    # --- sampling -------------------------------------------------------------------------

    def sample(self, n: int | None = None, seed: int | None = None) -> pd.DataFrame:
        """``n`` synthetic rows (default: the DP estimate of the training row count) with the training
        table's columns, order and dtypes."""
        batches = list(self.sample_batches(n, seed))
        return batches[0] if len(batches) == 1 else pd.concat(batches, ignore_index=True)

    def sample_batches(self, n: int | None = None, seed: int | None = None) -> Iterator[pd.DataFrame]:
        """``sample`` as DataFrames of at most ``SAMPLE_CHUNK`` rows each, for bounded memory."""
        self._check_fitted()
        n = self.row_count_ if n is None else _integer("n", n, 0)
        # seed None: fresh entropy, also after load()
        rng = np.random.default_rng(None if seed is None else _integer("seed", seed, 0))
        gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**63 - 1)))
        if n == 0:  # no rows, but the columns and dtypes, as ``DataFrame.sample(0)`` gives
            yield self.encoder_.decode_compact(self._generate_compact(0, gen))
        for start in range(0, int(n), SAMPLE_CHUNK):
            size = min(SAMPLE_CHUNK, int(n) - start)
            yield self._sample_frame(size, gen, rng)

    def _sample_frame(self, n: int, gen: torch.Generator, rng: np.random.Generator) -> pd.DataFrame:
        """``n`` decoded rows: generator rows that satisfy the schema's rules, calibrated towards the DP marginals.

        Calibration draws an oversample and resamples it with raking weights. With rules, the draws are
        decoded, repaired where a rule can repair them, and only the rows that then satisfy every rule
        are kept (rejection sampling), drawing more until there are enough.
        """
        wanted = max(math.ceil(self.settings.oversample * n), MIN_CALIBRATION_POOL) if self.marginal_targets_ else n
        if not self.schema_.rules:
            pool = self._generate_compact(wanted, gen)
            return self.encoder_.decode_compact(pool[self._calibrated_index(pool, n, rng)])
        frames, kept, drawn = [], 0, 0
        while kept < wanted:
            size = max(wanted - kept, REJECTION_BATCH)
            frame = self.encoder_.decode_compact(self._generate_compact(size, gen))
            for rule in self.schema_.rules:
                frame = rule.repair(frame)
            valid = np.logical_and.reduce([rule.satisfied(frame) for rule in self.schema_.rules])
            drawn, kept = drawn + size, kept + int(valid.sum())
            frames.append(frame[valid])
            if kept < wanted and drawn >= MAX_REJECTION_DRAWS * wanted:
                raise RulesUnmetError(_rule_failure(self.schema_.rules, frame, kept, drawn))
        frame = pd.concat(frames).reset_index(drop=True)
        # Raking reads the repaired values: re-encode them (every repaired value lies in the domain).
        pool = self.encoder_.encode_compact(frame) if self.marginal_targets_ else None
        index = self._calibrated_index(pool, n, rng)
        return frame.iloc[index].reset_index(drop=True)

    def _calibrated_index(self, pool: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of ``n`` rows of the compact ``pool`` resampled towards the DP marginals (the first ``n`` without)."""
        if not self.marginal_targets_:
            return np.arange(n)
        return systematic_resample(rake(self.encoder_.marginal_cells(pool)[0], self.marginal_targets_), n, rng)

    def _generate_compact(self, n: int, gen: torch.Generator) -> np.ndarray:
        """``n`` compact rows straight from the generator, in batches of at most ``GENERATOR_BATCH``."""
        hidden_dtype = _precision_dtype(self.settings.sample_precision, torch.device("cpu"))
        with torch.inference_mode():
            return self.generator_.sample(n, gen, hidden_dtype, GENERATOR_BATCH).numpy()

    @property
    def row_count_(self) -> int:
        """The DP estimate of the training table's row count (the default number of rows to sample)."""
        return int(self.report_["dp_row_count"])

    def privacy_report(self) -> dict[str, Any]:
        """JSON-serialisable account of the guarantee: epsilon, delta, accountant, mechanism details, ledger."""
        self._check_fitted()
        return json.loads(json.dumps(self.report_))

    # --- persistence ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Weights (safetensors) and JSON metadata in one file; written atomically."""
        self._check_fitted()
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"cannot save the model to {str(path)!r}: it is a directory; give a file path")
        settings = asdict(self.settings)
        settings.pop("seed")  # the seed stays with the user; it never travels with a release
        metadata = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "settings": settings,
                    "schema": self.schema_.to_dict(), "report": self.report_,
                    "edges": [list(edge) for edge in self.generator_.heads.edges],
                    "arrow_schema": None if self.arrow_schema_ is None else schema_to_text(self.arrow_schema_)}
        tensors = {f"generator.{k}": v.detach().contiguous() for k, v in self.generator_.state_dict().items()}
        tensors.update({f"marginal.{j}": torch.from_numpy(np.asarray(t, dtype=np.float64))
                        for j, t in enumerate(self.marginal_targets_)})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"tabsynth": json.dumps(metadata)})
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Synthesizer":
        """Rebuild a fitted synthesizer; reads only tensors and JSON, never executes code."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"no model file at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                raw = (handle.metadata() or {}).get("tabsynth")
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"{path} is not a readable tabsynth model file: {exc}") from exc
        if raw is None:
            raise ModelFileError(f"{path} is a safetensors file but not a tabsynth model (no metadata)")
        # fit saves finite weights only (``_checked``): NaN or inf means the file was damaged, and such a
        # generator would still draw rows, all alike.
        broken = sorted(key for key, tensor in tensors.items()
                        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()))
        if broken:
            raise ModelFileError(f"{path} is corrupt: tensors {broken} hold NaN or infinite values")
        try:
            metadata = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path}: model metadata is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
            raise ModelFileError(f"{path} is not a tabsynth model file")
        if metadata.get("version") != MODEL_VERSION:
            raise ModelFileError(f"{path}: model format version {metadata.get('version')!r} is not supported "
                                 f"(this tabsynth reads version {MODEL_VERSION})")
        try:
            self = cls(**dict(metadata["settings"]))
            self.schema_ = Schema.from_dict(metadata["schema"])
            self.encoder_ = Encoder(self.schema_, on_invalid=self.settings.on_invalid)
            self.generator_ = self._generator(self.encoder_, [tuple(edge) for edge in metadata["edges"]])
            self.generator_.load_state_dict({k.removeprefix("generator."): v for k, v in tensors.items()
                                             if k.startswith("generator.")})
            self.marginal_targets_ = [tensors[f"marginal.{j}"].numpy()
                                      for j in range(sum(k.startswith("marginal.") for k in tensors))]
            sizes = self.encoder_.marginal_cells(np.zeros((1, self.encoder_.compact_dim), np.float32))[1]
            if self.marginal_targets_ and [len(t) for t in self.marginal_targets_] != sizes:
                raise ValueError("calibration marginals do not match the schema")
            self.report_ = dict(metadata["report"])
            arrow = metadata["arrow_schema"]
            self.arrow_schema_ = None if arrow is None else schema_from_text(arrow)
            if self.row_count_ < 1 or (self.arrow_schema_ is not None
                                       and self.arrow_schema_.names != list(self.schema_.column_order)):
                raise ValueError("row count or Arrow schema does not match the model")
        except KeyError as exc:
            raise ModelFileError(f"{path}: model file is inconsistent: its metadata or tensors lack {exc}") from exc
        except (SchemaError, TypeError, ValueError, RuntimeError, pa.ArrowException) as exc:
            raise ModelFileError(f"{path}: model file is inconsistent: {exc}") from exc
        self.generator_.eval()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "generator_"):
            raise RuntimeError("this Synthesizer is not fitted yet: call fit(df, epsilon=...) or Synthesizer.load(path)")


ACCOUNTANT_NAMES = {"rdp": "Renyi DP (Opacus), converted to (epsilon, delta)",
                    "prv": "privacy random variables (Opacus PRV), upper bound on epsilon (Renyi DP's where "
                           f"PRV's grid would exceed {PRV_MAX_POINTS:,} points or its discretisation fails)"}


def _null_free_columns(encoder: Encoder, measurements: MarginalMeasurements | None
                       ) -> tuple[list[str], list[int]]:
    """The nullable columns whose every marginal's noisy count of nulls says none (``null_free``; a geo
    pair's two marginals share one missing flag), and those marginals: post-processing of the one-way
    release; none without marginals."""
    if measurements is None:
        return [], []
    flags = {span.start: span.column for span in encoder.layout if span.role == "missing"}
    specs = encoder.cell_specs
    below = set(measurements.null_free([spec.missing is not None for spec in specs]))
    marginals = {name: [j for j, spec in enumerate(specs) if flags.get(spec.missing) == name]
                 for name in flags.values()}
    columns = [name for name, js in marginals.items() if js and all(j in below for j in js)]
    return columns, [j for name in columns for j in marginals[name]]


def _clipping_note(schedule: ClippingSchedule) -> dict[str, str]:
    """The ledger's word on adaptive clipping: where its bounds came from and what that cost."""
    if not schedule.releases_counts:
        return {}
    return {"adaptive_clipping": "noisy counts of unclipped examples per group, released inside each DP-SGD "
                                 f"step's Gaussian mechanism (at most {MAX_COUNT_SHARE:.0%} of its precision); "
                                 "the noise multiplier above is that of gradient and counts together"}


@dataclass(frozen=True)
class _JointBudget:
    """The budget (``epsilon``, ``delta``) the fit's last ledger entry composes by the accountant (a
    discovery release when there is one, the DP marginals, DP-SGD): the accountant's
    ``accountant_delta``, ``threshold_delta`` held back for a discovery release's thresholds (the two
    sum to at most ``delta``), and ``rho``, the zCDP budget of one Gaussian mechanism calibrated to
    (epsilon, accountant_delta), which the Gaussian mechanisms share."""

    epsilon: float
    delta: float
    accountant_delta: float
    threshold_delta: float
    rho: float

    @classmethod
    def left_in(cls, ledger: PrivacyLedger, accountant: str, threshold_share: float = 0.0) -> _JointBudget:
        """What ``ledger`` has left, ``threshold_share`` of its delta held back for thresholds."""
        epsilon, delta = ledger.remaining_epsilon, ledger.remaining_delta
        if epsilon <= 0 or delta <= 0:
            raise BudgetExceededError("no budget is left for the marginals and training")
        thresholds = threshold_share * delta
        accountant_delta = delta - thresholds
        while accountant_delta + thresholds > delta:  # the entry adds them up again: no rounding past delta
            accountant_delta = math.nextafter(accountant_delta, 0.0)
        try:
            rho = zcdp_budget(epsilon, accountant_delta, accountant)
        except ValueError as exc:
            raise BudgetExceededError(f"the budget left after the row count (epsilon={epsilon:.4g}, "
                                      f"delta={delta:.3g}) is too small for the marginals and training: {exc}") from None
        return cls(epsilon, delta, accountant_delta, thresholds, rho)

    def without_thresholds(self) -> _JointBudget:
        """This budget with the thresholds' delta given to the accountant (rho kept: it only errs on the safe side)."""
        return replace(self, accountant_delta=self.delta, threshold_delta=0.0)


def _joint_entry(discovery: ComposedDiscovery | None, rho: float,
                 marginals: MarginalMeasurements | None, null_free: Sequence[str],
                 accountant: str) -> tuple[str, str, dict[str, Any]]:
    """The purpose, mechanism and details (parameters, no data) of the fit's last ledger entry: the
    Gaussian release of domain discovery or of new categories when there is one (``discovery``, its
    share of the entry's zCDP budget ``rho`` recorded), the DP marginals when measured, and DP-SGD."""
    purposes, mechanisms, details = [], [], {}
    if discovery is not None and discovery.mu > 0:
        purposes.append(discovery.purpose)
        mechanisms.append(f"{discovery.purpose}: one Gaussian release ({discovery.mechanism}, mu {discovery.mu:.4g})")
        details[discovery.purpose.replace(" ", "_")] = {
            **discovery.details, "mu": discovery.mu, "zcdp_rho": discovery.rho, "delta_thresholds": discovery.delta,
            "zcdp_share": discovery.rho / rho}
    if marginals is not None:
        purposes.append("marginals")
        mechanisms.append(f"Gaussian mechanism on {len(marginals.one_way)} one-way and {len(marginals.pairs)} "
                          f"two-way marginals")
        details.update(marginals.details(), columns_drawn_without_nulls=list(null_free),
                       note="the generator is trained to match the marginals and sampling reweights its rows "
                            "towards the one-way ones (post-processing)")
    purposes.append("training")
    mechanisms.append("Poisson-subsampled Gaussian (DP-SGD on the discriminator)")
    if len(mechanisms) > 1:
        mechanisms[-1] = f"then {mechanisms[-1]}, composed by the accountant ({accountant})"
    purpose = purposes[0] if len(purposes) == 1 else ", ".join(purposes[:-1]) + " and " + purposes[-1]
    return purpose, ", ".join(mechanisms), details


def _privacy_report(ledger: PrivacyLedger, plan: TrainingPlan, groups: ClippingGroups, schedule: ClippingSchedule,
                    steps: int, warm_start: dict[str, int] | None, row_count: int,
                    marginals: MarginalMeasurements | None, edges: Sequence[tuple[str, str]],
                    names: Sequence[str]) -> dict[str, Any]:
    """The JSON-able report: totals with the accountant, the DP-SGD mechanism, clipping and the ledger
    (``names``: the marginals' column names, ``Encoder.cell_specs``)."""
    return {
        "epsilon": ledger.spent_epsilon, "delta": ledger.spent_delta,
        "epsilon_budget": ledger.epsilon, "delta_budget": ledger.delta,
        "accountant": ACCOUNTANT_NAMES[plan.accountant],
        "noise_multiplier": plan.noise_multiplier, "sample_rate": plan.sample_rate, "sampling": "poisson",
        "expected_batch_size": plan.expected_batch_size, "steps": steps,
        "clipping": {"adaptive": schedule.adaptive, "clusters": schedule.clusters,
                     "groups": [list(g) for g in groups.names], "final_bounds": list(groups.clip_bounds),
                     "final_noise_stds": list(groups.noise_stds), "count_noise_std": groups.count_noise_std,
                     "effective_noise_multiplier": groups.noise_multiplier},
        "marginals": None if marginals is None else {
            **marginals.details(), "conditioning_edges": [list(edge) for edge in edges],
            "functional_edges": [list(edge) for edge in functional_edges(marginals, names, edges)]},
        "warm_start": warm_start,
        "dp_row_count": row_count,
        "unit_of_privacy": UNIT_OF_PRIVACY,
        "ledger": ledger.to_dict(),
    }


def _check_same_columns(private: TableSource, public: TableSource) -> None:
    """Public and private tables must have the same columns (order may differ)."""
    missing, extra = column_differences(private.columns, public.columns)
    if missing:
        raise SchemaError(f"the public table lacks columns {missing} of the private table")
    if extra:
        raise SchemaError(f"the public table has columns {extra} that the private table lacks")


def _value_kind(dtype: Any) -> str | None:
    """What a dtype holds, as far as the schema cares: "numbers", "booleans", "text", "timestamps" or
    "durations" (a categorical or Arrow dictionary dtype: what its levels hold); None for object columns, which may hold anything."""
    levels = level_dtype(dtype)
    if levels is not None:
        return _value_kind(levels)
    if pd.api.types.is_bool_dtype(dtype):
        return "booleans"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numbers"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamps"
    if is_duration_dtype(dtype):
        return "durations"
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return "text"
    return None


_INFERRED_KINDS = {"string": "text", "integer": "numbers", "floating": "numbers", "mixed-integer-float": "numbers",
                   "decimal": "numbers", "boolean": "booleans", "datetime64": "timestamps", "datetime": "timestamps",
                   "date": "timestamps"}
# 0/1 for booleans; timestamps and durations read from a CSV file as text
_COMPATIBLE_KINDS = ({"numbers", "booleans"}, {"text", "timestamps"}, {"text", "durations"})


def _storage_types(schema: Schema, names: Collection[str]) -> dict[str, pa.DataType]:
    """The Arrow types in which the schema's kinds store the columns ``names`` (text read from untyped
    storage): integers, reals, booleans, timestamps, durations, and categories whose values are all
    integers, all numbers or all booleans; text (left out) for any other."""
    types = {}
    for column in schema.columns:
        if column.name not in names:
            continue
        if isinstance(column, IntegerColumn):
            types[column.name] = pa.int64()
        elif isinstance(column, ContinuousColumn):
            types[column.name] = pa.float64()
        elif isinstance(column, BooleanColumn):
            types[column.name] = pa.bool_()
        elif isinstance(column, DatetimeColumn):
            zone = zone_of(read_dtype(column.dtype)) if column.dtype else None
            types[column.name] = pa.timestamp("ns", tz=None if zone is None else str(zone))
        elif isinstance(column, DurationColumn):
            types[column.name] = pa.duration("ns")
        elif isinstance(column, CategoricalColumn) and column.categories:
            levels = column.categories
            if all(isinstance(v, (bool, np.bool_)) for v in levels):
                types[column.name] = pa.bool_()
            elif all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in levels):
                types[column.name] = pa.int64()
            elif all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
                     for v in levels):
                types[column.name] = pa.float64()
    return types


def _check_same_kinds(private: pd.DataFrame, public: pd.DataFrame, untyped: Collection[str] = ()) -> None:
    """Each column must hold a compatible kind of values in both tables, as a schema inferred from the
    public one would otherwise fit no private value (a public column of numbers read as text made a
    schema of categories that every private row missed). The private side is judged by its dtype
    alone (storage metadata, no private value is read); an object column of the public table by its values.
    ``untyped`` private columns (text whose storage records no type) take the public kind."""
    for name in private.columns:
        if name in untyped:
            continue
        public_kind = _value_kind(public[name].dtype) or _INFERRED_KINDS.get(
            pd.api.types.infer_dtype(public[name], skipna=True))
        kinds = _value_kind(private[name].dtype), public_kind
        if None not in kinds and kinds[0] != kinds[1] and set(kinds) not in _COMPATIBLE_KINDS:
            raise SchemaError(f"column {name!r} holds {kinds[0]} in the private table ({private[name].dtype}) but "
                              f"{kinds[1]} in the public table ({public[name].dtype}); give both tables the "
                              f"same type, or declare a schema")


def _rule_failure(rules: tuple[Rule, ...], frame: pd.DataFrame, kept: int, drawn: int) -> str:
    """Why rejection sampling gave up: the share of rows kept and the rule the generator breaks most."""
    broken = {str(rule): 1.0 - float(rule.satisfied(frame).mean()) for rule in rules}
    worst = max(broken, key=broken.get)
    return (f"only {kept:,} of {drawn:,} generated rows satisfy the schema's rules; the rule broken most is "
            f"'{worst}' ({broken[worst]:.0%} of rows). Train longer or with more budget, or check the rules")


def _epoch_steps(epochs: float, rows: float, batch: float, max_steps: int) -> int:
    """Steps of ``batch`` rows that make ``epochs`` passes over ``rows``, at least one and at most ``max_steps``."""
    return min(max_steps, max(1, math.ceil(epochs * rows / batch)))


def _default_delta(dp_rows: float) -> float:
    """1e-5, or the next power of ten below 1/(10 n~) for large tables (n~ is the DP row count)."""
    delta = 1e-5
    while delta >= 1.0 / (10.0 * dp_rows):
        delta /= 10.0
    return delta


def _checked(generator: Generator, encoder: Encoder, hidden_dtype: torch.dtype) -> Generator:
    """``generator`` once its weights proved finite and a batch of its rows (drawn with a fixed seed, not
    the user's) finite and decodable: a fit that diverged fails here, naming the remedies, rather than
    sampling garbage (a NaN logit still draws some category; the decoder reads NaN numbers as zeros).
    The batch also warms the sampling path: the first sample call after a fit ran about a third
    slower than the next (Adult, 32,561 rows: 155-176k against 237-306k rows/s)."""
    broken = [name for name, tensor in (*generator.named_parameters(), *generator.named_buffers())
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if not broken:
        with torch.inference_mode():
            rows = generator.sample(GENERATOR_BATCH, torch.Generator(device="cpu").manual_seed(0), hidden_dtype,
                                    GENERATOR_BATCH).numpy()
        if np.isfinite(rows).all():
            encoder.decode_compact(rows)
            return generator
    where = f"weights {', '.join(broken[:3])}" if broken else "draws"
    raise TrainingDivergedError(
        f"training diverged: the generator's {where} hold values that are not finite numbers. Try smaller "
        "generator_lr and marginal_lr, or fit_precision='float32'. The budget of this fit is spent all the "
        "same: its DP mechanisms ran.")


def _precision_dtype(precision: str, device: torch.device) -> torch.dtype:
    """bfloat16 when asked, or on "auto" when ``device`` has native bfloat16 matrix units; else float32."""
    if precision == "auto":
        if device.type == "cuda":
            native = torch.cuda.is_bf16_supported()
        else:
            native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                      or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was requested but CUDA is not available")
    return torch.device(device)


__all__ = ["ModelFileError", "Settings", "Synthesizer", "TrainingDivergedError"]
