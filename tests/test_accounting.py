"""Specifications for tabsynth.privacy.accounting."""

import math
import warnings

import dp_accounting
import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from scipy import integrate, stats

from tabsynth.privacy import (
    RDP_ORDERS,
    allocate_group_noise,
    calibrate_noise_multiplier,
    compute_epsilon,
    effective_noise_multiplier,
    max_steps,
)
from tabsynth.privacy.accounting import PRV_EPS_ERROR, zcdp_budget

DELTA = 1e-5
# Realistic budgets (epsilon below ~10). At large epsilon the optimum moves to small fractional orders,
# where dp_accounting's series fails to converge and it drops orders, so it is looser than Opacus there.
GRID = [(s, q, t) for s in (0.8, 1.0, 2.0, 5.0) for q in (0.001, 0.005, 0.02) for t in (1, 100, 1000)]


def _dp_accounting_event(sigma: float, q: float, steps: int):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def _google_rdp_epsilon(sigma: float, q: float, steps: int) -> float:
    acc = dp_accounting.rdp.RdpAccountant(orders=[a for a in RDP_ORDERS if a > 1.01])
    return acc.compose(_dp_accounting_event(sigma, q, steps)).get_epsilon(DELTA)


@pytest.mark.parametrize("sigma,q,steps", GRID)
def test_rdp_epsilon_matches_google_dp_accounting(sigma, q, steps):
    ours = compute_epsilon(sigma, q, steps, DELTA, "rdp")
    assert ours == pytest.approx(_google_rdp_epsilon(sigma, q, steps), rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("sigma,q,alpha", [(0.7, 0.1, 2.1), (2.0, 0.1, 2.8), (1.0, 0.05, 2.4), (1.0, 0.01, 7.0)])
def test_rdp_curve_matches_direct_integration_of_renyi_divergence(sigma, q, alpha):
    # D_alpha((1-q)N(0,s^2) + qN(1,s^2) || N(0,s^2)), integrated numerically; independent of both libraries.
    def integrand(z):
        return stats.norm.pdf(z, 0, sigma) * ((1 - q) + q * np.exp((2 * z - 1) / (2 * sigma**2))) ** alpha

    expected = math.log(integrate.quad(integrand, -40, 40, limit=1000, points=[0, 1])[0]) / (alpha - 1)
    ours = rdp_analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=[alpha])[0]
    assert ours == pytest.approx(expected, rel=1e-6)


def test_rdp_epsilon_is_what_opacus_rdp_accountant_reports():
    acc = RDPAccountant()
    acc.history = [(1.1, 0.02, 700)]
    assert compute_epsilon(1.1, 0.02, 700, DELTA, "rdp") == pytest.approx(
        acc.get_epsilon(DELTA, alphas=list(RDP_ORDERS)), rel=1e-12
    )


@pytest.mark.parametrize("sigma,q,steps", [(1.0, 0.01, 1000), (2.0, 0.1, 300), (0.8, 0.004, 5000)])
def test_prv_epsilon_matches_google_pld_accountant(sigma, q, steps):
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    expected = pld.compose(_dp_accounting_event(sigma, q, steps)).get_epsilon(DELTA)
    assert compute_epsilon(sigma, q, steps, DELTA, accountant="prv") == pytest.approx(expected, rel=0.05)


def test_full_batch_steps_and_the_marginals_compose_as_one_gaussian_under_prv():
    # With q = 1 the steps and the marginals' Gaussian are Gaussians on the whole table: independent check by PLD.
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    events = dp_accounting.ComposedDpEvent([dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(40.0), 300),
                                            dp_accounting.GaussianDpEvent(6.0)])
    expected = pld.compose(events).get_epsilon(DELTA)
    ours = compute_epsilon(40.0, 1.0, 300, DELTA, "prv", extra_gaussian=6.0)
    assert ours == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("marginal_z,sigma,q,steps", [
    (1.47, 0.52, 0.004, 2),      # the marginals take most of the budget: DP-SGD at little noise, few steps
    (3.90, 5.30, 0.0313, 96),    # Adult's benchmark at epsilon 1, delta 1e-5, default settings
    (4.0, 3.0, 0.05, 100),
])
def test_marginals_composed_with_subsampled_steps_match_google_pld_from_above(marginal_z, sigma, q, steps):
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    events = dp_accounting.ComposedDpEvent([
        dp_accounting.GaussianDpEvent(marginal_z),
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)),
                                          steps)])
    expected = pld.compose(events).get_epsilon(DELTA)
    ours = compute_epsilon(sigma, q, steps, DELTA, "prv", extra_gaussian=marginal_z)
    assert expected <= ours <= expected + 2 * PRV_EPS_ERROR  # PRV's upper bound: within its error of the PLD estimate


def test_prv_falls_back_on_the_rdp_bound_where_its_grid_would_take_gigabytes():
    # A tiny delta over a long composition: about 1.8 million grid points, 400 MB in Opacus's PRV.
    args = (0.3, 0.002, 1000, 1e-9)
    assert compute_epsilon(*args, "prv", extra_gaussian=0.3) == compute_epsilon(*args, "rdp", extra_gaussian=0.3)
    assert compute_epsilon(1.0, 0.03, 300, DELTA, "prv") < compute_epsilon(1.0, 0.03, 300, DELTA, "rdp")


def test_prv_falls_back_on_the_rdp_bound_where_its_discretisation_fails():
    # A noise multiplier of 0.025 (epsilon near 1,000): Opacus's PRV raises, as its grid loses the mean.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute_epsilon(0.025, 1.0, 1, DELTA, "prv") == compute_epsilon(0.025, 1.0, 1, DELTA, "rdp")
        assert 780 < zcdp_budget(1000.0, DELTA, "prv") < math.inf


def test_prv_is_no_looser_than_rdp():
    assert compute_epsilon(1.0, 0.01, 1000, DELTA, "prv") < compute_epsilon(1.0, 0.01, 1000, DELTA, "rdp")


def test_zero_steps_cost_nothing():
    assert compute_epsilon(1.0, 0.01, 0, DELTA, "rdp") == 0.0
    assert compute_epsilon(1.0, 0.01, 0, DELTA, "prv") == 0.0


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_is_nonnegative_and_nondecreasing_in_steps(accountant):
    eps = [compute_epsilon(1.0, 0.01, t, DELTA, accountant) for t in (0, 1, 2, 10, 100, 1000, 10_000)]
    assert eps[0] == 0.0 and all(e >= 0 for e in eps)
    assert all(a <= b for a, b in zip(eps, eps[1:]))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_decreases_with_noise(accountant):
    eps = [compute_epsilon(s, 0.01, 1000, DELTA, accountant) for s in (0.6, 0.8, 1.0, 2.0, 4.0, 8.0)]
    assert all(a > b for a, b in zip(eps, eps[1:]))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"accountant": "gdp"}, "accountant"),
    ],
)
def test_compute_epsilon_rejects_bad_arguments(kwargs, name):
    args = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 10, "delta": DELTA, **kwargs}
    with pytest.raises(ValueError, match=name):
        compute_epsilon(**args)


@pytest.mark.parametrize("epsilon", [0.3, 1.0, 3.0])
@pytest.mark.parametrize("q", [0.001, 0.01, 0.1])
@pytest.mark.parametrize("steps", [10, 500, 3000])
def test_calibrated_noise_meets_target_and_is_tight(epsilon, q, steps):
    sigma = calibrate_noise_multiplier(epsilon, DELTA, q, steps, "rdp")
    assert compute_epsilon(sigma, q, steps, DELTA, "rdp") <= epsilon
    assert compute_epsilon(0.97 * sigma, q, steps, DELTA, "rdp") > epsilon


@pytest.mark.parametrize(("epsilon", "q", "steps"),
                         [(0.3, 0.001, 3000), (1.0, 0.01, 500), (3.0, 0.1, 10), (1.0, 1.0, 50)])
def test_prv_calibration_meets_target_and_is_tight(epsilon, q, steps):
    marginals = 8.0 / epsilon  # a Gaussian mechanism that leaves DP-SGD part of the budget
    sigma = calibrate_noise_multiplier(epsilon, DELTA, q, steps, "prv", extra_gaussian=marginals)
    assert compute_epsilon(sigma, q, steps, DELTA, "prv", extra_gaussian=marginals) <= epsilon
    assert compute_epsilon(0.97 * sigma, q, steps, DELTA, "prv", extra_gaussian=marginals) > epsilon


def test_prv_is_the_default_and_calibrates_less_noise_than_rdp():
    sigma = calibrate_noise_multiplier(1.0, DELTA, 0.01, 500)
    assert sigma == calibrate_noise_multiplier(1.0, DELTA, 0.01, 500, accountant="prv")
    assert sigma < calibrate_noise_multiplier(1.0, DELTA, 0.01, 500, accountant="rdp")


def test_calibration_refuses_unreachable_budget():
    with pytest.raises(ValueError, match="epsilon"):
        calibrate_noise_multiplier(1e-7, 1e-12, 1.0, 10**6)


@pytest.mark.parametrize("epsilon,sigma,q", [(1.0, 1.0, 0.01), (3.0, 0.8, 0.05), (0.5, 2.0, 0.002)])
def test_max_steps_is_the_last_step_within_budget(epsilon, sigma, q):
    t = max_steps(epsilon, DELTA, q, sigma, "rdp")
    assert t > 0
    assert compute_epsilon(sigma, q, t, DELTA, "rdp") <= epsilon < compute_epsilon(sigma, q, t + 1, DELTA, "rdp")


def test_max_steps_is_zero_when_one_step_is_too_expensive():
    assert max_steps(0.1, DELTA, 1.0, 0.5, "rdp") == 0
    assert max_steps(0.1, DELTA, 1.0, 0.5, "prv") == 0


def test_max_steps_inverts_calibration():
    sigma = calibrate_noise_multiplier(1.0, DELTA, 0.01, 800, "rdp")
    assert max_steps(1.0, DELTA, 0.01, sigma, "rdp") >= 800


@pytest.mark.parametrize("k", [1, 2, 5])
def test_k_groups_with_noise_sigma_c_account_like_one_group_at_sigma_over_sqrt_k(k):
    sigma, clips = 1.3, np.linspace(0.5, 2.0, k)
    z = effective_noise_multiplier(clips, sigma * clips)
    assert z == pytest.approx(sigma / math.sqrt(k), rel=1e-12)
    assert compute_epsilon(z, 0.01, 500, DELTA) == pytest.approx(
        compute_epsilon(sigma / math.sqrt(k), 0.01, 500, DELTA), rel=1e-9
    )


def test_grouped_step_privacy_loss_is_that_of_one_gaussian_with_effective_multiplier():
    # Worst-case neighbours: the extra record's gradient has norm c_j in every group. The privacy loss
    # log p(y|with)/p(y|without) of a Gaussian mechanism is N(mu, 2*mu) with mu = 1/(2 z^2).
    rng = np.random.default_rng(0)
    clips, sizes, stds = np.array([1.0, 0.3, 2.0]), [4, 7, 2], np.array([0.9, 0.5, 3.0])
    grads = [c * v / np.linalg.norm(v) for c, v in zip(clips, (rng.normal(size=d) for d in sizes))]
    draws = 20_000
    loss = np.zeros(draws)
    for g, s in zip(grads, stds):
        y = g + s * rng.normal(size=(draws, g.size))
        loss += (y @ g - g @ g / 2.0) / s**2
    mu = 1.0 / (2.0 * effective_noise_multiplier(clips, stds) ** 2)
    assert loss.mean() == pytest.approx(mu, rel=0.03)
    assert loss.var() == pytest.approx(2 * mu, rel=0.03)


@pytest.mark.parametrize("strategy", ["proportional", "min_variance"])
def test_allocated_group_noise_meets_the_noise_multiplier(strategy):
    clips, sizes = [1.0, 0.25, 3.0, 0.5], [1000, 12, 50_000, 3]
    stds = allocate_group_noise(clips, sizes, 0.9, strategy=strategy)
    assert stds.shape == (4,) and np.all(stds > 0)
    assert effective_noise_multiplier(clips, stds) == pytest.approx(0.9, rel=1e-12)


def test_proportional_allocation_is_the_classic_choice():
    stds = allocate_group_noise([1.0, 2.0], [10, 10], 1.5, strategy="proportional")
    np.testing.assert_allclose(stds, 1.5 * math.sqrt(2) * np.array([1.0, 2.0]), rtol=1e-12)


def test_min_variance_allocation_adds_no_more_noise_energy_than_proportional():
    clips, sizes = np.array([1.0, 0.25, 3.0, 0.5]), np.array([1000, 12, 50_000, 3])
    energy = {
        s: float(np.sum(sizes * allocate_group_noise(clips, sizes, 0.9, strategy=s) ** 2))
        for s in ("proportional", "min_variance")
    }
    assert energy["min_variance"] <= energy["proportional"]
    # and it is the optimum: perturbing along the constraint surface only adds energy
    base = allocate_group_noise(clips, sizes, 0.9)
    for j in range(4):
        bumped = base.copy()
        bumped[j] *= 1.05
        bumped = bumped * (0.9 / effective_noise_multiplier(clips, bumped))
        assert np.sum(sizes * bumped**2) >= energy["min_variance"]


def test_allocation_rejects_unknown_strategy_and_mismatched_lengths():
    with pytest.raises(ValueError, match="strategy"):
        allocate_group_noise([1.0], [3], 1.0, strategy="uniform")
    with pytest.raises(ValueError, match="group_sizes"):
        allocate_group_noise([1.0, 2.0], [3], 1.0)
    with pytest.raises(ValueError, match="noise_stds"):
        effective_noise_multiplier([1.0, 2.0], [1.0, 0.0])
