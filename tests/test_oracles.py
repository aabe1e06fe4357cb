"""Exact Bayes denoisers (infonoise/oracles.py) against closed forms, brute force and Monte Carlo."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from infonoise.oracles import (
    CurieWeiss, CurieWeissExact, EmpiricalBayes, GaussianMixture, TwoPoint, binary_mmse,
    curie_weiss_magnetization)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _all_spins(d):
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)


def _enumerated_posterior_mean(states, log_prior, x, sigma):
    """E[s | x] by summing over every state: log w(s) = log P(s) - ||x - s||^2 / (2 sigma^2)."""
    dist = (x[:, None, :] - states[None, :, :]).square().sum(-1)
    w = torch.softmax(log_prior[None, :] - dist / (2.0 * sigma ** 2), dim=1)
    return w @ states


# ---------------------------------------------------------------------------------------------------
# binary_mmse and the Gaussian mixture.

@pytest.mark.parametrize('p', [0.5, 0.8, 0.03])
def test_binary_mmse_matches_adaptive_quadrature(p):
    h = 0.5 * math.log(p / (1 - p))
    for lam in [1e-4, 0.3, 1.0, 4.0, 20.0, 60.0]:
        root = math.sqrt(lam)

        def f(xi):
            return math.exp(-xi * xi / 2) / math.sqrt(2 * math.pi) * (
                p * math.tanh(h + lam + root * xi) - (1 - p) * math.tanh(h - lam + root * xi))
        val, _ = integrate.quad(f, -40, 40, points=[-(h + lam) / root, (lam - h) / root],
                                limit=1000, epsabs=1e-14, epsrel=1e-13)
        assert binary_mmse(lam, p) == pytest.approx(1 - val, abs=1e-9)
    assert binary_mmse(0.0, p) == pytest.approx(1 - (2 * p - 1) ** 2, abs=1e-12)   # prior variance of c


GOLDEN = {
    10: ([0.1, 0.5, 2.0, math.sqrt(10), 3 * math.sqrt(10)],
         [0.09615385, 1.25002383, 3.58806317, 5.59535856, 8.40848528]),
    100: ([0.1, 0.5, 2.0, 10.0, 30.0],
          [0.96153846, 12.5, 23.52954604, 57.46312907, 84.43211003]),
}


@pytest.mark.parametrize('d', [10, 100])
def test_gaussian_mixture_mmse_golden(d):
    gm = GaussianMixture(d, m=1.0, s=0.5, p=0.8)
    sigmas, values = GOLDEN[d]
    for sigma, value in zip(sigmas, values):
        assert gm.mmse(sigma) == pytest.approx(value, rel=1e-6)
    vec = gm.mmse(np.array(sigmas))
    assert isinstance(vec, np.ndarray) and np.allclose(vec, values, rtol=1e-6)
    ten = gm.rate(torch.tensor(sigmas, dtype=torch.float64))
    assert torch.allclose(ten, torch.tensor(values, dtype=torch.float64) / torch.tensor(sigmas) ** 3, rtol=1e-6)


def test_gaussian_mixture_denoiser_equals_full_posterior():
    """Independent derivation: x0 | x, c is Gaussian; P(c | x) from full-d Gaussian likelihoods."""
    d, m, s, p = 7, 0.6, 0.8, 0.3
    gm = GaussianMixture(d, m=m, s=s, p=p)
    x = 2.0 * torch.randn(64, d, dtype=torch.float64, generator=_gen(1))
    sigma = torch.exp(torch.linspace(-3, 2, 64, dtype=torch.float64))
    var = (s ** 2 + sigma ** 2)[:, None]
    mu = torch.full((d,), m, dtype=torch.float64)
    log_plus = math.log(p) - (x - mu).square().sum(1, keepdim=True) / (2 * var)
    log_minus = math.log(1 - p) - (x + mu).square().sum(1, keepdim=True) / (2 * var)
    pi_plus = torch.sigmoid(log_plus - log_minus)
    mean_plus = (s ** 2 * x + sigma[:, None] ** 2 * mu) / var
    mean_minus = (s ** 2 * x - sigma[:, None] ** 2 * mu) / var
    expected = pi_plus * mean_plus + (1 - pi_plus) * mean_minus
    out = gm.denoise(x, sigma)
    assert out.dtype == torch.float64
    assert torch.allclose(out, expected, atol=1e-12, rtol=1e-12)
    assert torch.allclose(gm.denoise(x, sigma[:, None]), expected, atol=1e-12)
    # The reduced form is the mu_hat component and D_perp is the linear shrinkage.
    mu_hat = gm.mu_hat()
    assert torch.allclose(gm.denoise_reduced(x @ mu_hat, sigma), out @ mu_hat, atol=1e-12)
    x_perp = x - (x @ mu_hat)[:, None] * mu_hat
    out_perp = out - (out @ mu_hat)[:, None] * mu_hat
    assert torch.allclose(out_perp, gm.perp_factor(sigma)[:, None] * x_perp, atol=1e-12)


@pytest.mark.parametrize('sigma', [0.3, 1.5, 4.0])
def test_gaussian_mixture_monte_carlo(sigma):
    """On joint samples: residuals are orthogonal to functions of x, and the MMSE matches the average."""
    gm = GaussianMixture(10, m=1.0, s=0.5, p=0.8)
    n = 40000
    g = _gen(2)
    x0 = gm.sample(n, generator=g)
    x = x0 + sigma * torch.randn(x0.shape, dtype=torch.float64, generator=g)
    resid = x0 - gm.denoise(x, sigma)
    err = resid.square().sum(1)
    stderr = err.std().item() / math.sqrt(n)
    assert abs(err.mean().item() - gm.mmse(sigma)) < 4 * stderr
    y = x @ gm.mu_hat()
    for feature in (torch.ones_like(y), torch.tanh(y), y):        # E[(x0 - D(x)) g(x)] = 0
        prod = (resid * feature[:, None]).sum(1)
        assert abs(prod.mean().item()) < 4.5 * prod.std().item() / math.sqrt(n)
    # Mode weight of the law itself.
    assert (x0 @ gm.mu_hat() > 0).double().mean().item() == pytest.approx(0.8, abs=0.01)


# ---------------------------------------------------------------------------------------------------
# Empirical Bayes.

def _brute_force_empirical(data, x, sigma):
    out = []
    for xi, si in zip(x, sigma):
        logw = torch.tensor([-((xi - row) ** 2).sum().item() / (2 * si ** 2) for row in data],
                            dtype=torch.float64)
        out.append(torch.softmax(logw, 0) @ data)
    return torch.stack(out)


def test_empirical_bayes_matches_brute_force_with_chunks():
    g = _gen(3)
    data = torch.randn(11, 2, 3, dtype=torch.float64, generator=g) * 3.0 + 5.0
    x = torch.randn(7, 2, 3, dtype=torch.float64, generator=g) * 4.0 + 5.0
    sigma = torch.tensor([1e-3, 0.05, 0.3, 1.0, 3.0, 30.0, 1e4], dtype=torch.float64)
    oracle = EmpiricalBayes(data, chunk_size=3, batch_size=2)
    out = oracle.denoise(x, sigma.reshape(7, 1, 1, 1))
    assert out.shape == x.shape and out.dtype == torch.float64
    expected = _brute_force_empirical(data.reshape(11, -1), x.reshape(7, -1), sigma.tolist()).reshape(x.shape)
    assert torch.allclose(out, expected, atol=1e-9)
    # Limits: nearest neighbour as sigma -> 0, dataset mean as sigma -> infinity.
    flat_x, flat_d = x.reshape(7, -1), data.reshape(11, -1)
    nearest = flat_d[torch.cdist(flat_x, flat_d).argmin(1)]
    assert torch.allclose(oracle.denoise(x, 1e-4).reshape(7, -1), nearest, atol=1e-9)
    assert torch.allclose(oracle.denoise(x, 1e6).reshape(7, -1), flat_d.mean(0).expand(7, -1), atol=1e-6)


def test_empirical_bayes_mmse_limits_and_sampling():
    data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    oracle = EmpiricalBayes(data)
    total_var = (data - data.mean(0)).square().sum(1).mean().item()
    assert oracle.mmse(1e5) == pytest.approx(total_var, rel=0.05)
    assert oracle.mmse(0.01) < 1e-12                  # points are far apart: perfect recovery
    draws = oracle.sample(2000, generator=_gen(4))
    assert draws.shape == (2000, 2)
    counts = torch.stack([(draws == row).all(1).sum() for row in data])
    assert counts.sum() == 2000 and counts.min() > 400


# ---------------------------------------------------------------------------------------------------
# Two-point law and its pitchfork.

def test_two_point_denoiser_and_mmse():
    tp = TwoPoint(a=1.5, p=0.7)
    x = torch.linspace(-4, 4, 41, dtype=torch.float64)[:, None]
    for sigma in (0.2, 0.8, 1.5, 3.0):
        states = torch.tensor([[1.5], [-1.5]], dtype=torch.float64)
        expected = _enumerated_posterior_mean(states, torch.log(torch.tensor([0.7, 0.3], dtype=torch.float64)),
                                              x, sigma)
        assert torch.allclose(tp.denoise(x, sigma), expected, atol=1e-12)
        g = _gen(5)
        x0 = tp.sample(200000, generator=g)
        err = (tp.denoise(x0 + sigma * torch.randn(x0.shape, dtype=torch.float64, generator=g), sigma) - x0) ** 2
        assert abs(err.mean().item() - tp.mmse(sigma)) < 4 * err.std().item() / math.sqrt(err.numel()) + 1e-12


def _fixed_points(oracle, sigma):
    """Roots of D(x) - x on a fine grid (sign changes)."""
    x = torch.linspace(-3.0, 3.0, 60001, dtype=torch.float64)[:, None]
    f = (oracle.denoise(x, sigma) - x)[:, 0]
    idx = torch.nonzero(torch.sign(f[1:]) * torch.sign(f[:-1]) <= 0)[:, 0]
    roots = x[idx, 0]
    return torch.unique(torch.round(roots, decimals=3))


def test_two_point_pitchfork_at_sigma_equal_a():
    tp = TwoPoint(a=1.0, p=0.5)
    assert tp.sigma_c == 1.0
    for sigma in (0.5, 0.9, 1.1, 2.0):
        x = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(tp.denoise(x, sigma).sum(), x)
        assert slope.item() == pytest.approx(1.0 / sigma ** 2, rel=1e-12)      # D'(0) = a^2 / sigma^2
    above = _fixed_points(tp, 1.05)
    assert above.tolist() == [0.0]                                            # one stable fixed point
    below = _fixed_points(tp, 0.95)
    assert len(below) == 3 and below[1] == 0.0 and below[0] == -below[2] and below[2] > 0.1
    # Iterating x -> D(x) from near 0 converges to 0 above sigma_c and to +x* below it.
    for sigma, target in ((1.05, 0.0), (0.95, below[2].item())):
        x = torch.full((1, 1), 0.01, dtype=torch.float64)
        for _ in range(5000):
            x = tp.denoise(x, sigma)
        assert x.item() == pytest.approx(target, abs=2e-3)


# ---------------------------------------------------------------------------------------------------
# Curie-Weiss.

def test_curie_weiss_magnetization_root():
    m = curie_weiss_magnetization(2.0)
    assert m == pytest.approx(0.95750, abs=5e-6)
    assert m == pytest.approx(math.tanh(2.0 * m), abs=1e-14)
    assert curie_weiss_magnetization(0.8) == 0.0


def _two_phase_log_prior(cw, states):
    w_plus = cw.pi_plus
    plus = ((1 + cw.m * states) / 2).prod(1)
    minus = ((1 - cw.m * states) / 2).prod(1)
    return torch.log(w_plus * plus + (1 - w_plus) * minus)


def test_curie_weiss_two_phase_matches_enumeration():
    d = 8
    cw = CurieWeiss(d)
    assert cw.pi_plus == pytest.approx(math.exp(math.log(2) * cw.m) / (2 * math.cosh(math.log(2) * cw.m)))
    states = _all_spins(d)
    log_prior = _two_phase_log_prior(cw, states)
    assert log_prior.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    g = _gen(6)
    x0 = cw.sample(20, generator=g)
    for sigma in (0.1, 0.6, 1.5, 6.0):
        x = x0 + sigma * torch.randn(x0.shape, dtype=torch.float64, generator=g)
        expected = _enumerated_posterior_mean(states, log_prior, x, sigma)
        assert torch.allclose(cw.denoise(x, sigma), expected, atol=1e-10)
        # Phase posterior: enumerate (phase, s) jointly.
        log_plus = math.log(cw.pi_plus) + torch.log((1 + cw.m * states) / 2).sum(1)
        log_lik = -(x[:, None, :] - states[None]).square().sum(-1) / (2 * sigma ** 2)
        joint_plus = torch.logsumexp(log_plus[None] + log_lik, 1)
        joint_all = torch.logsumexp(log_prior[None] + log_lik, 1)
        assert torch.allclose(cw.phase_posterior(x, sigma), (joint_plus - joint_all).exp(), atol=1e-10)
    # The law itself: per-spin mean (2 pi+ - 1) m.
    draws = cw.sample(40000, generator=g)
    assert draws.mean().item() == pytest.approx((2 * cw.pi_plus - 1) * cw.m, abs=0.01)


@pytest.mark.parametrize('d,beta,h', [(7, 2.0, 0.1), (10, 2.0, 0.5 * math.log(4.0)), (9, 0.7, -0.3)])
def test_curie_weiss_exact_matches_enumeration(d, beta, h):
    cw = CurieWeissExact(d, beta=beta, h=h)
    states = _all_spins(d)
    big_m = states.sum(1)
    log_prior = beta * big_m ** 2 / (2 * d) + h * big_m
    log_prior = log_prior - torch.logsumexp(log_prior, 0)
    # Law of the magnetisation.
    pmf = torch.zeros(d + 1, dtype=torch.float64).index_add_(0, ((big_m + d) / 2).long(), log_prior.exp())
    assert torch.allclose(cw.magnetization_pmf(), pmf, atol=1e-12)
    # Posterior mean.
    g = _gen(7)
    x0 = cw.sample(12, generator=g)
    for sigma in (0.05, 0.5, 1.2, 5.0):
        x = x0 + sigma * torch.randn(x0.shape, dtype=torch.float64, generator=g)
        expected = _enumerated_posterior_mean(states, log_prior, x, sigma)
        assert torch.allclose(cw.denoise(x, torch.full((12,), sigma, dtype=torch.float64)), expected, atol=1e-10)
    # Sampling follows the pmf (k = number of + spins).
    draws = cw.sample(20000, generator=g)
    freq = torch.bincount(((draws.sum(1) + d) / 2).long(), minlength=d + 1).double() / 20000
    assert (freq - pmf).abs().max().item() < 0.015


def test_curie_weiss_exact_tends_to_two_phase_form():
    """CurieWeissExact(d, beta, h/d) puts mass W+ on M > 0 and |M|/d -> m as d grows."""
    h, d = 0.5 * math.log(4.0), 1000
    two_phase = CurieWeiss(d, h=h)
    exact = CurieWeissExact(d, h=h / d)
    pmf = exact.magnetization_pmf()
    mag = (2 * torch.arange(d + 1, dtype=torch.float64) - d) / d
    assert pmf[mag > 0].sum().item() == pytest.approx(two_phase.pi_plus, abs=1e-3)
    assert (pmf * mag.abs()).sum().item() == pytest.approx(two_phase.m, abs=1e-3)


def test_curie_weiss_mmse_limits():
    cw = CurieWeiss(20)
    prior_var = 20 * (1 - ((2 * cw.pi_plus - 1) * cw.m) ** 2)
    mm = cw.mmse(np.array([1e-2, 1e3]), num_samples=4000)
    assert mm[0] < 1e-9
    assert mm[1] == pytest.approx(prior_var, rel=0.03)
    assert cw.rate(1e3, num_samples=4000) == pytest.approx(mm[1] / 1e9, rel=1e-12)   # same default seed


def test_bad_arguments_raise():
    gm = GaussianMixture(4)
    with pytest.raises(ValueError):
        gm.denoise(torch.zeros(3, 5), 1.0)
    with pytest.raises(ValueError):
        gm.denoise(torch.zeros(3, 4), torch.ones(2))
    with pytest.raises(ValueError):
        gm.denoise(torch.zeros(3, 4), 0.0)
    with pytest.raises(ValueError):
        GaussianMixture(4, p=1.0)
