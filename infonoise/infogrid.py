"""InfoGrid: an inference σ-discretisation from a learned entropy-rate profile (paper Eq. 19).

The profile's rate r is read as piecewise constant on its bins (as in the sampling table). A cumulative
measure U(σ) is tabulated at the bin edges,

    'literal'   U(σ) ∝ ∫_{σ_min}^{σ} σ' r(σ') dσ'     (paper Eq. 19 as written)
    'entropic'  U(σ) ∝ ∫_{σ_min}^{σ} r(σ') dσ'         (entropic time, Eq. 14)

optionally blended with the log-uniform measure, M = (1 − floor)·U + floor·log(σ/σ_min)/log(σ_max/σ_min),
and the grid takes the σ's at which M = 1, 1 − 1/(N−1), …, 0, inverting M by piecewise-linear
interpolation of log σ between the tabulated points (monotone by construction).

Further constructions (every function returns N decreasing σ's, σ_max first and σ_min last,
then a trailing 0, float64):
    loguniform_sigma_steps     equal steps in log σ (the reference grid of the blends).
    tempered_sigma_steps       EDM's ρ-spacing tilted by the information density to the power γ
                               (γ = 0: EDM's grid exactly; γ = 1, ρ = ∞: Eq. 19).
    solver_aware_sigma_steps   equal predicted Heun (or Euler) step error on a Gaussian surrogate fitted to
                               the profile (`gaussian_surrogate`, `surrogate_step_error`).
Calibrating the tempered grid's (γ, ρ) needs a network and lives in training/grid_calibration.py.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .grid import check_int, check_sigma_range

MEASURES = ('literal', 'entropic')
EDM_RHO = 7.0   # EDM's grid exponent ρ: the default of every ρ-grid (edm_sigma_steps, tempered, generate.py --rho)
TEMPERED_GAMMA = 0.5   # the tempered grid's default exponent γ


def _bin_mass(edges: np.ndarray, rate: np.ndarray, measure: str) -> np.ndarray:
    if measure == 'literal':
        return rate * (edges[1:] ** 2 - edges[:-1] ** 2) / 2
    return rate * np.diff(edges)


def _check_range(num_steps: int, sigma_min: float, sigma_max: float) -> tuple[int, float, float]:
    return (check_int('num_steps', num_steps, 2), *check_sigma_range(sigma_min, sigma_max))


def has_rate(profile: dict, gated: bool = False) -> bool:
    """Whether the profile carries an estimated entropy rate, what InfoGrid needs (a rival schedule's profile and
    InfoNoise's before its first refresh have none)."""
    rate = profile.get('gated_rate' if gated else 'rate')
    return rate is not None and bool(np.isfinite(np.asarray(rate, dtype=np.float64)).any())


def _profile_arrays(profile: dict, gated: bool) -> tuple[np.ndarray, np.ndarray]:
    """(edges [K+1], rate [K]) of the profile, validated."""
    key = 'gated_rate' if gated else 'rate'
    if 'edges' not in profile or key not in profile:
        raise ValueError(f'profile needs "edges" and "{key}"')
    edges = np.asarray(profile['edges'], dtype=np.float64)
    rate = np.asarray(profile[key], dtype=np.float64)
    if edges.ndim != 1 or rate.shape != (edges.size - 1,) or rate.size < 1:
        raise ValueError(f'profile edges must be [K+1] and {key} [K], got {edges.shape} and {rate.shape}')
    if not has_rate(profile, gated):
        raise ValueError('InfoGrid needs an InfoNoise profile with an estimated entropy rate, and this one has none '
                         '(a rival schedule has no rate; InfoNoise has one from its first refresh on)')
    if not (np.all(np.isfinite(rate)) and np.all(rate >= 0)):
        raise ValueError(f'profile {key} is not a finite non-negative estimate (no refresh yet?)')
    if not (np.all(edges > 0) and np.all(np.diff(edges) > 0)):
        raise ValueError('profile edges must be positive and increasing')
    return edges, rate


def _grid(sigma: np.ndarray, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The decreasing σ's with their ends set exactly to sigma_max and sigma_min, then the trailing 0."""
    sigma[0], sigma[-1] = sigma_max, sigma_min
    return torch.from_numpy(np.concatenate([sigma, [0.0]]))


def _invert_uniform(coord: np.ndarray, cum: np.ndarray, num_steps: int) -> np.ndarray:
    """Coordinates at which the increasing piecewise-linear cum (0 at coord[0], 1 at coord[-1]) equals
    1, 1 − 1/(N−1), …, 0 (the σ grid's order: high to low)."""
    targets = 1 - np.arange(num_steps) / (num_steps - 1)
    j = np.clip(np.searchsorted(cum, targets, side='left'), 1, coord.size - 1)
    m0, m1 = cum[j - 1], cum[j]
    frac = np.clip((targets - m0) / np.where(m1 > m0, m1 - m0, 1.0), 0, 1)
    return coord[j - 1] + frac * (coord[j] - coord[j - 1])


def _extend(edges: np.ndarray, rate: np.ndarray, sigma_min: float, sigma_max: float):
    """Continue the profile with its edge values where [sigma_min, sigma_max] reaches beyond it (an end
    within rounding of the range is moved onto it instead of adding a sliver bin)."""
    edges = edges.copy()
    if abs(edges[0] / sigma_min - 1) < 1e-9:
        edges[0] = sigma_min
    if abs(edges[-1] / sigma_max - 1) < 1e-9:
        edges[-1] = sigma_max
    if sigma_min < edges[0]:
        edges, rate = np.concatenate([[sigma_min], edges]), np.concatenate([rate[:1], rate])
    if sigma_max > edges[-1]:
        edges, rate = np.concatenate([edges, [sigma_max]]), np.concatenate([rate, rate[-1:]])
    return edges, rate


def infogrid_sigma_steps(profile: dict, num_steps: int, sigma_min: float, sigma_max: float,
                         measure: str = 'literal', floor: float = 0.0, gated: bool = False) -> torch.Tensor:
    """num_steps decreasing σ (first sigma_max, last sigma_min) followed by a trailing 0, float64.

    Args:
        profile:   telemetry dict with 'edges' [K+1] and 'rate' [K] (or 'gated_rate' when `gated`).
        num_steps: number of nonzero σ's, >= 2.
        sigma_min, sigma_max: range of the grid, 0 < sigma_min < sigma_max. Beyond the profile's own
                   edges the rate is continued with the value of the nearest edge bin.
        measure:   'literal' or 'entropic' (see the module docstring).
        floor:     weight in [0, 1] of the log-uniform measure in the blend (0 = pure profile).
        gated:     use the gated rate r̃ instead of the raw rate r.
    """
    num_steps, sigma_min, sigma_max = _check_range(num_steps, sigma_min, sigma_max)
    if measure not in MEASURES:
        raise ValueError(f'measure must be one of {", ".join(MEASURES)}, got {measure!r}')
    if not 0 <= floor <= 1:
        raise ValueError(f'floor must lie in [0, 1], got {floor}')
    edges, rate = _extend(*_profile_arrays(profile, gated), sigma_min, sigma_max)
    log_edges = np.log(edges)
    cum = np.concatenate([[0.0], np.cumsum(_bin_mass(edges, rate, measure))])

    # Tabulated points inside [sigma_min, sigma_max].
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    knots = np.concatenate([[lo], log_edges[(log_edges > lo) & (log_edges < hi)], [hi]])
    cum_knots = np.interp(knots, log_edges, cum)
    total = cum_knots[-1] - cum_knots[0]
    loguniform = (knots - lo) / (hi - lo)
    if floor < 1:
        if not total > 0:
            raise ValueError(f'profile {"gated_rate" if gated else "rate"} has no mass on [{sigma_min}, {sigma_max}]')
        measure_knots = (1 - floor) * (cum_knots - cum_knots[0]) / total + floor * loguniform
    else:
        measure_knots = loguniform
    measure_knots[0], measure_knots[-1] = 0.0, 1.0

    # Invert: for each target t, the first knot j with M_j >= t bounds a segment with M_{j-1} < t <= M_j.
    return _grid(np.exp(_invert_uniform(knots, measure_knots, num_steps)), sigma_min, sigma_max)


# ---------------------------------------------------------------------------------------------------
# Fixed references and profile-driven constructions beyond Eq. 19.

def loguniform_sigma_steps(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """num_steps σ's equally spaced in log σ from sigma_max to sigma_min, then 0 (float64)."""
    num_steps, sigma_min, sigma_max = _check_range(num_steps, sigma_min, sigma_max)
    frac = np.arange(num_steps) / (num_steps - 1)
    return _grid(np.exp(math.log(sigma_max) + frac * (math.log(sigma_min) - math.log(sigma_max))), sigma_min, sigma_max)


def tempered_sigma_steps(profile: dict, num_steps: int, sigma_min: float, sigma_max: float,
                         gamma: float = TEMPERED_GAMMA, rho: float = EDM_RHO, measure: str = 'literal',
                         gated: bool = False) -> torch.Tensor:
    """EDM's ρ-spacing tilted by the tempered information density.

    Let ℓ_k be bin k's information density per unit log σ under `measure` (literal: the Eq. 19 mass
    ∫σ r dσ of the bin divided by its width in log σ; entropic: the same with ∫r dσ), and t = σ^(1/ρ)
    EDM's grid coordinate (t = log σ for ρ = ∞). The grid is uniform in

        u(σ) ∝ ∫_{σ_min}^{σ} (ℓ(σ') / max ℓ)^γ dt(σ'),

    inverted exactly (u is piecewise linear in t). Limits: γ = 0 is EDM's ρ-grid, γ = 0 with ρ = ∞ the
    log-uniform grid, γ = 1 with ρ = ∞ Eq. 19 with the density held constant in log σ inside each bin.
    0 < γ < 1 keeps EDM's allocation and moves steps towards the informative band.

    Args:
        profile, num_steps, sigma_min, sigma_max, gated: as in `infogrid_sigma_steps`.
        gamma:   tempering exponent γ >= 0 (0 = ignore the profile).
        rho:     EDM's exponent ρ > 0; math.inf = log σ coordinate.
        measure: 'literal' (Eq. 19) or 'entropic' information density.
    """
    num_steps, sigma_min, sigma_max = _check_range(num_steps, sigma_min, sigma_max)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f'gamma must be a finite number >= 0, got {gamma}')
    if not rho > 0:
        raise ValueError(f'rho must be > 0 (math.inf for log spacing), got {rho}')
    if measure not in MEASURES:
        raise ValueError(f'measure must be one of {", ".join(MEASURES)}, got {measure!r}')
    edges, rate = _extend(*_profile_arrays(profile, gated), sigma_min, sigma_max)
    density = _bin_mass(edges, rate, measure) / np.diff(np.log(edges))   # per unit log σ
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    log_edges = np.log(edges)
    knots = np.concatenate([[lo], log_edges[(log_edges > lo) & (log_edges < hi)], [hi]])
    bins = np.clip(np.searchsorted(log_edges, 0.5 * (knots[1:] + knots[:-1])) - 1, 0, rate.size - 1)
    inside = density[bins]
    if gamma > 0:
        if not inside.max() > 0:
            raise ValueError(f'profile {"gated_rate" if gated else "rate"} has no mass on [{sigma_min}, {sigma_max}]')
        tilt = (inside / inside.max()) ** gamma
    else:
        tilt = np.ones_like(inside)
    coord = knots if math.isinf(rho) else np.exp(knots / rho)
    cum = np.concatenate([[0.0], np.cumsum(tilt * np.diff(coord))])
    cum /= cum[-1]
    cum[-1] = 1.0
    t = _invert_uniform(coord, cum, num_steps)
    return _grid(np.exp(t) if math.isinf(rho) else t ** rho, sigma_min, sigma_max)


# --- Solver-aware grid: equalise the step error of a Gaussian surrogate fitted to the profile. ---------
#
# A Gaussian law with covariance eigenvalues λ_j (fraction w_j of the dimensions each) has
# mmse(σ)/σ² = Σ_j w_j λ_j/(λ_j + σ²), and its probability-flow ODE dx/dσ = (x − D(x; σ))/σ is linear in
# every eigen-direction: dx/dσ = f_j(σ) x with f_j = σ/(λ_j + σ²), exact step factor
# G_j = sqrt((λ_j + σ_b²)/(λ_j + σ_a²)) from σ_a to σ_b. One solver step multiplies x by
#     Euler  g_j = 1 + h f_j(σ_a),   Heun  g_j = 1 + h/2 [f_j(σ_a) + f_j(σ_b)(1 + h f_j(σ_a))],   h = σ_b − σ_a,
# so its relative error δ_j = g_j/G_j − 1 reaches the final sample unchanged (the flow is linear), where
# direction j has variance λ_j. The step's contribution to the final squared error per element is
#     e(σ_a, σ_b) = Σ_j w_j λ_j δ_j².
# The surrogate (λ_j, w_j) is fitted to the learned profile (σ r ∝ mmse/σ²) by non-negative least squares
# in relative error, and the grid makes e equal on every step (error equidistribution), found exactly:
# a greedy march with a common error level ε, and bisection on ε until N − 1 steps end at σ_min.

SURROGATE_COMPONENTS = 48     # eigenvalues λ_j, log-spaced in √λ over [σ_min/4, 4 σ_max]
SURROGATE_ITERS = 4000        # multiplicative NNLS updates
SOLVERS = ('heun', 'euler')
_FINE_POINTS = 2048           # candidate σ's per march (log-spaced), refined by bisection
_CHUNK = 32                   # candidates examined at once when looking for the next step's end
_ZOOM = 64                    # sub-points per refinement round of a step's end
_ZOOM_FRACTIONS = np.arange(1, _ZOOM + 1) / _ZOOM
_EXCESS_TOL = 1e-4            # |log(last step's error / ε)| accepted as equal errors


def gaussian_surrogate(profile: dict, sigma_min: float | None = None, sigma_max: float | None = None,
                       gated: bool = False, num_components: int = SURROGATE_COMPONENTS,
                       iters: int = SURROGATE_ITERS) -> tuple[np.ndarray, np.ndarray]:
    """(λ [J], w [J] >= 0): the Gaussian spectrum whose Σ w_j λ_j/(λ_j + σ²) best fits σ r(σ) of the
    profile at its bin centres, in relative least squares (the overall scale of w is arbitrary).

    Args:
        profile, gated: as in `infogrid_sigma_steps` ('sigma' centres are used when present).
        sigma_min, sigma_max: range the eigenvalues must cover (default: the profile's edges).
        num_components: J, number of log-spaced √λ_j.
        iters:  multiplicative-update iterations of the non-negative fit.
    """
    edges, rate = _profile_arrays(profile, gated)
    centres = np.asarray(profile['sigma'], dtype=np.float64) if 'sigma' in profile else np.sqrt(edges[1:] * edges[:-1])
    if centres.shape != rate.shape:
        centres = np.sqrt(edges[1:] * edges[:-1])
    lo = edges[0] if sigma_min is None else min(edges[0], float(sigma_min))
    hi = edges[-1] if sigma_max is None else max(edges[-1], float(sigma_max))
    # A Gaussian's mmse/σ² decreases in σ. Discrete data's rises from 0 below its peak (the denoiser has
    # snapped to the nearest value: D ≈ const, x − D ∝ σ, a flow every solver integrates exactly), so the
    # fit sees the decreasing envelope max_{σ' >= σ} σ' r(σ'): the peak value below the peak.
    target = np.maximum.accumulate((centres * rate)[::-1])[::-1]
    if np.sum(target > 0) < 2:
        raise ValueError('profile rate has fewer than two positive bins; cannot fit a surrogate')
    scale = np.where(target > 0, 1.0 / np.where(target > 0, target, 1.0), 0.0)       # relative errors
    lambdas = np.geomspace(lo / 4, 4 * hi, num_components) ** 2
    basis = lambdas[None, :] / (lambdas[None, :] + centres[:, None] ** 2) * scale[:, None]
    numer = basis.T @ (target * scale)           # Ãᵀ ỹ
    gram = basis.T @ basis
    weights = np.full(num_components, 1.0 / basis.sum(1).mean())
    for _ in range(int(iters)):
        weights *= numer / np.maximum(gram @ weights, 1e-300)
    return lambdas, weights


def _flow_rate(lambdas: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return sigma / (lambdas + sigma ** 2)


def surrogate_step_error(lambdas: np.ndarray, weights: np.ndarray, sigma_from, sigma_to,
                         solver: str = 'heun') -> np.ndarray:
    """e(σ_a, σ_b) = Σ_j w_j λ_j (g_j/G_j − 1)² for steps σ_a → σ_b > 0 (broadcast; numpy float64)."""
    if solver not in SOLVERS:
        raise ValueError(f'solver must be one of {", ".join(SOLVERS)}, got {solver!r}')
    a = np.asarray(sigma_from, dtype=np.float64)[..., None]
    b = np.asarray(sigma_to, dtype=np.float64)[..., None]
    h = b - a
    f_a = _flow_rate(lambdas, a)
    if solver == 'euler':
        g = 1 + h * f_a
    else:
        g = 1 + 0.5 * h * (f_a + _flow_rate(lambdas, b) * (1 + h * f_a))
    exact = np.sqrt((lambdas + b ** 2) / (lambdas + a ** 2))
    return ((g / exact - 1) ** 2) @ (weights * lambdas)


def _next_level(err, a: float, fine: np.ndarray, eps: float, rounds: int) -> float:
    """The end of the longest step from a (scanning down the fine grid) before the step error first
    exceeds eps, located to 1/_ZOOM^rounds of a fine-grid spacing; fine[-1] (= σ_min) when no step
    down to it exceeds eps."""
    start = int(np.searchsorted(-fine, -a, side='right'))
    prev = a
    for c0 in range(start, fine.size, _CHUNK):
        cand = fine[c0:c0 + _CHUNK]
        bad = np.nonzero(err(a, cand) > eps)[0]
        if bad.size == 0:
            prev = cand[-1]
            continue
        k = bad[0]
        ok, fail = (prev if k == 0 else cand[k - 1]), cand[k]
        for _ in range(rounds):
            zoom = ok * (fail / ok) ** _ZOOM_FRACTIONS
            over = np.nonzero(err(a, zoom) > eps)[0]
            j = over[0] if over.size else _ZOOM - 1
            ok, fail = (ok if j == 0 else zoom[j - 1]), zoom[j]
        return float(ok)
    return float(fine[-1])


def _march(err, fine: np.ndarray, eps: float, num_steps: int, rounds: int = 3) -> list:
    """num_steps greedy steps from fine[0], each the longest with error <= eps (stops at fine[-1])."""
    levels = [float(fine[0])]
    for _ in range(num_steps):
        levels.append(_next_level(err, levels[-1], fine, eps, rounds))
        if levels[-1] <= fine[-1]:
            break
    return levels


def _last_step_excess(err, fine: np.ndarray, log_eps: float, num_steps: int) -> tuple[float, list]:
    """Greedy march of num_steps − 1 steps at level ε, then one step to σ_min = fine[-1]:
    (log(error of that last step / ε), levels). Decreasing in ε, zero when all steps have error ε;
    −inf when the march reaches σ_min early (ε too large)."""
    levels = _march(err, fine, math.exp(log_eps), num_steps - 1)
    if levels[-1] <= fine[-1]:
        return -math.inf, levels
    last = float(err(levels[-1], fine[-1:])[0])
    return math.log(max(last, 1e-300)) - log_eps, levels + [float(fine[-1])]


def solver_aware_sigma_steps(profile: dict, num_steps: int, sigma_min: float, sigma_max: float,
                             solver: str = 'heun', gated: bool = False,
                             surrogate: tuple[np.ndarray, np.ndarray] | None = None) -> torch.Tensor:
    """Grid on which every step has the same error of the Gaussian surrogate.

    See the comment block above: the surrogate spectrum is fitted to the profile (`gaussian_surrogate`),
    and the N − 1 steps from sigma_max to sigma_min all get the same predicted contribution
    `surrogate_step_error` to the final squared error for `solver` ('heun' or 'euler'). The closing
    step to 0 (a plain Euler step in EDM's sampler) is not part of the balance.

    Args:
        profile, num_steps, sigma_min, sigma_max, gated: as in `infogrid_sigma_steps`.
        solver:    the solver whose step error is equalised.
        surrogate: precomputed (λ, w) to reuse across step counts (default: fitted here).
    """
    num_steps, sigma_min, sigma_max = _check_range(num_steps, sigma_min, sigma_max)
    if solver not in SOLVERS:
        raise ValueError(f'solver must be one of {", ".join(SOLVERS)}, got {solver!r}')
    lambdas, weights = surrogate if surrogate is not None else gaussian_surrogate(profile, sigma_min, sigma_max, gated)

    def err(a, b):
        return surrogate_step_error(lambdas, weights, a, b, solver)

    fine = np.geomspace(sigma_max, sigma_min, _FINE_POINTS)
    fine[0], fine[-1] = sigma_max, sigma_min
    steps = num_steps - 1
    levels = [sigma_max, sigma_min]
    if steps > 1:
        # Common error level ε: the last step's excess is continuous and decreasing in ε. Bracket its
        # root, bisect in log ε to a bracket of width 1, then Illinois regula falsi.
        log_hi = math.log(float(err(sigma_max, fine[1:]).max()) * (1 + 1e-9) + 1e-300)
        log_lo = log_hi - 92.0
        f_hi, f_lo = -math.inf, math.inf
        side, best = 0, (math.inf, None)
        for _ in range(200):
            if log_hi - log_lo > 1.0 or not (math.isfinite(f_lo) and math.isfinite(f_hi)):
                mid = 0.5 * (log_lo + log_hi)
            else:
                mid = log_hi - f_hi * (log_hi - log_lo) / (f_hi - f_lo)
            f_mid, levels = _last_step_excess(err, fine, mid, steps)
            if math.isfinite(f_mid) and abs(f_mid) < best[0]:
                best = (abs(f_mid), levels)
            if abs(f_mid) < _EXCESS_TOL or log_hi - log_lo < 1e-9:
                break
            if f_mid > 0:                      # the last step is worse: ε too small
                log_lo, f_lo = mid, f_mid
                f_hi *= 0.5 if side == -1 else 1.0
                side = -1
            else:
                log_hi, f_hi = mid, f_mid
                f_lo *= 0.5 if side == 1 else 1.0
                side = 1
        levels = best[1] if best[1] is not None else levels
        levels = levels[:steps + 1]
        while len(levels) < num_steps:             # stopped early at the floor: split the worst step
            errors = [float(err(a, np.array([b]))[0]) for a, b in zip(levels[:-1], levels[1:])]
            i = int(np.argmax(errors))
            levels.insert(i + 1, math.sqrt(levels[i] * levels[i + 1]))
    return _grid(np.asarray(levels, dtype=np.float64), sigma_min, sigma_max)


# ----------------------------------------------------------------------------------------------
# EDM's ρ-grid (paper Eq. 5) and every grid by name.

def step_fractions(num_steps: int, device: torch.device | str | None = None) -> torch.Tensor:
    """i/(N−1) for i = 0..N−1 in float64 (a single 0 when N = 1, i.e. only the grid's first point)."""
    step_indices = torch.arange(num_steps, dtype=torch.float64, device=device)
    if num_steps == 1:
        return step_indices
    return step_indices / (num_steps - 1)


def edm_sigma_steps(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80, rho: float = EDM_RHO,
                    round_sigma: Callable | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """EDM's time-step discretisation (paper Eq. 5) followed by a trailing 0.

    σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for i = 0..N−1, then σ_N = 0.

    Args:
        num_steps:   N ≥ 1, the number of nonzero noise levels (N = 1 gives [σ_max, 0]).
        sigma_min:   lowest nonzero noise level, > 0.
        sigma_max:   highest noise level, ≥ sigma_min.
        rho:         grid exponent ρ > 0 (EDM uses 7; ρ → ∞ approaches a log-uniform grid).
        round_sigma: optional callable applied to the N nonzero levels (e.g. ``net.round_sigma``).
        device:      device of the returned tensor (default CPU).

    Returns:
        float64 tensor of shape [N + 1], decreasing, last element 0.
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f'num_steps must be a positive integer; got {num_steps!r}')
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f'need 0 < sigma_min <= sigma_max; got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}')
    if not rho > 0:
        raise ValueError(f'rho must be positive; got {rho!r}')
    num_steps = int(num_steps)
    root_max = sigma_max ** (1 / rho)
    root_min = sigma_min ** (1 / rho)
    sigma = (root_max + step_fractions(num_steps, device) * (root_min - root_max)) ** rho
    if round_sigma is not None:
        sigma = torch.as_tensor(round_sigma(sigma)).to(torch.float64)
    return torch.cat([sigma, torch.zeros_like(sigma[:1])])


GRIDS = ('edm', 'loguniform', 'eq19', 'tempered', 'solver-aware')   # the σ grids by name (`sigma_steps`)

# The InfoGrid rows of the benchmarks and plots: name -> (a GRIDS name, its settings for `sigma_steps`).
VARIANTS = {
    'infogrid-literal': ('eq19', dict(measure='literal', floor=0.0)),      # paper Eq. 19 as written
    'infogrid-entropic': ('eq19', dict(measure='entropic', floor=0.0)),
    'infogrid-blend': ('eq19', dict(measure='literal', floor=0.5)),        # + 50% log-uniform
    'infogrid-tempered': ('tempered', dict(gamma=TEMPERED_GAMMA)),
    'infogrid-solver': ('solver-aware', dict(solver='heun')),
}


def sigma_steps(name: str, num_steps: int, sigma_min: float, sigma_max: float, profile: dict | None = None, *,
                rho: float = EDM_RHO, gamma: float = TEMPERED_GAMMA, measure: str = 'literal', floor: float = 0.0,
                gated: bool = False, solver: str = 'heun', surrogate: tuple[np.ndarray, np.ndarray] | None = None,
                round_sigma: Callable | None = None) -> torch.Tensor:
    """The σ grid called `name` (one of `GRIDS`): num_steps decreasing σ's from sigma_max to sigma_min, then 0
    (float64, CPU). The InfoGrid constructions ('eq19': `infogrid_sigma_steps` with measure and floor;
    'tempered': γ and ρ; 'solver-aware': solver and an optional pre-fitted surrogate) need the profile.

    round_sigma (e.g. `net.round_sigma`) rounds the nonzero levels, as EDM's sampler rounds its grid.
    """
    if name == 'edm':
        return edm_sigma_steps(num_steps, sigma_min, sigma_max, rho, round_sigma=round_sigma)
    if name == 'loguniform':
        steps = loguniform_sigma_steps(num_steps, sigma_min, sigma_max)
    elif name not in GRIDS:
        raise ValueError(f'unknown σ grid {name!r}; expected one of {", ".join(GRIDS)}')
    elif profile is None:
        raise ValueError(f'the {name} σ grid needs an InfoNoise profile')
    elif name == 'tempered':
        steps = tempered_sigma_steps(profile, num_steps, sigma_min, sigma_max, gamma=gamma, rho=rho, measure=measure,
                                     gated=gated)
    elif name == 'solver-aware':
        steps = solver_aware_sigma_steps(profile, num_steps, sigma_min, sigma_max, solver=solver, gated=gated,
                                         surrogate=surrogate)
    else:
        steps = infogrid_sigma_steps(profile, num_steps, sigma_min, sigma_max, measure=measure, floor=floor,
                                     gated=gated)
    steps = torch.as_tensor(steps, dtype=torch.float64).cpu()
    if round_sigma is not None:
        steps = torch.cat([torch.as_tensor(round_sigma(steps[:-1]), dtype=torch.float64).cpu(), steps[-1:]])
    return steps
