"""High-dimensional noise-schedule benchmark with exact Bayes denoisers.

Reproduces the experiment of "Optimizing Noise Schedules of Generative Models in High Dimensions"
(Aranguri, Biroli, Mezard, Vanden-Eijnden, 2025) with the project's exact oracles, and adds the InfoGrid
discretisations. For each data law, grid and dimension d it finds N*, the fewest nonzero noise levels
(from a ladder of step counts) at which deterministic EDM-Heun sampling recovers both the high-level
feature (the weight of each mode / phase) and the low-level feature (the spread inside a mode).

Laws (infonoise.oracles)
    GM  GaussianMixture(d, m=1, s=1/2, p=0.8): x0 = c m 1 + s eta, P(c = +1) = p.
    CW  CurieWeiss(d, beta=2, h=1/2 log 4), the two-phase form: spins +-1, phase weight pi+ = 0.790,
        magnetisation m = 0.9575 inside a phase.

Sampler
    training.sampler.heun_sampler (EDM's Algorithm 2, S_churn = 0, Euler on the last step to 0, so
    NFE = 2N - 1 for every grid) driven by the exact denoiser. Start: exact noisy data x = x0 + sigma_max eps
    with sigma_max = 10 m sqrt(d) (m = the mode's per-coordinate mean: 1 for GM, the magnetisation for CW),
    i.e. ten times the norm of a mode centre.

Grids (N nonzero levels from sigma_max down to sigma_min = 0.002, then 0)
    edm, loguniform and the infogrid-* rows are infonoise.infogrid's (`sigma_steps`, `VARIANTS`) on the
    oracle's profile: K = 256 log-spaced bins, 'rate' = mmse(sigma)/sigma^3 at the geometric centres (GM:
    closed form; CW: Monte Carlo over --profile-samples draws, the same draws at every sigma).
    infogrid-calibrated: training.grid_calibration.calibrate_tempered_grid against a fine EDM reference on
    fresh start points (GM: reduced states, exactly the full-d error; CW: full d).
    ve-const           VE interpolant x_tau = x0 + sigma_max (1 - tau) eps. Constant denoising = equal steps
                       in tau, from tau = 0 (sigma_max) to the tau where sigma = sigma_min: sigma is linear in
                       the step index.
    vp-const           VP interpolant x_t = t x0 + sqrt(1 - t^2) eps. Dividing by t gives the EDM form with
                       sigma(t) = sqrt(1 - t^2) / t. Equal steps in t from t(sigma_max) = 1/sqrt(1 + sigma_max^2)
                       to t(sigma_min).
    ve-dilated,        the same interpolants under the piecewise-linear time change theta: [0, 1] -> [start,
    vp-dilated         end] with theta(1/2) = a breakpoint b; levels at theta(i/(N-1)), i = 0..N-1, so half
                       of the steps go to each side of b. This is the seed paper's dilation: one half
                       resolves the mode-weight (speciation) transition, the other the within-mode variance.
                       VP: t_b = kappa_vp / (m sqrt(d)), i.e. signal-to-noise |mu| t/sqrt(1-t^2) ~ kappa_vp at
                       the breakpoint (the speciation window lambda = |mu|^2/(s^2+sigma^2) <~ kappa_vp^2 lies
                       in the first half). VE: 1 - tau_b = kappa_ve / sqrt(d), i.e. sigma_b = kappa_ve
                       sigma_max / sqrt(d) = 10 kappa_ve m (the within-mode window in the second half).
                       Both kappas are d-independent constants, so the dilated grids are Theta_d(1) by
                       construction, not tuned per d.

GM metrics (exact: no sampling noise)
    The GM dynamics reduce exactly. With mu_hat = 1/sqrt(d), y = mu_hat . x obeys a 1-D Heun recursion with
    D_par, and since D_perp = s^2/(s^2+sigma^2) x_perp is linear, every Heun step multiplies x_perp by a
    deterministic scalar: x_perp(final) = F x_perp(start). The start law is known: y ~ p N(|mu|, S^2) +
    (1-p) N(-|mu|, S^2), x_perp ~ N(0, S^2 I_{d-1}), S^2 = s^2 + sigma_max^2. The final map y -> T(y) is
    evaluated on a grid of 4001 starting values; its zero crossings are refined by two 256-fold zooms, the
    mode weight P(T(y) > 0) is integrated exactly with the normal CDF between crossings, and the spread of
    y_final inside each mode by 1024-node Gauss-Legendre quadrature on each segment between crossings.
        mode-weight error    |P(y_final > 0) - P_true|, P_true = p Phi(|mu|/s) + (1-p) Phi(-|mu|/s) (= p).
        variance error       max(|F^2 S^2 / s^2 - 1|, |v_par / s^2 - 1|): per-coordinate variance of x_perp
                             and the pooled within-mode variance of y_final (modes split by the sign of y),
                             both relative to s^2.
        N*                   fewest ladder N with mode-weight error < 0.01 and variance error < 0.02.
    tests/test_bench_highdim.py checks that the full-d run equals the reduced one sample by sample.

CW metrics (Monte Carlo over --samples draws, full d-dimensional sampling)
    Magnetisation M = mean_i x_i of each final sample. A fine reference run (EDM grid, --ref-steps levels)
    starts from the same noisy points (common random numbers).
        phase error          |P(M > 0) - pi+| against the law (Monte Carlo noise ~ 0.41/sqrt(samples)).
        flip rate            fraction of samples whose sign(M) differs from the reference run's.
        W1                   Wasserstein-1 distance between the laws of M and of M_ref; w1_abs_rel: W1 of |M|
                             vs |M_ref| divided by the within-phase spread sqrt((1 - m^2)/d) (the low-level
                             feature, insensitive to the phase weights).
        N*                   fewest ladder N with flip rate < 0.01 and w1_abs_rel < 0.1.

Modes
    --quick and the full run differ in dimensions, ladders, samples and reference levels (QUICK, FULL below).
    CW at d = 10^4 is the expensive part of the full run (hours on CPU; use --device cuda).
Expected shape (seed paper): VE-const recovers the mode weight in O(1) steps but the variance needs
Theta(sqrt d); VP-const the reverse; EDM / log-uniform nearly d-independent.

Examples:
    python -m scripts.bench_highdim --quick
    python -m scripts.bench_highdim --json bench_highdim.json
    python -m scripts.bench_highdim --models gm --dims 10,100 --grids edm,vp-const --ladder 4,8,16,32
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import Callable, Optional

import click
import numpy as np
import torch

from cli_common import comma_list
from dnnlib.util import write_json
from infonoise.oracles import BayesDenoiser, CurieWeiss, GaussianMixture
from training.grid_calibration import NamedGrids
from training.sampler import edm_sigma_steps, heun_sampler

GRID_NAMES = ('edm', 'loguniform', 'infogrid-literal', 'infogrid-entropic', 'infogrid-blend',
              'infogrid-tempered', 'infogrid-solver', 'infogrid-calibrated',
              've-const', 've-dilated', 'vp-const', 'vp-dilated')
CALIB_LATENTS = 256                       # start points used to calibrate infogrid-calibrated
CALIB_REF_STEPS = 1024                    # levels of the calibration reference (cheap with exact denoisers)
SIGMA_MIN = 0.002
PROFILE_BINS = 256
MODE_TOL, VAR_TOL = 0.01, 0.02            # GM: mode-weight error, relative within-mode variance error
FLIP_TOL, W1_TOL = 0.01, 0.1              # CW: flip rate vs reference, relative W1 of |M|
GM_NODES = 4001                           # starting values of y on which the reduced map is evaluated
ZOOM_POINTS, ZOOM_ROUNDS = 256, 2
GL_NODES = 1024                           # Gauss-Legendre nodes per segment for the within-mode spread

LADDER = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
DIMS = (10, 100, 1000, 10000)
QUICK = dict(dims=DIMS, cw_dims=DIMS[:2], ladder=tuple(n for n in LADDER if n <= 512),
             cw_ladder=tuple(2 ** k for k in range(1, 9)), samples=1000, ref_steps=256, profile_samples=128)
FULL = dict(dims=DIMS, cw_dims=DIMS, ladder=LADDER, cw_ladder=tuple(n for n in LADDER if n <= 1024), samples=4000,
            ref_steps=1024, profile_samples=512)


# ---------------------------------------------------------------------------------------------------
# Grids.

def interpolant_sigma_steps(kind: str, num_steps: int, sigma_min: float, sigma_max: float,
                            breakpoint: Optional[float] = None) -> torch.Tensor:
    """The VE (kind 've': sigma(tau) = sigma_max (1 - tau)) or VP (kind 'vp': x_t = t x0 + sqrt(1 - t^2) eps, i.e.
    sigma(t) = sqrt(1 - t^2)/t) levels at natural times i/(N-1), i = 0..N-1, from sigma_max to sigma_min, then 0:
    uniform in time (breakpoint None) or the two-segment dilation with theta(1/2) = breakpoint (tau_b or t_b)."""
    if kind == 've':
        start, end = 0.0, 1.0 - sigma_min / sigma_max
    else:
        start, end = 1.0 / math.sqrt(1.0 + sigma_max ** 2), 1.0 / math.sqrt(1.0 + sigma_min ** 2)
    u = torch.linspace(0.0, 1.0, num_steps, dtype=torch.float64)
    t = start + u * (end - start)
    if breakpoint is not None:
        b = min(max(breakpoint, start), end)
        t = torch.where(u <= 0.5, start + 2.0 * u * (b - start), b + (2.0 * u - 1.0) * (end - b))
    sigma = sigma_max * (1.0 - t) if kind == 've' else torch.sqrt((1.0 - t) * (1.0 + t)) / t
    sigma[0], sigma[-1] = sigma_max, sigma_min
    return torch.cat([sigma, sigma.new_zeros(1)])


def oracle_profile(rate_fn: Callable[[np.ndarray], np.ndarray], sigma_min: float, sigma_max: float,
                   num_bins: int = PROFILE_BINS) -> dict:
    """InfoGrid profile: log-spaced edges, geometric centres and rate = mmse/sigma^3 at the centres."""
    edges = np.geomspace(sigma_min, sigma_max, num_bins + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    return {'edges': edges, 'sigma': centres, 'rate': np.asarray(rate_fn(centres), dtype=np.float64)}


def make_grid(name: str, num_steps: int, sigma_max: float, dim: int, mode_norm: float,
              profile: Optional[dict], kappa_vp: float, kappa_ve: float, sigma_min: float = SIGMA_MIN,
              named: Optional[NamedGrids] = None) -> torch.Tensor:
    """The named sigma grid: num_steps levels from sigma_max to sigma_min, then 0 (float64, CPU).

    named: the law's grids by name (`training.grid_calibration.NamedGrids`, which keeps the surrogate and the
    calibrations; built here without calibration latents when None) for every name but the VE and VP ones.
    """
    if name in ('ve-const', 'vp-const'):
        return interpolant_sigma_steps(name[:2], num_steps, sigma_min, sigma_max)
    if name == 've-dilated':
        return interpolant_sigma_steps('ve', num_steps, sigma_min, sigma_max, 1.0 - kappa_ve / math.sqrt(dim))
    if name == 'vp-dilated':
        return interpolant_sigma_steps('vp', num_steps, sigma_min, sigma_max, kappa_vp / mode_norm)
    return (named or NamedGrids(None, profile, sigma_min, sigma_max))(name, num_steps)


# ---------------------------------------------------------------------------------------------------
# Sampling with the exact denoisers.

class OracleNet:
    """An exact denoiser as the net-like callable that training.sampler expects: net(x, sigma, labels)."""

    def __init__(self, oracle: BayesDenoiser):
        self.oracle = oracle          # an infonoise.oracles law with denoise(x, sigma)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels=None) -> torch.Tensor:
        return self.oracle.denoise(x, sigma)


class ReducedGMNet:
    """The GM denoiser on reduced states [y, z], y = mu_hat . x, z = |x_perp| (D_perp only rescales x_perp).

    The probability-flow ODE keeps x_perp's direction, so Heun on [y, z] is Heun on x exactly, and
    |x - x'|^2 = (y - y')^2 + (z - z')^2 for two runs from the same start.
    """

    def __init__(self, gm: GaussianMixture):
        self.gm = gm                  # the law whose posterior mean is used

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels=None) -> torch.Tensor:
        return torch.stack([self.gm.denoise_reduced(x[:, 0], sigma), self.gm.perp_factor(sigma) * x[:, 1]], dim=1)


def _deterministic(net, x_start: torch.Tensor, sigma_steps: torch.Tensor) -> torch.Tensor:
    steps = torch.as_tensor(sigma_steps, dtype=torch.float64)
    # S_churn = 0 multiplies the sampler's per-step draw by zero: zeros_like skips generating it.
    return heun_sampler(net, x_start.to(torch.float64) / steps[0], steps, randn_like=torch.zeros_like)


def sample_exact(oracle: BayesDenoiser, x_start: torch.Tensor, sigma_steps: torch.Tensor) -> torch.Tensor:
    """EDM-Heun with the exact denoiser from x_start (at sigma_steps[0]) down the grid (float64)."""
    return _deterministic(OracleNet(oracle), x_start, sigma_steps)


def gm_reduced_heun(gm: GaussianMixture, y: torch.Tensor, sigma_steps: torch.Tensor):
    """The GM run in reduced form: (final y, F) with x_perp(final) = F x_perp(start)."""
    y = torch.as_tensor(y, dtype=torch.float64)
    flat = y.reshape(-1)
    # One extra row carries z = 1, whose final value is F (the same for every row).
    rows = torch.cat([flat, flat.new_zeros(1)])
    state = torch.stack([rows, torch.ones_like(rows)], 1)
    out = _deterministic(ReducedGMNet(gm), state, sigma_steps)
    return out[:-1, 0].reshape(y.shape), float(out[-1, 1])


def gm_reduced_start(gm: GaussianMixture, n: int, sigma_max: float, generator: torch.Generator) -> torch.Tensor:
    """n exact noisy GM start points x0 + sigma_max eps in reduced form [y, |x_perp|] (float64)."""
    spread = math.sqrt(gm.s ** 2 + sigma_max ** 2)
    c = torch.where(torch.rand(n, dtype=torch.float64, generator=generator) < gm.p, 1.0, -1.0)
    y = c * gm.mu_norm + spread * torch.randn(n, dtype=torch.float64, generator=generator)
    z = spread * torch.randn(n, gm.dim - 1, dtype=torch.float64, generator=generator).norm(dim=1)
    return torch.stack([y, z], 1)


# ---------------------------------------------------------------------------------------------------
# Gaussian-mixture metrics (exact quadrature over the known start law).

def _zero_crossings(fn: Callable, nodes: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Locations where fn changes sign, refined from the node grid by repeated zooms."""
    idx = torch.nonzero((values[:-1] > 0) != (values[1:] > 0))[:, 0]
    left, right = nodes[idx], nodes[idx + 1]
    for _ in range(ZOOM_ROUNDS):
        if left.numel() == 0:
            break
        frac = torch.linspace(0.0, 1.0, ZOOM_POINTS, dtype=torch.float64)
        pts = left[:, None] + frac[None, :] * (right - left)[:, None]
        vals = fn(pts.reshape(-1)).reshape(pts.shape)
        change = (vals[:, :-1] > 0) != (vals[:, 1:] > 0)
        first = torch.where(change.any(1), change.float().argmax(1), torch.zeros_like(left, dtype=torch.long))
        rows = torch.arange(pts.shape[0])
        left, right = pts[rows, first], pts[rows, first + 1]
    if left.numel() == 0:
        return left
    v_left, v_right = fn(left), fn(right)
    denom = torch.where(v_right != v_left, v_right - v_left, torch.ones_like(v_left))
    return torch.sort(left - v_left * (right - left) / denom).values


@functools.lru_cache(maxsize=4)
def _gauss_legendre(num_nodes: int):
    return tuple(torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(num_nodes))


def gm_metrics(gm: GaussianMixture, sigma_steps: torch.Tensor, sigma_max: float,
               num_nodes: int = GM_NODES) -> dict:
    """Exact mode weight and within-mode variances of EDM-Heun on the grid for the GM."""
    mu, s, p = gm.mu_norm, gm.s, gm.p
    spread = math.sqrt(s ** 2 + sigma_max ** 2)
    nodes = torch.linspace(-mu - 12 * spread, mu + 12 * spread, num_nodes, dtype=torch.float64)
    y_final, factor = gm_reduced_heun(gm, nodes, sigma_steps)

    def final_map(v):
        return gm_reduced_heun(gm, v, sigma_steps)[0]

    def mixture_cdf(v):
        v = torch.as_tensor(v, dtype=torch.float64)
        return p * torch.special.ndtr((v - mu) / spread) + (1 - p) * torch.special.ndtr((v + mu) / spread)

    roots = _zero_crossings(final_map, nodes, y_final)
    bounds = torch.cat([nodes[:1], roots, nodes[-1:]])
    first_positive = bool(y_final[0] > 0)       # the segments between crossings alternate in sign
    mode_weight = sum((float(mixture_cdf(b) - mixture_cdf(a)) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))
                       if (i % 2 == 0) == first_positive), 0.0)
    p_true = p * float(torch.special.ndtr(torch.tensor(mu / s))) + (1 - p) * float(
        torch.special.ndtr(torch.tensor(-mu / s)))

    # Within-mode spread of y_final: Gauss-Legendre on each segment between crossings (no node sits on
    # a crossing, where the final map is steepest), weighted by the start density.
    gl_x, gl_w = _gauss_legendre(GL_NODES)
    left, right = bounds[:-1, None], bounds[1:, None]
    pts = (0.5 * (left + right) + 0.5 * (right - left) * gl_x).reshape(-1)
    density = (p * torch.exp(-0.5 * ((pts - mu) / spread) ** 2)
               + (1 - p) * torch.exp(-0.5 * ((pts + mu) / spread) ** 2)) / (spread * math.sqrt(2 * math.pi))
    weights = (0.5 * (right - left) * gl_w).reshape(-1) * density
    y_pts = final_map(pts)
    pooled, mass = 0.0, 0.0
    for side in (y_pts > 0, y_pts <= 0):
        w = weights[side]
        if float(w.sum()) <= 1e-12:
            continue
        mean = float((w * y_pts[side]).sum() / w.sum())
        pooled += float((w * (y_pts[side] - mean) ** 2).sum())
        mass += float(w.sum())
    var_par = pooled / mass
    var_perp = float(factor) ** 2 * spread ** 2
    perp_err, par_err = abs(var_perp / s ** 2 - 1.0), abs(var_par / s ** 2 - 1.0)
    return {'mode_weight': mode_weight, 'mode_weight_error': abs(mode_weight - p_true),
            'var_perp': var_perp, 'var_par': var_par, 'var_perp_rel_error': perp_err,
            'var_par_rel_error': par_err, 'variance_error': max(perp_err, par_err)}


def gm_passes(metrics: dict) -> bool:
    return metrics['mode_weight_error'] < MODE_TOL and metrics['variance_error'] < VAR_TOL


# ---------------------------------------------------------------------------------------------------
# Curie-Weiss metrics (Monte Carlo, coupled to a fine reference run).

def wasserstein1(a: torch.Tensor, b: torch.Tensor) -> float:
    """W1 between two equal-size 1-D samples (sorted coupling)."""
    return float((torch.sort(a).values - torch.sort(b).values).abs().mean())


def cw_metrics(cw: CurieWeiss, magnetization: torch.Tensor, reference: torch.Tensor) -> dict:
    within = math.sqrt((1.0 - cw.m ** 2) / cw.dim)
    weight = float((magnetization > 0).double().mean())
    return {'phase_weight': weight, 'phase_error': abs(weight - cw.pi_plus),
            'flip_rate': float(((magnetization > 0) != (reference > 0)).double().mean()),
            'w1': wasserstein1(magnetization, reference),
            'w1_abs_rel': wasserstein1(magnetization.abs(), reference.abs()) / within}


def cw_passes(metrics: dict) -> bool:
    return metrics['flip_rate'] < FLIP_TOL and metrics['w1_abs_rel'] < W1_TOL


# ---------------------------------------------------------------------------------------------------
# Drivers.

def _n_star(per_n: dict, passes: Callable) -> Optional[int]:
    return next((n for n in sorted(per_n) if passes(per_n[n])), None)


def run_gm(dims, grids, ladder, kappa_vp, kappa_ve, m=1.0, s=0.5, p=0.8, log=lambda line: None) -> dict:
    n_star, errors = {g: {} for g in grids}, {g: {} for g in grids}
    for d in dims:
        gm = GaussianMixture(d, m=m, s=s, p=p)
        sigma_max = 10.0 * gm.mu_norm
        profile = oracle_profile(gm.rate, SIGMA_MIN, sigma_max)
        calib = None
        if 'infogrid-calibrated' in grids:
            calib = gm_reduced_start(gm, CALIB_LATENTS, sigma_max, torch.Generator().manual_seed(1000 + d)) / sigma_max
        named = NamedGrids(ReducedGMNet(gm), profile, SIGMA_MIN, sigma_max, calib, calib_ref_steps=CALIB_REF_STEPS)
        for g in grids:
            log(f'GM d={d} grid={g}')
            per_n = {n: gm_metrics(gm, make_grid(g, n, sigma_max, d, gm.mu_norm, profile, kappa_vp, kappa_ve,
                                                 named=named), sigma_max) for n in ladder}
            errors[g][str(d)] = {str(n): v for n, v in per_n.items()}
            n_star[g][str(d)] = _n_star(per_n, gm_passes)
    return {'law': {'name': 'GaussianMixture', 'm': m, 's': s, 'p': p},
            'criterion': f'mode_weight_error < {MODE_TOL} and variance_error < {VAR_TOL}',
            'N_star': n_star, 'errors': errors}


def run_cw(dims, grids, ladder, samples, ref_steps, profile_samples, kappa_vp, kappa_ve, seed, device,
           beta=2.0, h=0.5 * math.log(4.0), log=lambda line: None) -> dict:
    n_star, errors, reference = {g: {} for g in grids}, {g: {} for g in grids}, {}
    for d in dims:
        cw = CurieWeiss(d, beta=beta, h=h)
        mode_norm = cw.m * math.sqrt(d)
        sigma_max = 10.0 * mode_norm
        gen = torch.Generator().manual_seed(seed + d)
        profile = None
        if any(g.startswith('infogrid-') for g in grids):
            log(f'CW d={d}: Monte Carlo profile')
            profile = oracle_profile(
                lambda sig: cw.rate(sig, num_samples=profile_samples, generator=gen), SIGMA_MIN, sigma_max)
        x_start = (cw.sample(samples, generator=gen)
                   + sigma_max * torch.randn(samples, d, dtype=torch.float64, generator=gen)).to(device)
        log(f'CW d={d}: reference run ({ref_steps} EDM levels)')
        ref_grid = edm_sigma_steps(ref_steps, SIGMA_MIN, sigma_max, rho=7)
        ref_mag = sample_exact(cw, x_start, ref_grid).mean(1).cpu()
        ref_weight = float((ref_mag > 0).double().mean())
        reference[str(d)] = {'steps': ref_steps, 'phase_weight': ref_weight, 'pi_plus': cw.pi_plus,
                             'phase_error': abs(ref_weight - cw.pi_plus),
                             'mean_abs_magnetization': float(ref_mag.abs().mean()), 'm': cw.m}
        calib = None
        if 'infogrid-calibrated' in grids:
            calib = (cw.sample(CALIB_LATENTS, generator=gen) + sigma_max * torch.randn(
                CALIB_LATENTS, d, dtype=torch.float64, generator=gen)).to(device) / sigma_max
        named = NamedGrids(OracleNet(cw), profile, SIGMA_MIN, sigma_max, calib, calib_ref_steps=CALIB_REF_STEPS)
        for g in grids:
            log(f'CW d={d} grid={g}')
            per_n = {}
            for n in ladder:
                grid = make_grid(g, n, sigma_max, d, mode_norm, profile, kappa_vp, kappa_ve, named=named)
                mag = sample_exact(cw, x_start, grid).mean(1).cpu()
                per_n[n] = cw_metrics(cw, mag, ref_mag)
            errors[g][str(d)] = {str(n): v for n, v in per_n.items()}
            n_star[g][str(d)] = _n_star(per_n, cw_passes)
    return {'law': {'name': 'CurieWeiss', 'beta': beta, 'h': h},
            'criterion': f'flip_rate < {FLIP_TOL} and w1_abs_rel < {W1_TOL}', 'samples': samples,
            'reference': reference, 'N_star': n_star, 'errors': errors}


def markdown_table(title: str, result: dict, dims, ladder) -> str:
    lines = [f'### {title}', '', f'N* = fewest nonzero sigma levels (NFE = 2N - 1) with {result["criterion"]}; '
             f'">{max(ladder)}" = not reached on the ladder.', '',
             '| grid | ' + ' | '.join(f'd={d}' for d in dims) + ' |',
             '|---|' + '---|' * len(dims)]
    for g, row in result['N_star'].items():
        cells = [str(row[str(d)]) if row[str(d)] is not None else f'>{max(ladder)}' for d in dims]
        lines.append(f'| {g} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------------------------------------
# CLI.

@click.command(context_settings={'show_default': True}, epilog='\b\nExamples:' + __doc__.split('Examples:')[1].rstrip())
@click.option('--quick', is_flag=True,
              help='Small settings: about 6 CPU minutes (2 without the solver/calibrated rows).')
@click.option('--models', default='gm,cw', callback=comma_list(('gm', 'cw')), help='Laws to run.')
@click.option('--grids', default=','.join(GRID_NAMES), callback=comma_list(GRID_NAMES), help='Grids to compare.')
@click.option('--dims', callback=comma_list(minimum=2), help='GM dimensions [default: 10,100,1000,10000].')
@click.option('--cw-dims', callback=comma_list(minimum=2), help='CW dimensions [default: quick 10,100; full up to 10000].')
@click.option('--ladder', callback=comma_list(minimum=2), help='GM step counts N to try [default: quick 2..512, full 2..4096].')
@click.option('--cw-ladder', callback=comma_list(minimum=2), help='CW step counts [default: quick 2..256, full 2..1024].')
@click.option('--samples', type=click.IntRange(min=10), help='CW Monte Carlo samples [default: quick 1000, full 4000].')
@click.option('--ref-steps', type=click.IntRange(min=2), help='Levels of the CW reference run [default: 256/1024].')
@click.option('--profile-samples', type=click.IntRange(min=8), help='CW draws per profile sigma [default: 128/512].')
@click.option('--kappa-vp', type=click.FloatRange(min=0, min_open=True), default=3.0, help='VP dilation constant.')
@click.option('--kappa-ve', type=click.FloatRange(min=0, min_open=True), default=1.0, help='VE dilation constant.')
@click.option('--seed', type=click.IntRange(min=0), default=0, help='Random seed for the CW runs.')
@click.option('--device', default='cpu', help='Torch device for the CW runs (e.g. cuda).')
@click.option('--threads', type=click.IntRange(min=1), default=1,
              help='torch CPU threads (the work is many small tensor operations; 1 is usually fastest).')
@click.option('--json', 'json_path', type=click.Path(dir_okay=False, writable=True), help='Write all results here.')
def main(quick, models, grids, dims, cw_dims, ladder, cw_ladder, samples, ref_steps, profile_samples,
         kappa_vp, kappa_ve, seed, device, threads, json_path):
    """Steps needed by each sigma grid to sample a GM and a Curie-Weiss law in dimension d (exact denoisers)."""
    preset = QUICK if quick else FULL
    dims = dims or preset['dims']
    cw_dims = cw_dims or preset['cw_dims']
    ladder = tuple(sorted(set(ladder or preset['ladder'])))
    cw_ladder = tuple(sorted(set(cw_ladder or preset['cw_ladder'])))
    samples = samples or preset['samples']
    ref_steps = ref_steps or preset['ref_steps']
    profile_samples = profile_samples or preset['profile_samples']
    if json_path and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise click.BadParameter(f'the folder of {json_path} does not exist', param_hint='--json')
    try:
        torch.empty(1, device=device)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f'device {device!r} is not available here', param_hint='--device')

    log = functools.partial(click.echo, err=True)
    began = time.time()
    results: dict = {'settings': {'grids': list(grids), 'sigma_min': SIGMA_MIN, 'sigma_max': '10 m sqrt(d)',
                                  'kappa_vp': kappa_vp, 'kappa_ve': kappa_ve, 'seed': seed,
                                  'sampler': 'EDM Heun, S_churn=0, Euler last step; NFE = 2N - 1'}}
    out = []
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if 'gm' in models:
            results['gm'] = dict(run_gm(dims, grids, ladder, kappa_vp, kappa_ve, log=log), ladder=list(ladder))
            out.append(markdown_table('Gaussian mixture (m = 1, s = 0.5, p = 0.8)', results['gm'], dims, ladder))
        if 'cw' in models:
            results['cw'] = dict(run_cw(cw_dims, grids, cw_ladder, samples, ref_steps, profile_samples, kappa_vp,
                                        kappa_ve, seed, device, log=log), ladder=list(cw_ladder))
            out.append(markdown_table(f'Curie-Weiss two-phase (beta = 2, h = 1/2 log 4; {samples} samples)',
                                      results['cw'], cw_dims, cw_ladder))
    finally:
        torch.set_num_threads(previous_threads)
    results['settings'].update(seconds=round(time.time() - began, 1), quick=quick, threads=threads)
    click.echo('\n'.join(out))
    if json_path:
        try:
            write_json(json_path, results)
        except OSError as err:
            raise click.ClickException(f'cannot write {json_path}: {err.strerror or err}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
