"""The further InfoGrid constructions (tempered, solver-aware, calibrated) on closed forms and exact denoisers."""
import math

import numpy as np
import pytest
import torch

from infonoise import GaussianMixture, SigmaGrid, TwoPoint, infogrid_sigma_steps
from infonoise.infogrid import (gaussian_surrogate, loguniform_sigma_steps, solver_aware_sigma_steps,
                                surrogate_step_error, tempered_sigma_steps)
from scripts import bench_highdim as bench
from training import sampler as samplers
from training.grid_calibration import NamedGrids, calibrate_tempered_grid, reference_samples, trajectory_error

LO, HI = 0.002, 80.0

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def gm_profile(d, sigma_max=HI, bins=128, p=0.8):
    gm = GaussianMixture(d, m=1.0, s=0.5, p=p)
    return gm, bench.oracle_profile(gm.rate, LO, sigma_max, bins)


def power_profile(power, bins=64):
    grid = SigmaGrid(LO, HI, bins)
    sigma = grid.sigma.numpy()
    return {'sigma': sigma, 'edges': grid.edges.numpy(), 'rate': sigma ** power}


def check_contract(steps, num_steps, lo=LO, hi=HI):
    assert isinstance(steps, torch.Tensor) and steps.dtype == torch.float64
    assert steps.shape == (num_steps + 1,)
    assert steps[0].item() == hi and steps[-2].item() == lo and steps[-1].item() == 0
    assert bool((steps[:-1].diff() < 0).all())


def rho_grid(num_steps, rho, lo=LO, hi=HI):
    """EDM's Eq. 5 written out: (σ_max^(1/ρ) + i/(N−1) (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ."""
    i = np.arange(num_steps) / (num_steps - 1)
    return (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


# ------------------------------------------------------------------------------------------------
# Layout of every construction.

@pytest.mark.parametrize('num_steps', [2, 3, 7, 30])
@pytest.mark.parametrize('profile_name', ['gm10', 'gm1000', 'power'])
def test_grid_contract(num_steps, profile_name):
    prof = {'gm10': lambda: gm_profile(10)[1], 'gm1000': lambda: gm_profile(1000)[1],
            'power': lambda: power_profile(-2.7)}[profile_name]()
    check_contract(loguniform_sigma_steps(num_steps, LO, HI), num_steps)
    for gamma in (0.0, 0.5, 2.0):
        check_contract(tempered_sigma_steps(prof, num_steps, LO, HI, gamma=gamma), num_steps)
    check_contract(tempered_sigma_steps(prof, num_steps, LO, HI, gamma=0.5, rho=math.inf, measure='entropic'),
                   num_steps)
    for solver in ('heun', 'euler'):
        check_contract(solver_aware_sigma_steps(prof, num_steps, LO, HI, solver=solver), num_steps)


# ------------------------------------------------------------------------------------------------
# Tempered grid: known grids at its parameter limits, and the tilt by hand.

@pytest.mark.parametrize('rho', [3.0, 7.0, 12.0])
def test_tempered_gamma_zero_is_edm_rho_grid(rho):
    _, prof = gm_profile(100)
    steps = tempered_sigma_steps(prof, 18, LO, HI, gamma=0.0, rho=rho)
    np.testing.assert_allclose(steps[:-1].numpy(), rho_grid(18, rho), rtol=1e-12)
    np.testing.assert_allclose(steps.numpy(), samplers.edm_sigma_steps(18, LO, HI, rho).numpy(), rtol=1e-12)


def test_tempered_infinite_rho_limits_are_loguniform_and_eq19():
    _, prof = gm_profile(100)
    geometric = np.exp(np.linspace(math.log(HI), math.log(LO), 12))
    np.testing.assert_allclose(tempered_sigma_steps(prof, 12, LO, HI, gamma=0.0, rho=math.inf)[:-1].numpy(),
                               geometric, rtol=1e-12)
    np.testing.assert_allclose(loguniform_sigma_steps(12, LO, HI)[:-1].numpy(), geometric, rtol=1e-12)
    # γ = 1, ρ = ∞ is Eq. 19 with the density constant in log σ inside each bin, i.e. infogrid_sigma_steps.
    for measure in ('literal', 'entropic'):
        np.testing.assert_allclose(
            tempered_sigma_steps(prof, 16, LO, HI, gamma=1.0, rho=math.inf, measure=measure).numpy(),
            infogrid_sigma_steps(prof, 16, LO, HI, measure=measure).numpy(), rtol=1e-10)


def test_tempered_tilt_by_hand():
    """Literal density per log σ is ℓ on [σ_min, 1) and 4ℓ on [1, σ_max]; γ = ½ weights them ½ : 1."""
    edges = np.exp(np.linspace(math.log(LO), math.log(HI), 65))
    edges[np.argmin(abs(np.log(edges)))] = 1.0
    width = np.diff(np.log(edges))
    per_log = np.where(edges[:-1] < 1.0, 1.0, 4.0)
    rate = per_log * width * 2 / (edges[1:] ** 2 - edges[:-1] ** 2)      # literal bin mass / width = per_log
    prof = {'edges': edges, 'rate': rate}
    n = 9
    steps = tempered_sigma_steps(prof, n, LO, HI, gamma=0.5, rho=math.inf)[:-1].numpy()
    low, high = -math.log(LO), math.log(HI)                                # lengths in log σ of both halves
    total = 0.5 * low + high
    u = 1 - np.arange(n) / (n - 1)
    expected = np.where(u * total < 0.5 * low, LO * np.exp(u * total / 0.5), np.exp((u * total - 0.5 * low)))
    np.testing.assert_allclose(steps, expected, rtol=1e-10)


# ------------------------------------------------------------------------------------------------
# Solver-aware grid: the Gaussian surrogate, its step-error model, and error equidistribution.

def test_surrogate_fits_a_gaussian_spectrum():
    lambdas, weights = np.array([0.01, 1.0]), np.array([0.7, 0.3])
    grid = SigmaGrid(LO, HI, 64)
    sigma = grid.sigma.numpy()
    mmse = (weights * lambdas * sigma[:, None] ** 2 / (lambdas + sigma[:, None] ** 2)).sum(1)
    lam_fit, w_fit = gaussian_surrogate({'edges': grid.edges.numpy(), 'sigma': sigma, 'rate': mmse / sigma ** 3})
    fitted = (w_fit * lam_fit / (lam_fit + sigma[:, None] ** 2)).sum(1)
    np.testing.assert_allclose(fitted, mmse / sigma ** 2, rtol=0.02)
    assert np.all(w_fit >= 0)


def test_surrogate_of_discrete_data_follows_the_decreasing_envelope():
    """Two-point law ±1 (d = 16): σ r = mmse/σ² rises from 0 below σ ≈ 0.8, which no Gaussian can follow; the
    fit matches the envelope max_{σ' >= σ} σ' r(σ') and the grid spends no level in the snapped region."""
    law = TwoPoint(1.0, 0.5, 16)
    grid = SigmaGrid(LO, HI, 64)
    sigma = grid.sigma.numpy()
    prof = {'edges': grid.edges.numpy(), 'sigma': sigma, 'rate': law.rate(sigma)}
    envelope = np.maximum.accumulate((sigma * prof['rate'])[::-1])[::-1]
    lam, w = gaussian_surrogate(prof)
    ratio = (w * lam / (lam + sigma[:, None] ** 2)).sum(1) / envelope
    assert 0.7 < ratio.min() and ratio.max() < 1.3
    assert solver_aware_sigma_steps(prof, 10, LO, HI)[-3].item() > 0.3     # the level before σ_min


@pytest.mark.parametrize('solver', ['heun', 'euler'])
def test_step_error_model_matches_the_sampler_on_a_gaussian(solver):
    """One solver step σ_a -> σ_b with the exact denoiser of N(0, diag(λ)), then EDM's closing Euler step."""
    lambdas, weights = np.array([0.04, 0.5, 3.0]), np.array([0.2, 0.5, 0.3])
    lam = torch.tensor(lambdas)

    def net(x, sigma, labels=None):
        return lam / (lam + sigma ** 2) * x
    a, b = 2.5, 0.4
    x_a = torch.ones(1, 3, dtype=torch.float64)
    out = samplers.heun_sampler(net, x_a / a, torch.tensor([a, b, 0.0], dtype=torch.float64), solver=solver)
    after_step = out / (lam / (lam + b ** 2))                 # undo the closing Euler step's factor λ/(λ + σ_b²)
    delta = after_step[0] / torch.sqrt((lam + b ** 2) / (lam + a ** 2)) - 1
    expected = float((torch.tensor(weights) * lam * delta ** 2).sum())
    assert expected > 0
    assert surrogate_step_error(lambdas, weights, a, b, solver) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize('num_steps', [3, 6, 12, 40])
@pytest.mark.parametrize('solver', ['heun', 'euler'])
def test_solver_aware_grid_equalises_the_predicted_step_error(num_steps, solver):
    _, prof = gm_profile(100)
    surrogate = gaussian_surrogate(prof, LO, HI)
    steps = solver_aware_sigma_steps(prof, num_steps, LO, HI, solver=solver, surrogate=surrogate)[:-1].numpy()
    errors = surrogate_step_error(*surrogate, steps[:-1], steps[1:], solver)
    assert errors.max() / errors.min() - 1 < 1e-3
    # ... and it beats EDM's grid on its own criterion (the largest step error).
    edm = samplers.edm_sigma_steps(num_steps, LO, HI)[:-1].numpy()
    assert errors.max() < surrogate_step_error(*surrogate, edm[:-1], edm[1:], solver).max()


def test_solver_aware_grid_of_one_gaussian_concentrates_near_its_scale():
    """N(0, λ I), λ = 0.25: Heun is exact where D is ~linear in σ (σ ≫ √λ: x ∝ σ; σ ≪ √λ: x ~ const), so the
    surrogate finds √λ and the interior levels crowd within a decade of it; EDM's grid spreads them out."""
    grid = SigmaGrid(LO, HI, 64)
    sigma = grid.sigma.numpy()
    prof = {'edges': grid.edges.numpy(), 'rate': 0.25 * sigma ** 2 / (0.25 + sigma ** 2) / sigma ** 3}
    lam, w = gaussian_surrogate(prof, LO, HI)
    assert math.exp(np.sum(w * 0.5 * np.log(lam)) / w.sum()) == pytest.approx(0.5, rel=0.1)

    def inside(steps):
        levels = steps[1:-2].numpy()
        return np.mean((levels > 0.05) & (levels < 5.0))
    assert inside(solver_aware_sigma_steps(prof, 10, LO, HI)) >= 0.75
    assert inside(solver_aware_sigma_steps(prof, 10, LO, HI)) >= inside(samplers.edm_sigma_steps(10, LO, HI)) + 0.25


# ------------------------------------------------------------------------------------------------
# Calibration (training.grid_calibration) with the exact Gaussian-mixture denoiser.

def _reduced_latents(gm, n, sigma_max, seed):
    return bench.gm_reduced_start(gm, n, sigma_max, torch.Generator().manual_seed(seed)) / sigma_max


def test_trajectory_error_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert trajectory_error(x, x + torch.tensor([[0.0, 2.0], [0.0, 0.0]])) == pytest.approx(1.0)


@pytest.mark.parametrize('num_steps,d', [(5, 100), (8, 1000)])
def test_calibrated_grid_beats_edm_on_fresh_latents(num_steps, d):
    gm, prof = gm_profile(d, sigma_max=10 * math.sqrt(d))
    sigma_max = 10 * gm.mu_norm
    net = bench.ReducedGMNet(gm)
    # 256 calibration latents: the error is dominated by rare mode flips, which 64 latents can miss
    # (then the chosen grid overfits; docs/BENCHMARKS.md).
    result = calibrate_tempered_grid(net, prof, num_steps, _reduced_latents(gm, 256, sigma_max, 1), sigma_min=LO,
                                     sigma_max=sigma_max, ref_steps=512)
    check_contract(result.sigma_steps, num_steps, hi=sigma_max)
    assert result.error <= result.edm_error
    assert result.candidates[0] == {'gamma': 0.0, 'rho': 7.0, 'error': result.edm_error}
    np.testing.assert_allclose(result.sigma_steps.numpy(), tempered_sigma_steps(
        prof, num_steps, LO, sigma_max, gamma=result.gamma, rho=result.rho).numpy(), rtol=1e-12)
    # Held-out latents: the calibrated grid is no worse than EDM's ρ = 7 at the NFE it was calibrated for.
    fresh = _reduced_latents(gm, 512, sigma_max, 2)
    ref = reference_samples(net, fresh, sigma_min=LO, sigma_max=sigma_max, ref_steps=512)
    err = {name: trajectory_error(samplers.heun_sampler(net, fresh, grid), ref) for name, grid in
           (('calibrated', result.sigma_steps), ('edm', samplers.edm_sigma_steps(num_steps, LO, sigma_max)))}
    assert err['calibrated'] <= err['edm']


def test_calibration_rejects_bad_arguments():
    gm, prof = gm_profile(10)
    lat = _reduced_latents(gm, 4, HI, 0)
    with pytest.raises(ValueError, match='solver'):
        calibrate_tempered_grid(bench.ReducedGMNet(gm), prof, 5, lat, solver='rk4')
    with pytest.raises(ValueError, match='num_steps'):
        calibrate_tempered_grid(bench.ReducedGMNet(gm), prof, 1, lat)


def test_named_grids_build_each_row_once_and_calibrate_per_solver_and_n():
    gm, prof = gm_profile(20, sigma_max=10 * math.sqrt(20))
    sigma_max = 10 * gm.mu_norm
    net, lat = bench.ReducedGMNet(gm), _reduced_latents(gm, 8, sigma_max, 3)
    seen = []
    grids = NamedGrids(net, prof, LO, sigma_max, lat, calib_ref_steps=64, on_calibrated=lambda *a: seen.append(a[:2]))
    # Every name but the calibrated one is the library's grid of that name with the variant's settings.
    assert torch.equal(grids('edm', 6), samplers.edm_sigma_steps(6, LO, sigma_max))
    assert torch.equal(grids('infogrid-blend', 6), infogrid_sigma_steps(prof, 6, LO, sigma_max, floor=0.5))
    assert torch.equal(grids('infogrid-solver', 6, 'euler'),
                       solver_aware_sigma_steps(prof, 6, LO, sigma_max, solver='euler'))
    # Calibrated: one calibration per (solver, N), against the shared reference run of the calibration latents.
    first = grids('infogrid-calibrated', 5)
    assert grids('infogrid-calibrated', 5) is first and seen == [('heun', 5)]
    grids('infogrid-calibrated', 5, 'euler')
    assert seen == [('heun', 5), ('euler', 5)] and set(grids.calibrations) == {'heun', 'euler'}
    direct = calibrate_tempered_grid(net, prof, 5, lat, sigma_min=LO, sigma_max=sigma_max, ref_steps=64)
    assert torch.equal(first, direct.sigma_steps)
    with pytest.raises(ValueError, match='calibration latents'):
        NamedGrids(net, prof, LO, sigma_max)('infogrid-calibrated', 5)


# ------------------------------------------------------------------------------------------------
# N* vs d on the exact Gaussian mixture (scripts/bench_highdim.py's criterion).

LADDER = (8, 12, 16, 24, 32, 48, 64, 96)


def n_star(name, d):
    gm, _ = gm_profile(d)
    sigma_max = 10 * gm.mu_norm
    prof = bench.oracle_profile(gm.rate, bench.SIGMA_MIN, sigma_max, 128)
    for n in LADDER:
        grid = bench.make_grid(name, n, sigma_max, d, gm.mu_norm, prof, 3.0, 1.0)
        if bench.gm_passes(bench.gm_metrics(gm, grid, sigma_max)):
            return n
    return math.inf


def test_new_constructions_need_no_more_steps_than_edm_on_the_gaussian_mixture():
    """N* (bench_highdim's criterion: mode weight and within-mode variance both recovered) vs d: the tempered and
    solver-aware grids reach it with at most EDM's step count, and stay flat in d (≤ 2× from d = 10 to 1000).
    About 3 s on the reduced Gaussian-mixture dynamics, so it runs with the default suite."""
    found = {(g, d): n_star(g, d) for g in ('edm', 'infogrid-tempered', 'infogrid-solver') for d in (10, 1000)}
    for d in (10, 1000):
        assert found['edm', d] < math.inf
        assert found['infogrid-tempered', d] <= found['edm', d]
        assert found['infogrid-solver', d] <= found['edm', d]
    for g in ('infogrid-tempered', 'infogrid-solver'):
        assert found[g, 1000] <= 2 * found[g, 10]


def test_sigma_steps_by_name_is_each_construction():
    import infonoise
    profile = power_profile(-2.0)
    cases = {
        ('edm', ()): samplers.edm_sigma_steps(9, LO, HI, 7),
        ('loguniform', ()): loguniform_sigma_steps(9, LO, HI),
        ('eq19', (('measure', 'entropic'), ('floor', 0.3))): infogrid_sigma_steps(profile, 9, LO, HI, 'entropic', 0.3),
        ('tempered', (('gamma', 0.25), ('rho', 5.0))): tempered_sigma_steps(profile, 9, LO, HI, gamma=0.25, rho=5.0),
        ('solver-aware', (('solver', 'euler'),)): solver_aware_sigma_steps(profile, 9, LO, HI, solver='euler'),
    }
    for (name, kwargs), expected in cases.items():
        got = infonoise.sigma_steps(name, 9, LO, HI, profile, **dict(kwargs))
        assert got.dtype == torch.float64 and got.shape == (10,) and got[-1] == 0
        assert torch.equal(got, expected), name
    rounded = infonoise.sigma_steps('eq19', 9, LO, HI, profile, round_sigma=lambda s: s.float())
    assert torch.equal(rounded[:-1], infogrid_sigma_steps(profile, 9, LO, HI)[:-1].float().double())
    with pytest.raises(ValueError, match='unknown σ grid'):
        infonoise.sigma_steps('ddim', 9, LO, HI, profile)
    with pytest.raises(ValueError, match='needs an InfoNoise profile'):
        infonoise.sigma_steps('tempered', 9, LO, HI)
