"""Privacy accounting for Poisson-subsampled Gaussian steps (DP-SGD), wrapping Opacus.

Everything here is about one kind of step: each record is included independently with
probability ``sample_rate``, its gradient is clipped, and Gaussian noise is added
(add/remove-one-record adjacency).  A step is summarised by its noise multiplier
z = noise std / L2 sensitivity.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from functools import lru_cache
from typing import Callable, Iterator, Sequence

import numpy as np
from opacus.accountants import PRVAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size
from scipy.integrate import IntegrationWarning
from scipy.optimize import brentq

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_ACCOUNTANT",
    "RDP_ORDERS",
    "allocate_group_noise",
    "calibrate_noise_multiplier",
    "compute_epsilon",
    "effective_noise_multiplier",
    "max_steps",
    "zcdp_budget",
]

ACCOUNTANTS = ("rdp", "prv")
# PRV (Gopi et al. 2021; Opacus's upper bound) is tighter than RDP's conversion: at eps = 1, delta = 1e-5
# one Gaussian mechanism gets rho = 0.0346 against 0.0300; on Adult the 2-way TVD fell 0.0385 -> 0.0372
# at eps 1 (4 seeds) and 0.074 -> 0.070 at eps 0.3.
DEFAULT_ACCOUNTANT = "prv"
PRV_EPS_ERROR = 0.01  # Opacus's default discretisation error on epsilon
# Past this many grid points (about 150 bytes each) the PRV accountant falls back on the RDP bound:
# a tiny epsilon or delta, or a calibration probe at a tiny noise multiplier, would take gigabytes.
PRV_MAX_POINTS = 1_000_000
GROUP_NOISE_STRATEGIES = ("proportional", "min_variance")

# Renyi orders for the RDP accountant.  Wider than Opacus's default (which stops at 63)
# so the optimum is interior for small epsilons; large integer orders are sparse because
# Opacus's cost per integer order grows linearly with the order.
RDP_ORDERS: tuple[float, ...] = tuple(
    [1.01, 1.02, 1.05]
    + [1 + x / 10.0 for x in range(1, 100)]
    + list(range(12, 64))
    + list(range(64, 257, 8))
    + [288, 320, 352, 384, 448, 512]
)

SIGMA_MIN = 1e-2  # calibration never returns less noise than this
SIGMA_MAX = 1e4  # calibration gives up above this
MAX_STEPS_CAP = 10**9  # max_steps never searches beyond this
_CALIBRATION_RTOL = 1e-3  # relative precision of calibrated sigma


def _check_positive_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _check_sample_rate(sample_rate: float) -> float:
    sample_rate = float(sample_rate)
    if not (0.0 < sample_rate <= 1.0):
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    return sample_rate


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return delta


def _check_steps(name: str, steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {steps!r}")
    return int(steps)


def _check_accountant(accountant: str) -> str:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    return accountant


_ORDERS = np.asarray(RDP_ORDERS, dtype=float)
# RDP -> (epsilon, delta) conversion term of Balle et al. 2020, Thm 21 (as in opacus get_privacy_spent):
# epsilon = min_a [ rdp(a) - (log(delta) + log(a)) / (a - 1) + log((a - 1) / a) ].
_LOG_SHRINK = np.log((_ORDERS - 1) / _ORDERS) - np.log(_ORDERS) / (_ORDERS - 1)


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP curve of one step over RDP_ORDERS from Opacus (cached: it is the expensive part)."""
    rdp = np.asarray(
        rdp_analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS)
        ),
        dtype=float,
    )
    rdp.setflags(write=False)
    return rdp


def _epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str,
             extra_gaussian: float | None = None) -> float:
    """Unvalidated core of compute_epsilon."""
    if steps == 0 and extra_gaussian is None:
        return 0.0
    if accountant == "prv":
        history = _prv_history(noise_multiplier, sample_rate, steps, extra_gaussian)
        epsilon = _prv_epsilon(history, delta) if _prv_points(history, delta) <= PRV_MAX_POINTS else math.nan
        if math.isfinite(epsilon):
            return epsilon
        accountant = "rdp"  # a looser bound, as valid, where PRV's grid would take gigabytes or fails
    if accountant == "rdp":
        # Same value as RDPAccountant.get_epsilon(delta, alphas=RDP_ORDERS) for these history entries, computed
        # here so searches do not recompute the RDP curve nor trigger Opacus's boundary-order warning at
        # probe points far from the target (a bound at a boundary order is still a valid, looser bound).
        rdp = _rdp_per_step(noise_multiplier, sample_rate) * steps if steps else np.zeros_like(_ORDERS)
        if extra_gaussian is not None:
            rdp = rdp + _ORDERS / (2.0 * extra_gaussian**2)  # a Gaussian mechanism's RDP curve
        eps = rdp - math.log(delta) / (_ORDERS - 1) + _LOG_SHRINK
        return float(np.nanmin(eps)) if not np.isnan(eps).all() else math.inf
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")


def _prv_history(noise_multiplier: float, sample_rate: float, steps: int,
                 extra_gaussian: float | None) -> list[tuple[float, float, int]]:
    """Opacus's PRV history (noise multiplier, sample rate, count) for the steps and the marginals."""
    if sample_rate >= 1.0:
        # Unsampled Gaussians compose exactly into one: 1 / z^2 adds up. Opacus's PRV would discretise
        # the whole composition (40 s for 1,000 full-batch steps).
        precision = steps / noise_multiplier**2 + (extra_gaussian**-2 if extra_gaussian is not None else 0.0)
        return [(precision**-0.5, 1.0, 1)]
    history = [(noise_multiplier, sample_rate, steps)] if steps else []
    return history + ([(extra_gaussian, 1.0, 1)] if extra_gaussian is not None else [])


def _prv_points(history: list[tuple[float, float, int]], delta: float) -> float:
    """How many points Opacus's PRV accountant would discretise the privacy loss on, as it sizes its
    domain in ``get_epsilon`` (default errors): about 150 bytes each."""
    delta_error = delta / 1000
    with _quiet_prv():
        half_width = compute_safe_domain_size(prvs=[PoissonSubsampledGaussianPRV(q, z) for z, q, _ in history],
                                              max_self_compositions=[t for _, _, t in history],
                                              eps_error=PRV_EPS_ERROR, delta_error=delta_error)
    mesh = PRV_EPS_ERROR / math.sqrt(sum(t for _, _, t in history) * math.log(12 / delta_error) / 2)
    return 2 * half_width / mesh


@contextlib.contextmanager
def _quiet_prv() -> Iterator[None]:
    """Opacus's PRV without its noise: at sample rate 1, log(1 - q) is -inf and exp(t) may overflow
    (a result that is not finite falls back on RDP's bound); its domain is sized by an RDP bound whose
    boundary-order warnings say nothing about the PRV result."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha",
                                category=UserWarning)
        warnings.filterwarnings("ignore", category=IntegrationWarning)  # Opacus checks the mean it integrates
        yield


def _prv_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """Opacus's PRV upper bound on epsilon (not its point estimate); NaN where its discretisation
    fails (at epsilon near 1,000 the loss distribution's mean is lost on the grid: Opacus raises)."""
    acc = PRVAccountant()
    acc.history = history
    with _quiet_prv():
        try:
            return float(acc.get_epsilon(delta=delta, eps_error=PRV_EPS_ERROR))
        except RuntimeError:
            return math.nan


def compute_epsilon(
    noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = DEFAULT_ACCOUNTANT,
    extra_gaussian: float | None = None,
) -> float:
    """Epsilon at ``delta`` after ``steps`` Poisson-subsampled Gaussian steps.

    ``accountant`` is "rdp" (Opacus RDP analysis over RDP_ORDERS) or "prv" (Opacus PRV upper bound).
    ``extra_gaussian``: the noise multiplier of one more Gaussian mechanism on the whole table
    (sample rate 1), composed with the steps by the same accountant (the DP marginals).
    """
    noise_multiplier = _check_positive_finite("noise_multiplier", noise_multiplier)
    sample_rate = _check_sample_rate(sample_rate)
    steps = _check_steps("steps", steps)
    delta = _check_delta(delta)
    accountant = _check_accountant(accountant)
    if extra_gaussian is not None:
        extra_gaussian = _check_positive_finite("extra_gaussian", extra_gaussian)
    return _epsilon(noise_multiplier, sample_rate, steps, delta, accountant, extra_gaussian)


def calibrate_noise_multiplier(
    epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = DEFAULT_ACCOUNTANT,
    extra_gaussian: float | None = None,
) -> float:
    """Smallest noise multiplier (to relative precision 1e-3) whose epsilon after ``steps`` is <= ``epsilon``.

    With ``extra_gaussian`` the target holds for the steps composed with that mechanism (see
    compute_epsilon). The returned value is checked with compute_epsilon, so meeting the target is
    guaranteed, not approximate.
    """
    epsilon = _check_positive_finite("epsilon", epsilon)
    delta = _check_delta(delta)
    sample_rate = _check_sample_rate(sample_rate)
    steps = _check_steps("steps", steps)
    accountant = _check_accountant(accountant)
    if extra_gaussian is not None:
        extra_gaussian = _check_positive_finite("extra_gaussian", extra_gaussian)
        if _epsilon(SIGMA_MAX, sample_rate, 0, delta, accountant, extra_gaussian) > epsilon:
            raise ValueError(f"epsilon={epsilon} is already spent at delta={delta} by the Gaussian mechanism "
                             f"of noise multiplier {extra_gaussian:.4g} before any step")
    if steps == 0:
        return SIGMA_MIN  # nothing is released, any noise will do

    def log_ratio(log_sigma: float) -> float:
        eps = _epsilon(math.exp(log_sigma), sample_rate, steps, delta, accountant, extra_gaussian)
        return float(np.clip(np.log(eps / epsilon), -50.0, 50.0)) if eps > 0 else -50.0

    def ok(sigma: float) -> bool:
        return _epsilon(sigma, sample_rate, steps, delta, accountant, extra_gaussian) <= epsilon

    # Bracket by galloping from sigma = 1: ok(hi) and not ok(lo).
    hi = 1.0
    while not ok(hi):
        if hi >= SIGMA_MAX:
            raise ValueError(
                f"epsilon={epsilon} is unreachable at delta={delta}, sample_rate={sample_rate}, steps={steps}: "
                f"it would need a noise multiplier above {SIGMA_MAX:g}"
            )
        hi = min(hi * 2.0, SIGMA_MAX)
    lo = hi
    while True:
        if lo <= SIGMA_MIN:
            return SIGMA_MIN  # even the least noise allowed meets the target
        lo = max(lo / 2.0, SIGMA_MIN)
        if not ok(lo):
            break
        hi = lo
    root = brentq(log_ratio, math.log(lo), math.log(hi), xtol=_CALIBRATION_RTOL / 2)
    sigma = min(math.exp(root), hi)
    while not ok(sigma):  # brentq may land just below the root; step up (hi itself is known to be ok)
        sigma = min(sigma * (1.0 + _CALIBRATION_RTOL), hi)
    return sigma


def zcdp_budget(epsilon: float, delta: float, accountant: str = DEFAULT_ACCOUNTANT) -> float:
    """rho of the Gaussian mechanism (on the whole table) calibrated to (epsilon, delta): 1 / (2 z^2).

    A budget scale for splitting (epsilon, delta) between mechanisms composed by the accountant.
    """
    return 1.0 / (2.0 * calibrate_noise_multiplier(epsilon, delta, 1.0, 1, accountant) ** 2)


def max_steps(
    epsilon: float, delta: float, sample_rate: float, noise_multiplier: float, accountant: str = DEFAULT_ACCOUNTANT
) -> int:
    """Largest step count whose epsilon stays <= ``epsilon`` (0 if even one step exceeds it).

    Searches by galloping then bisection up to MAX_STEPS_CAP steps, which is returned if still within budget.
    """
    epsilon = _check_positive_finite("epsilon", epsilon)
    delta = _check_delta(delta)
    sample_rate = _check_sample_rate(sample_rate)
    noise_multiplier = _check_positive_finite("noise_multiplier", noise_multiplier)
    accountant = _check_accountant(accountant)

    def ok(steps: int) -> bool:
        return _epsilon(noise_multiplier, sample_rate, steps, delta, accountant) <= epsilon

    return _last_true(ok, MAX_STEPS_CAP)


def _last_true(ok: Callable[[int], bool], cap: int) -> int:
    """Largest n in [0, cap] with ok(n), for ok true at 0 and monotone (true then false)."""
    lo, hi = 0, 1
    while hi <= cap and ok(hi):
        lo, hi = hi, hi * 2
    if hi > cap:
        if ok(cap):
            return cap
        hi = cap
    # Invariant: ok(lo) and not ok(hi).
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _as_positive_vector(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must contain only positive finite numbers, got {arr.tolist()}")
    return arr


def effective_noise_multiplier(clip_bounds: Sequence[float], noise_stds: Sequence[float]) -> float:
    """Noise multiplier of one step that clips group j to c_j and adds N(0, s_j^2) per coordinate.

    A record touches every group, so the step is ONE Gaussian mechanism: whitening group j by s_j gives
    unit noise and L2 sensitivity sqrt(sum_j (c_j/s_j)^2), hence z = 1 / sqrt(sum_j (c_j/s_j)^2).
    """
    c = _as_positive_vector("clip_bounds", clip_bounds)
    s = _as_positive_vector("noise_stds", noise_stds)
    if c.shape != s.shape:
        raise ValueError(f"clip_bounds and noise_stds must have the same length, got {c.size} and {s.size}")
    return float(1.0 / math.sqrt(float(np.sum((c / s) ** 2))))


def allocate_group_noise(
    clip_bounds: Sequence[float],
    group_sizes: Sequence[int],
    noise_multiplier: float,
    strategy: str = "min_variance",
) -> np.ndarray:
    """Per-group noise stds s_j with effective_noise_multiplier(clip_bounds, s) == noise_multiplier.

    "proportional": s_j = z*sqrt(k)*c_j.  "min_variance": minimising sum_j d_j s_j^2 subject to
    sum_j c_j^2/s_j^2 = 1/z^2, the Lagrange condition d_j = lam*c_j^2/s_j^4 gives s_j^2 = t*c_j/sqrt(d_j),
    t = z^2 * sum_k c_k*sqrt(d_k) (d_j = number of coordinates in group j).
    """
    c = _as_positive_vector("clip_bounds", clip_bounds)
    d = _as_positive_vector("group_sizes", group_sizes)
    if c.shape != d.shape:
        raise ValueError(f"clip_bounds and group_sizes must have the same length, got {c.size} and {d.size}")
    z = _check_positive_finite("noise_multiplier", noise_multiplier)
    if strategy == "proportional":
        s = z * math.sqrt(c.size) * c
    elif strategy == "min_variance":
        t = z * z * float(np.sum(c * np.sqrt(d)))
        s = np.sqrt(t * c / np.sqrt(d))
    else:
        raise ValueError(f"strategy must be one of {GROUP_NOISE_STRATEGIES}, got {strategy!r}")
    # Remove float rounding so the constraint holds to the last bit we can control.
    return s * (z / effective_noise_multiplier(c, s))
