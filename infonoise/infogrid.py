"""InfoGrid: an inference σ-discretisation from a learned entropy-rate profile (paper Eq. 19).

The profile's rate r is read as piecewise constant on its bins (as in the sampling table). A cumulative
measure U(σ) is tabulated at the bin edges,

    'literal'   U(σ) ∝ ∫_{σ_min}^{σ} σ' r(σ') dσ'     (paper Eq. 19 as written)
    'entropic'  U(σ) ∝ ∫_{σ_min}^{σ} r(σ') dσ'         (entropic time, Eq. 14)

optionally blended with the log-uniform measure, M = (1 − floor)·U + floor·log(σ/σ_min)/log(σ_max/σ_min),
and the grid takes the σ's at which M = 1, 1 − 1/(N−1), …, 0, inverting M by piecewise-linear
interpolation of log σ between the tabulated points (monotone by construction).
"""
from __future__ import annotations

import math

import numpy as np
import torch

MEASURES = ('literal', 'entropic')


def _bin_mass(edges: np.ndarray, rate: np.ndarray, measure: str) -> np.ndarray:
    if measure == 'literal':
        return rate * (edges[1:] ** 2 - edges[:-1] ** 2) / 2
    return rate * np.diff(edges)


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
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f'num_steps must be an integer >= 2, got {num_steps}')
    sigma_min, sigma_max = float(sigma_min), float(sigma_max)
    if not (math.isfinite(sigma_min) and sigma_min > 0):
        raise ValueError(f'sigma_min must be a finite number > 0, got {sigma_min}')
    if not (math.isfinite(sigma_max) and sigma_max > sigma_min):
        raise ValueError(f'sigma_max must be finite and greater than sigma_min={sigma_min}, got {sigma_max}')
    if measure not in MEASURES:
        raise ValueError(f'measure must be one of {", ".join(MEASURES)}, got {measure!r}')
    if not 0 <= floor <= 1:
        raise ValueError(f'floor must lie in [0, 1], got {floor}')
    key = 'gated_rate' if gated else 'rate'
    if 'edges' not in profile or key not in profile:
        raise ValueError(f'profile needs "edges" and "{key}"')
    edges = np.asarray(profile['edges'], dtype=np.float64)
    rate = np.asarray(profile[key], dtype=np.float64)
    if edges.ndim != 1 or rate.shape != (edges.size - 1,) or rate.size < 1:
        raise ValueError(f'profile edges must be [K+1] and {key} [K], got {edges.shape} and {rate.shape}')
    if not (np.all(np.isfinite(rate)) and np.all(rate >= 0)):
        raise ValueError(f'profile {key} is not a finite non-negative estimate (no refresh yet?)')
    if not (np.all(edges > 0) and np.all(np.diff(edges) > 0)):
        raise ValueError('profile edges must be positive and increasing')

    # Continue the profile with its edge values where the requested range reaches beyond it.
    if sigma_min < edges[0]:
        edges, rate = np.concatenate([[sigma_min], edges]), np.concatenate([rate[:1], rate])
    if sigma_max > edges[-1]:
        edges, rate = np.concatenate([edges, [sigma_max]]), np.concatenate([rate, rate[-1:]])
    log_edges = np.log(edges)
    cum = np.concatenate([[0.0], np.cumsum(_bin_mass(edges, rate, measure))])

    # Tabulated points inside [sigma_min, sigma_max].
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    inner = log_edges[(log_edges > lo) & (log_edges < hi)]
    knots = np.concatenate([[lo], inner, [hi]])
    cum_knots = np.interp(knots, log_edges, cum)
    total = cum_knots[-1] - cum_knots[0]
    loguniform = (knots - lo) / (hi - lo)
    if floor < 1:
        if not total > 0:
            raise ValueError(f'profile {key} has no mass on [{sigma_min}, {sigma_max}]')
        measure_knots = (1 - floor) * (cum_knots - cum_knots[0]) / total + floor * loguniform
    else:
        measure_knots = loguniform
    measure_knots[0], measure_knots[-1] = 0.0, 1.0

    # Invert: for each target t, the first knot j with M_j >= t bounds a segment with M_{j-1} < t <= M_j.
    targets = 1 - np.arange(num_steps) / (num_steps - 1)
    j = np.clip(np.searchsorted(measure_knots, targets, side='left'), 1, knots.size - 1)
    m0, m1 = measure_knots[j - 1], measure_knots[j]
    frac = np.clip((targets - m0) / np.where(m1 > m0, m1 - m0, 1.0), 0, 1)
    sigma = np.exp(knots[j - 1] + frac * (knots[j] - knots[j - 1]))
    sigma[0], sigma[-1] = sigma_max, sigma_min
    return torch.from_numpy(np.concatenate([sigma, [0.0]]))
