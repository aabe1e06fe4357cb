"""Pure functions from an estimated mmse profile to a sampling table (paper §3–5, App. B).

Every function takes arrays on the grid — numpy arrays or torch tensors — and returns the same kind
(float64; tensors come back on the input's device), except `gated_profile` (one whole refresh, as the sampler
and replays use it) and `band_shares` (a summary), which return numpy. The maths runs in float64 numpy, so the
sampler's refresh, `profile()` telemetry, replays and InfoGrid all share one implementation.

    rate      r_k = mse_k / σ_k³                         (I–MMSE: d H[x0|xσ]/dσ = mmse(σ)/σ³)
    pivot     c   = onset_pivot (continuous data) or powerlaw_pivot (discrete data)
    gated     r̃_k = r_k · g_{c,n}(σ_k),  g_{c,n}(σ) = σⁿ / (σⁿ + cⁿ)
    table     q_k = r̃_k / w(σ_k), normalised to a piecewise-constant density on the bins
    bands     the share of such a density in σ bands (`band_shares`)
"""
from __future__ import annotations

import numpy as np
import torch

_TINY = 1e-300   # stands in for zero before taking logs


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to('cpu', torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _like(value: np.ndarray, like):
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(value)).to(like.device)
    return value


def entropy_rate(sigma, mse):
    """Conditional-entropy rate r = mse / σ³ (paper Eq. 11)."""
    return _like(_np(mse) / _np(sigma) ** 3, mse)


def log_smooth(values, passes: int = 1):
    """`passes` rounds of a [1, 2, 1]/4 filter on log(values) across neighbouring bins.

    The ends are padded by linear extrapolation in log space, so an exact power law (a straight line in
    log–log coordinates on the log-spaced grid) passes through unchanged at every bin, and the two end
    values themselves are kept (the filter only ever moves interior bins). Non-positive
    entries are treated as 1e-300. `passes=0` returns the input values unchanged (as float64).
    """
    v = _np(values)
    if passes < 0:
        raise ValueError(f'passes must be >= 0, got {passes}')
    if passes == 0 or v.size < 3:
        return _like(v.copy(), values)
    y = np.log(np.maximum(v, _TINY))
    for _ in range(int(passes)):
        padded = np.concatenate([[2 * y[0] - y[1]], y, [2 * y[-1] - y[-2]]])
        y = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return _like(np.exp(y), values)


def gate(sigma, c: float, n: float = 3):
    """Low-noise gate g_{c,n}(σ) = σⁿ / (σⁿ + cⁿ) (paper Eq. 17), evaluated as 1 / (1 + (c/σ)ⁿ)."""
    if not c > 0:
        raise ValueError(f'gate pivot c must be > 0, got {c}')
    if not n > 0:
        raise ValueError(f'gate exponent n must be > 0, got {n}')
    return _like(1.0 / (1.0 + (c / _np(sigma)) ** n), sigma)


def onset_pivot(sigma, rate, p: float = 2e-3) -> float:
    """Onset-of-information pivot for continuous endpoints (paper Eq. 18, App. B.4).

    With r̄ = r / max r and σ_0 < … < σ_{K−1} the grid centres, c is the smallest centre σ_k such that
    r̄_j < p for every j ≥ k: scanning from high to low noise, the last point before r̄ first rises to p
    (the paper's "sup" read as this crossing point). Edge cases:
      * even the top bin has r̄ ≥ p (information everywhere): c = σ_{K−1}, the top centre;
      * no usable profile (max r not finite or ≤ 0, so nothing ever crosses): c = σ_0, the lowest centre,
        which leaves the gate as close to the identity as the grid allows.
    Non-finite entries count as "not below p".
    """
    if not 0 < p < 1:
        raise ValueError(f'onset threshold p must lie in (0, 1), got {p}')
    s, r = _np(sigma), _np(rate)
    if s.shape != r.shape or s.ndim != 1 or s.size == 0:
        raise ValueError(f'sigma and rate must be 1-D arrays of one length, got {s.shape} and {r.shape}')
    finite = np.isfinite(r)
    peak = r[finite].max() if finite.any() else np.nan
    if not (np.isfinite(peak) and peak > 0):
        return float(s[0])
    below = finite & (r / peak < p)
    crossed = np.flatnonzero(~below)           # bins where r̄ ≥ p; never empty here (the peak has r̄ = 1)
    k = crossed[-1] + 1                        # first bin of the trailing all-below run
    return float(s[min(k, s.size - 1)])


def _curvature_knee(x: np.ndarray, y: np.ndarray) -> int:
    """Index of maximum curvature κ = |y''| / (1 + y'²)^{3/2} of y(x), interior points only."""
    dy = np.gradient(y, x)
    d2y = np.gradient(dy, x)
    kappa = np.abs(d2y) / (1 + dy ** 2) ** 1.5
    kappa[[0, -1]] = -np.inf
    return int(np.argmax(kappa))


def powerlaw_pivot(sigma, rate, tol: float = 0.5, low_bins: int | None = None, min_run: int | None = None,
                   smooth: int = 1) -> float:
    """Power-law-boundary pivot for discrete endpoints (paper App. B.4).

    On the log–log profile y = log r vs x = log σ (after `smooth` passes of `log_smooth`):
      s_k = dy/dx by finite differences (np.gradient: central inside, one-sided at the ends);
      α   = median of s over the `low_bins` lowest bins (default max(3, K // 8));
      run = the maximal contiguous run of bins from σ_min with |s_k − α| ≤ `tol` (slope units);
      if the run holds at least `min_run` bins (default = low_bins), c = the centre of its last bin,
      otherwise (no stable power-law segment) c = the maximum-curvature knee of y vs x.
    tol = 0.5 tolerates the slope noise of buffer means from a few hundred losses per bin at K = 64 on
    [0.002, 80] and still ends the run within a couple of bins of a break of slope.
    """
    s_np, r_np = _np(sigma), _np(rate)
    if s_np.shape != r_np.shape or s_np.ndim != 1 or s_np.size < 3:
        raise ValueError(f'sigma and rate must be 1-D arrays of one length >= 3, got {s_np.shape} and {r_np.shape}')
    if not tol > 0:
        raise ValueError(f'tol must be > 0, got {tol}')
    num_bins = s_np.size
    low_bins = max(3, num_bins // 8) if low_bins is None else int(low_bins)
    min_run = low_bins if min_run is None else int(min_run)
    if not 2 <= low_bins <= num_bins:
        raise ValueError(f'low_bins must lie in [2, {num_bins}], got {low_bins}')
    if min_run < 1:
        raise ValueError(f'min_run must be >= 1, got {min_run}')
    x = np.log(s_np)
    y = np.log(_np(log_smooth(np.nan_to_num(r_np, nan=_TINY, posinf=1 / _TINY), smooth)))
    slope = np.gradient(y, x)
    alpha = np.median(slope[:low_bins])
    off = np.abs(slope - alpha) > tol
    run = int(np.argmax(off)) if off.any() else num_bins
    if run >= min_run:
        return float(s_np[run - 1])
    return float(s_np[_curvature_knee(x, y)])


def gated_profile(sigma, mse, endpoint: str = 'continuous', gate_n: float = 3, onset_p: float = 2e-3,
                  smooth: int = 0, pivot: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """One refresh from the per-bin mse to the gated rate, as the sampler computes it (numpy float64).

    endpoint: 'continuous' (onset pivot with threshold onset_p) or 'discrete' (power-law pivot).
    smooth:   passes of `log_smooth` on the rate before the pivot and the gate.
    pivot:    use this pivot instead of the endpoint's rule (a replay that holds c fixed).
    Returns (rate r, pivot c, gated rate r̃ = r · g_{c,gate_n}).
    """
    sigma_np = _np(sigma)
    rate = entropy_rate(sigma_np, _np(mse))
    if smooth:
        rate = log_smooth(rate, smooth)
    if pivot is None:
        pivot = onset_pivot(sigma_np, rate, onset_p) if endpoint == 'continuous' else powerlaw_pivot(sigma_np, rate)
    return rate, float(pivot), rate * gate(sigma_np, pivot, gate_n)


def sampler_table(edges, q):
    """Piecewise-constant density proportional to q_k on [edge_k, edge_{k+1}] and its CDF at the edges.

    Returns (density [K], cdf [K+1]) with density = q / Σ_k q_k Δσ_k, cdf[0] = 0 and cdf[K] = 1 exactly.
    Inside a bin the CDF is linear in σ, so inverse-CDF sampling is exact linear interpolation there.
    q must be finite, ≥ 0 and not all zero.
    """
    e, qn = _np(edges), _np(q)
    if e.ndim != 1 or qn.shape != (e.size - 1,):
        raise ValueError(f'edges must be [K+1] and q [K], got {e.shape} and {qn.shape}')
    if not np.all(np.isfinite(qn)) or np.any(qn < 0):
        raise ValueError('table weights q must be finite and non-negative')
    mass = qn * np.diff(e)
    total = mass.sum()
    if not total > 0:
        raise ValueError('table weights q are all zero')
    cdf = np.concatenate([[0.0], np.cumsum(mass) / total])
    cdf[-1] = 1.0
    return _like(qn / total, q), _like(cdf, q)


def band_shares(edges, density, bands) -> np.ndarray:
    """The share of a piecewise-constant density on the bins (flat in σ inside each bin) that lies in each σ
    band: below bands[0], between consecutive bands, and at or above bands[-1] (len(bands) + 1 shares that sum
    to 1; the grid's ends close the outer bands)."""
    e = _np(edges)
    mass = _np(density) * np.diff(e)
    cum = np.interp(np.asarray(bands, dtype=np.float64), e, np.concatenate([[0.0], np.cumsum(mass)]))
    return np.diff(np.concatenate([[0.0], cum, [mass.sum()]])) / mass.sum()
