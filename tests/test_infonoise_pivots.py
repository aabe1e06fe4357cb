"""Pivot rules, gate, smoothing and table of infonoise.profile against closed-form profiles."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq

import infonoise
from infonoise import (SigmaGrid, entropy_rate, gate, log_smooth, onset_pivot, powerlaw_pivot,
                       sampler_table)

GRID = SigmaGrid(0.002, 80.0, 64)
SIGMA = GRID.sigma.numpy()
LOG_W = GRID.log_width


def gaussian_rate(sigma, d=10, s=0.5):
    """mmse(σ)/σ³ of N(0, s² I_d): d s² / (σ (s² + σ²))."""
    return d * s ** 2 / (sigma * (s ** 2 + sigma ** 2))


# ----------------------------------------------------------------------------------------- entropy rate

def test_entropy_rate_is_mse_over_sigma_cubed_for_arrays_and_tensors():
    mse = np.linspace(0.1, 2.0, SIGMA.size)
    np.testing.assert_allclose(entropy_rate(SIGMA, mse), mse / SIGMA ** 3, rtol=1e-15)
    out = entropy_rate(GRID.sigma, torch.from_numpy(mse))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), mse / SIGMA ** 3, rtol=1e-15)


# ----------------------------------------------------------------------------------------- onset rule

def test_onset_pivot_on_gaussian_profile_is_first_centre_above_the_analytic_crossing():
    r = gaussian_rate(SIGMA)
    p = 2e-3
    peak = r.max()
    crossing = brentq(lambda s: gaussian_rate(s) / peak - p, SIGMA[0], SIGMA[-1])
    expected = SIGMA[SIGMA > crossing].min()
    assert onset_pivot(SIGMA, r, p) == pytest.approx(expected, rel=1e-12)
    # Tensors work too, and the threshold moves the pivot the right way.
    assert onset_pivot(GRID.sigma, torch.from_numpy(r), p) == pytest.approx(expected, rel=1e-12)
    assert onset_pivot(SIGMA, r, 1e-4) > onset_pivot(SIGMA, r, 1e-1)


def test_onset_pivot_takes_the_first_crossing_from_high_noise_not_a_later_one():
    # A high-noise bump that rises above p, then a dip below p, then the usual low-noise rise.
    bump = lambda s: 0.01 * gaussian_rate(SIGMA[0]) * np.exp(-(np.log(s) - np.log(20.0)) ** 2 / (2 * 0.2 ** 2))
    profile = lambda s: gaussian_rate(s) + bump(s)
    r = profile(SIGMA)
    r_bar = r / r.max()
    assert r_bar[(SIGMA > 4) & (SIGMA < 12)].min() < 2e-3 < r_bar[np.argmin(np.abs(SIGMA - 20))]
    upper = brentq(lambda s: profile(s) / r.max() - 2e-3, 20.0, 80.0)
    assert onset_pivot(SIGMA, r) == pytest.approx(SIGMA[SIGMA > upper].min(), rel=1e-12)


def test_onset_pivot_edge_cases():
    # Information everywhere (even the top bin has r̄ >= p): the top centre.
    assert onset_pivot(SIGMA, np.ones_like(SIGMA)) == SIGMA[-1]
    # Nothing usable: the lowest centre (gate as close to identity as the grid allows).
    assert onset_pivot(SIGMA, np.zeros_like(SIGMA)) == SIGMA[0]
    assert onset_pivot(SIGMA, np.full_like(SIGMA, np.nan)) == SIGMA[0]
    # A non-finite entry at high noise counts as "not below p".
    r = gaussian_rate(SIGMA)
    r[-3] = np.nan
    assert onset_pivot(SIGMA, r) == SIGMA[-2]
    for p in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match='p'):
            onset_pivot(SIGMA, gaussian_rate(SIGMA), p)
    with pytest.raises(ValueError):
        onset_pivot(SIGMA, SIGMA[:-1])


# ----------------------------------------------------------------------------------------- gate

def test_gate_formula_limits_and_edm_relation():
    c = 0.7
    g = gate(SIGMA, c, 3)
    np.testing.assert_allclose(g, SIGMA ** 3 / (SIGMA ** 3 + c ** 3), rtol=1e-12)
    assert gate(np.array([c]), c, 3)[0] == pytest.approx(0.5)
    assert np.all(np.diff(g) > 0) and g[0] < 1e-7 and g[-1] > 1 - 1e-5
    # Paper App. B.3: g_{σ_data, 2}(σ) = σ² / (σ² + σ_data²) = 1 / (σ_data² w_EDM(σ)).
    sd = 0.5
    np.testing.assert_allclose(gate(SIGMA, sd, 2), 1 / (sd ** 2 * infonoise.edm_weight(SIGMA, sd)), rtol=1e-12)
    t = gate(GRID.sigma, c, 3)
    assert isinstance(t, torch.Tensor) and torch.allclose(t, torch.from_numpy(g))
    with pytest.raises(ValueError, match='pivot'):
        gate(SIGMA, 0.0, 3)
    with pytest.raises(ValueError, match='exponent'):
        gate(SIGMA, 1.0, 0)


# ----------------------------------------------------------------------------------------- smoothing

def test_log_smooth_keeps_power_laws_and_damps_noise():
    pure = 3.0 * SIGMA ** -1.7
    np.testing.assert_allclose(log_smooth(pure, 3), pure, rtol=1e-10)
    np.testing.assert_array_equal(log_smooth(pure, 0), pure)
    rng = np.random.default_rng(0)
    noisy = pure * np.exp(0.1 * rng.standard_normal(SIGMA.size))
    resid = lambda v: np.std(np.log(v / pure))
    assert resid(log_smooth(noisy, 2)) < 0.7 * resid(noisy)
    # The single-pass filter in the interior is exactly [1, 2, 1] / 4 on the logs.
    y = np.log(noisy)
    np.testing.assert_allclose(np.log(log_smooth(noisy, 1))[1:-1], 0.25 * y[:-2] + 0.5 * y[1:-1] + 0.25 * y[2:])
    with pytest.raises(ValueError):
        log_smooth(pure, -1)


# ----------------------------------------------------------------------------------------- power-law rule

def broken_power_law(sigma, c0, alpha, beta, sharpness=30.0):
    """σ^α below c0 and ∝ σ^β above it, joined smoothly over ~1/sharpness in log σ."""
    return sigma ** alpha * (1 + (sigma / c0) ** sharpness) ** ((beta - alpha) / sharpness)


@pytest.mark.parametrize('c0, alpha, beta', [(0.05, -1.0, -4.0), (0.5, 0.5, -3.0), (3.0, -2.0, 1.0)])
def test_powerlaw_pivot_recovers_the_break_of_a_broken_power_law(c0, alpha, beta):
    c = powerlaw_pivot(SIGMA, broken_power_law(SIGMA, c0, alpha, beta))
    assert abs(math.log(c / c0)) <= 2 * LOG_W, (c, c0)
    assert c <= c0 * math.exp(LOG_W)       # the run ends at or before the break, never well after it


def test_powerlaw_pivot_recovers_the_departure_point_of_a_power_law_plus_bump():
    alpha, amp, x_b, width, tol = -1.0, 30.0, math.log(2.0), 0.5, 0.5
    bump = lambda x: amp * np.exp(-(x - x_b) ** 2 / (2 * width ** 2))
    r = SIGMA ** alpha * (1 + bump(np.log(SIGMA)))
    # Truth: where the exact slope d log r / d log σ first leaves α by more than tol.
    x = np.linspace(math.log(0.002), math.log(80.0), 200001)
    slope_dev = bump(x) * (-(x - x_b) / width ** 2) / (1 + bump(x))
    departure = math.exp(x[np.argmax(np.abs(slope_dev) > tol)])
    c = powerlaw_pivot(SIGMA, r, tol=tol)
    assert abs(math.log(c / departure)) <= 2 * LOG_W, (c, departure)


def test_powerlaw_pivot_is_robust_to_estimator_noise():
    rng = np.random.default_rng(1)
    c0 = 0.3
    hits = []
    for _ in range(20):
        r = broken_power_law(SIGMA, c0, -1.0, -4.0) * np.exp(0.03 * rng.standard_normal(SIGMA.size))
        hits.append(abs(math.log(powerlaw_pivot(SIGMA, r, smooth=1) / c0)) <= 3 * LOG_W)
    assert np.mean(hits) >= 0.9


def test_powerlaw_pivot_falls_back_to_the_curvature_knee():
    # A parabola in log–log coordinates bends everywhere: no slope-stable run from σ_min, so the pivot
    # is the maximum-curvature point, its vertex.
    x = np.log(SIGMA)
    x_k = math.log(0.7)
    r = np.exp(-(x - x_k) ** 2)
    c = powerlaw_pivot(SIGMA, r)
    assert abs(math.log(c / 0.7)) <= LOG_W
    # With a tolerance wider than the whole slope range the run spans the grid instead.
    assert powerlaw_pivot(SIGMA, r, tol=100.0) == SIGMA[-1]


def test_powerlaw_pivot_pure_power_law_runs_to_the_top_and_validates_input():
    assert powerlaw_pivot(SIGMA, SIGMA ** -1.3) == SIGMA[-1]
    with pytest.raises(ValueError, match='tol'):
        powerlaw_pivot(SIGMA, SIGMA ** -1.3, tol=0)
    with pytest.raises(ValueError, match='low_bins'):
        powerlaw_pivot(SIGMA, SIGMA ** -1.3, low_bins=1)
    with pytest.raises(ValueError):
        powerlaw_pivot(SIGMA[:2], SIGMA[:2])


def test_powerlaw_pivot_on_curie_weiss_profile_with_a_power_law_floor():
    # Exact Curie–Weiss entropy rate (spins ±1) plus the σ^-1 floor a learned model leaves at low noise.
    # Truth: where the slope of log r_total, computed from the Curie–Weiss rate on a 4x finer grid,
    # first leaves the floor's slope by more than tol: share · (s_CW − α) with share = r_CW / r_total.
    # The Curie–Weiss rise is very steep (slope 10–80), so the smoothing pass and the central difference
    # each see it one bin early: allow three bins.
    alpha, tol = -1.0, 0.5
    grid, fine = SigmaGrid(0.02, 20.0, 48), SigmaGrid(0.02, 20.0, 144)
    cw = infonoise.CurieWeiss(10)
    amp = 1e-3 * cw.rate(1.0, num_samples=512)
    total = lambda s, r_cw: r_cw + amp * s ** alpha

    s_fine = fine.sigma.numpy()
    r_fine = cw.rate(s_fine, num_samples=512)
    positive = r_fine > 0
    slope_cw = np.zeros_like(s_fine)
    slope_cw[positive] = np.gradient(np.log(r_fine[positive]), np.log(s_fine[positive]))
    deviation = r_fine / total(s_fine, r_fine) * (slope_cw - alpha)
    departure = s_fine[np.argmax(np.abs(deviation) > tol)]

    sigma = grid.sigma.numpy()
    r_cw = cw.rate(sigma, num_samples=512)
    c = powerlaw_pivot(sigma, total(sigma, r_cw), tol=tol)
    assert abs(math.log(c / departure)) <= 3 * grid.log_width, (c, departure)
    assert c < sigma[np.argmax(r_cw)]


# ----------------------------------------------------------------------------------------- table

def test_sampler_table_normalises_with_bin_widths_and_has_linear_cdf():
    edges = GRID.edges.numpy()
    q = np.abs(np.sin(np.arange(64))) + 0.1
    q[10:13] = 0
    density, cdf = sampler_table(edges, q)
    widths = np.diff(edges)
    assert np.sum(density * widths) == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(density / q[q > 0].max(), q / q[q > 0].max() / np.sum(q * widths), rtol=1e-12)
    assert cdf[0] == 0 and cdf[-1] == 1 and np.all(np.diff(cdf) >= 0)
    np.testing.assert_allclose(np.diff(cdf), density * widths, atol=1e-15)
    d_t, c_t = sampler_table(GRID.edges, torch.from_numpy(q))
    assert torch.equal(c_t, torch.from_numpy(cdf))
    for bad in (np.zeros(64), -q, np.full(64, np.nan)):
        with pytest.raises(ValueError):
            sampler_table(edges, bad)
