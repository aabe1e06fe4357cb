"""InfoGrid (infogrid_sigma_steps) against closed-form inverse CDFs."""
import math

import numpy as np
import pytest
import torch

from infonoise import (GaussianMixture, LogNormalSampler, SigmaGrid, infogrid_sigma_steps, profile_from_json,
                       profile_to_json)

LO, HI = 0.002, 80.0


def power_profile(power, grid=SigmaGrid(LO, HI, 64)):
    sigma = grid.sigma.numpy()
    return {'sigma': sigma, 'edges': grid.edges.numpy(), 'rate': sigma ** power, 'gated_rate': sigma ** 0.0}


def check_contract(steps, num_steps, lo=LO, hi=HI):
    assert isinstance(steps, torch.Tensor) and steps.dtype == torch.float64
    assert steps.shape == (num_steps + 1,)
    assert steps[0].item() == hi and steps[-2].item() == lo and steps[-1].item() == 0
    assert bool((steps[:-1].diff() < 0).all())


def geometric(num_steps, lo=LO, hi=HI):
    return np.exp(np.linspace(math.log(hi), math.log(lo), num_steps))


def test_literal_grid_of_rate_sigma_pow_minus_two_is_geometric():
    # σ r(σ) ∝ 1/σ: Eq. 19 gives u ∝ log(σ/σ_min), i.e. a log-uniform grid.
    steps = infogrid_sigma_steps(power_profile(-2.0), 18, LO, HI, measure='literal')
    check_contract(steps, 18)
    np.testing.assert_allclose(steps[:-1].numpy(), geometric(18), rtol=1e-10)


def test_entropic_grid_of_rate_sigma_pow_minus_one_is_geometric():
    steps = infogrid_sigma_steps(power_profile(-1.0), 25, LO, HI, measure='entropic')
    check_contract(steps, 25)
    np.testing.assert_allclose(steps[:-1].numpy(), geometric(25), rtol=1e-10)


def exact_inverse_sigma_pow_minus_two(u, lo=LO, hi=HI):
    """Inverse of u(σ) = (1/σ_min − 1/σ) / (1/σ_min − 1/σ_max): the literal measure of r ∝ σ^-3."""
    return 1 / (1 / lo - u * (1 / lo - 1 / hi))


def test_literal_grid_matches_the_closed_form_inverse_cdf():
    steps = infogrid_sigma_steps(power_profile(-3.0), 32, LO, HI, measure='literal')
    u = 1 - np.arange(32) / 31
    np.testing.assert_allclose(steps[:-1].numpy(), exact_inverse_sigma_pow_minus_two(u), rtol=1e-2)


def test_floor_blends_the_profile_measure_with_log_uniform():
    prof = power_profile(-3.0)
    np.testing.assert_allclose(infogrid_sigma_steps(prof, 12, LO, HI, floor=1.0)[:-1].numpy(), geometric(12),
                               rtol=1e-10)
    steps = infogrid_sigma_steps(prof, 20, LO, HI, measure='literal', floor=0.5)[:-1].numpy()
    # Evaluate the blended CDF M(σ) = ½ U(σ) + ½ L(σ) at the returned points: it must be uniform.
    u_exact = (1 / LO - 1 / steps) / (1 / LO - 1 / HI)
    loguni = np.log(steps / LO) / math.log(HI / LO)
    np.testing.assert_allclose(0.5 * u_exact + 0.5 * loguni, 1 - np.arange(20) / 19, atol=5e-3)


def test_gated_flag_reads_the_gated_rate():
    prof = power_profile(-3.0)
    prof['gated_rate'] = prof['sigma'] ** -1.0
    steps = infogrid_sigma_steps(prof, 10, LO, HI, measure='entropic', gated=True)
    np.testing.assert_allclose(steps[:-1].numpy(), geometric(10), rtol=1e-10)


def test_subrange_and_extension_beyond_the_profile():
    prof = power_profile(-2.0)
    inner = infogrid_sigma_steps(prof, 10, 0.01, 10.0)
    check_contract(inner, 10, 0.01, 10.0)
    np.testing.assert_allclose(inner[:-1].numpy(), geometric(10, 0.01, 10.0), rtol=1e-8)
    narrow = power_profile(-2.0, SigmaGrid(0.01, 10.0, 32))
    wide = infogrid_sigma_steps(narrow, 30, LO, HI)
    check_contract(wide, 30)


def test_gaussian_mixture_profile_against_numerical_integration():
    # A 256-bin tabulation of the exact Gaussian-mixture rate vs the inverse of a fine quadrature.
    gm = GaussianMixture(10, m=1.0, s=0.5, p=0.8)
    grid = SigmaGrid(LO, HI, 256)
    prof = {'edges': grid.edges.numpy(), 'rate': gm.rate(grid.sigma.numpy())}
    fine = np.exp(np.linspace(math.log(LO), math.log(HI), 40001))
    dens = fine * gm.rate(fine)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))])
    cdf /= cdf[-1]
    steps = infogrid_sigma_steps(prof, 16, LO, HI, measure='literal')[:-1].numpy()
    reference = np.interp(1 - np.arange(16) / 15, cdf, fine)
    np.testing.assert_allclose(steps, reference, rtol=2e-3)


def test_json_round_trip_gives_the_same_grid():
    prof = power_profile(-2.5)
    back = profile_from_json(profile_to_json(prof))
    assert torch.equal(infogrid_sigma_steps(prof, 18, LO, HI, 'entropic', 0.3),
                       infogrid_sigma_steps(back, 18, LO, HI, 'entropic', 0.3))


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_steps=1), 'num_steps'), (dict(num_steps=2.5), 'num_steps'),
    (dict(sigma_min=0.0), 'sigma_min'), (dict(sigma_max=LO), 'sigma_max'),
    (dict(measure='karras'), 'measure'), (dict(floor=1.5), 'floor'), (dict(floor=-0.1), 'floor'),
])
def test_bad_arguments_raise(kwargs, match):
    args = dict(num_steps=18, sigma_min=LO, sigma_max=HI)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        infogrid_sigma_steps(power_profile(-2.0), **args)


def test_profiles_without_an_estimate_are_refused():
    with pytest.raises(ValueError, match='rate'):
        infogrid_sigma_steps(LogNormalSampler().profile(), 18, LO, HI)
    with pytest.raises(ValueError, match='edges'):
        infogrid_sigma_steps({'rate': np.ones(4)}, 18, LO, HI)
    zero = power_profile(-2.0)
    zero['rate'] = np.zeros(64)
    with pytest.raises(ValueError, match='mass'):
        infogrid_sigma_steps(zero, 18, LO, HI)
    check_contract(infogrid_sigma_steps(zero, 18, LO, HI, floor=1.0), 18)
