"""Tests for training/sampler.py: σ grids, Heun/Euler/ablation samplers.

Independent truths: the ρ-grid's closed form; an exact Gaussian denoiser whose probability-flow ODE has
the closed-form solution x(σ) = x(σ_max)·sqrt((s² + σ²)/(s² + σ_max²)); hand-computed churn steps;
and the reference implementation's outputs stored in tests/data/edm_parity.pt.
"""
import math
import os

import pytest
import torch

from training.sampler import _iddpm_sigmas, ablation_sampler, edm_sampler, edm_sigma_steps, heun_sampler
from training.vp import vp_sigma

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class GaussianDenoiser:
    """Exact Bayes denoiser for data ~ N(0, s² I): D(x; σ) = s²/(s² + σ²)·x."""

    def __init__(self, s=0.5, sigma_min=0, sigma_max=float('inf'), round_sigma=None):
        self.s = s
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.calls = []
        if round_sigma is not None:
            self.round_sigma = round_sigma

    def __call__(self, x, sigma, class_labels=None):
        self.calls.append(float(sigma))
        assert x.dtype == torch.float64
        return x * (self.s ** 2 / (self.s ** 2 + sigma ** 2))


def exact_flow(latents, sigma_start, s):
    """Closed-form PF-ODE solution at σ = 0 from x(σ_start) = latents·σ_start."""
    return latents.double() * sigma_start * s / math.sqrt(s ** 2 + sigma_start ** 2)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def latents(shape=(2, 1, 2, 2), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


class RecordingRandn:
    """A seeded randn_like that records every call (shape, dtype) in order."""

    def __init__(self, seed=123):
        self.gen = torch.Generator().manual_seed(seed)
        self.calls = []
        self.draws = []

    def __call__(self, x):
        self.calls.append((tuple(x.shape), x.dtype))
        eps = torch.randn(x.shape, generator=self.gen, dtype=torch.float64)
        self.draws.append(eps)
        return eps


# ------------------------------------------------------------------------------------------------
# Grid.

def test_edm_sigma_steps_closed_form():
    n, smin, smax, rho = 7, 0.01, 50.0, 5.0
    got = edm_sigma_steps(n, smin, smax, rho)
    assert got.dtype == torch.float64 and got.shape == (n + 1,)
    for i in range(n):
        want = (smax ** (1 / rho) + i / (n - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        assert got[i].item() == pytest.approx(want, rel=1e-14)
    assert got[-1].item() == 0.0
    assert got[0].item() == pytest.approx(smax, rel=1e-13)
    assert got[n - 1].item() == pytest.approx(smin, rel=1e-13)
    assert bool((got[1:] < got[:-1]).all())


def test_edm_sigma_steps_rounding_and_edge_cases():
    got = edm_sigma_steps(5, round_sigma=lambda s: s.round(decimals=1))
    assert torch.equal(got[:-1], edm_sigma_steps(5)[:-1].round(decimals=1))
    assert got[-1].item() == 0.0
    one = edm_sigma_steps(1, 0.002, 80)
    assert one.tolist() == [pytest.approx(80.0, rel=1e-13), 0.0]
    with pytest.raises(ValueError, match='num_steps'):
        edm_sigma_steps(0)
    with pytest.raises(ValueError, match='sigma_min'):
        edm_sigma_steps(4, sigma_min=0)


# ------------------------------------------------------------------------------------------------
# Convergence order against the exact Gaussian flow.

@pytest.mark.parametrize('solver,order', [('heun', 2), ('euler', 1)])
def test_heun_sampler_convergence_order(solver, order):
    s, smax = 0.5, 80.0
    z = latents()
    want = exact_flow(z, smax, s)
    errors = []
    for n in (16, 32, 64):
        # sigma_min tiny so that the final Euler step to 0 (error ≈ σ_min²/2s²) is negligible.
        grid = edm_sigma_steps(n, 1e-6, smax)
        out = heun_sampler(GaussianDenoiser(s), z, grid, solver=solver)
        assert out.dtype == torch.float64 and out.shape == z.shape
        errors.append(rel_err(out, want))
    for coarse, fine in zip(errors[:-1], errors[1:]):
        assert coarse / fine == pytest.approx(2 ** order, rel=0.25)
    assert errors[-1] < (1e-2 if order == 2 else 1e-1)


def test_heun_skips_correction_on_final_step():
    net = GaussianDenoiser()
    grid = edm_sigma_steps(6)
    heun_sampler(net, latents(), grid)
    assert len(net.calls) == 2 * 6 - 1
    assert 0.0 not in net.calls
    net = GaussianDenoiser()
    heun_sampler(net, latents(), grid, solver='euler')
    assert len(net.calls) == 6


# ------------------------------------------------------------------------------------------------
# Churn and the random stream.

def test_randn_like_called_once_per_step_even_without_churn():
    z = latents((3, 2, 4, 4))
    for kwargs in ({}, {'S_churn': 5.0}):
        rnd = RecordingRandn()
        edm_sampler(GaussianDenoiser(), z, randn_like=rnd, num_steps=7, **kwargs)
        assert rnd.calls == [((3, 2, 4, 4), torch.float64)] * 7
        rnd = RecordingRandn()
        ablation_sampler(GaussianDenoiser(), z, randn_like=rnd, num_steps=5, solver='euler',
                         discretization='vp', schedule='vp', scaling='vp', **kwargs)
        assert rnd.calls == [((3, 2, 4, 4), torch.float64)] * 5


@pytest.mark.parametrize('S_churn,S_min,S_max,gamma', [
    (0.2, 0, float('inf'), 0.2),           # γ = S_churn / N with N = 1
    (5.0, 0, float('inf'), math.sqrt(2) - 1),  # capped
    (0.2, 0, 3.0, 0.0),                    # σ_0 outside [S_min, S_max]
])
def test_single_churn_step_exact(S_churn, S_min, S_max, gamma):
    s, sigma0, S_noise = 0.5, 4.0, 1.007
    z = latents()
    rnd = RecordingRandn()
    out = heun_sampler(GaussianDenoiser(s), z, torch.tensor([sigma0, 0.0]), randn_like=rnd,
                       S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise)
    t_hat = sigma0 * (1 + gamma)
    x_hat = z.double() * sigma0 + math.sqrt(t_hat ** 2 - sigma0 ** 2) * S_noise * rnd.draws[0]
    want = x_hat * s ** 2 / (s ** 2 + t_hat ** 2)  # Euler step to 0 = D(x̂; t̂)
    assert torch.allclose(out, want, rtol=1e-13, atol=1e-15)


def test_churn_multistep_matches_hand_recursion():
    s, n = 0.7, 5
    grid = edm_sigma_steps(n, 0.01, 20.0)
    S_churn, S_min, S_max, S_noise = 2.0, 0.05, 10.0, 1.01
    z = latents()
    rnd = RecordingRandn(7)
    out = heun_sampler(GaussianDenoiser(s), z, grid, randn_like=rnd, S_churn=S_churn, S_min=S_min,
                       S_max=S_max, S_noise=S_noise)

    def denoise(x, sig):
        return x * s ** 2 / (s ** 2 + sig ** 2)

    x = z.double() * grid[0].item()
    for i in range(n):
        t, t_next = grid[i].item(), grid[i + 1].item()
        g = min(S_churn / n, math.sqrt(2) - 1) if S_min <= t <= S_max else 0.0
        t_hat = t * (1 + g)
        x_hat = x + math.sqrt(t_hat ** 2 - t ** 2) * S_noise * rnd.draws[i]
        d = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x = x_hat + (t_next - t_hat) * d
        if i < n - 1:
            d2 = (x - denoise(x, t_next)) / t_next
            x = x_hat + (t_next - t_hat) * (d + d2) / 2
    assert torch.allclose(out, x, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# edm_sampler.

def test_edm_sampler_is_heun_on_clamped_rounded_grid():
    def round_sigma(sig):
        return torch.as_tensor(sig).round(decimals=3)

    net = GaussianDenoiser(sigma_min=0.01, sigma_max=10.0, round_sigma=round_sigma)
    z = latents()
    out = edm_sampler(net, z, num_steps=9, sigma_min=0.002, sigma_max=80)
    grid = edm_sigma_steps(9, 0.01, 10.0, round_sigma=round_sigma)
    assert net.calls[0] == grid[0].item() == 10.0
    net2 = GaussianDenoiser(sigma_min=0.01, sigma_max=10.0, round_sigma=round_sigma)
    assert torch.equal(out, heun_sampler(net2, z, grid))


# ------------------------------------------------------------------------------------------------
# ablation_sampler.

ABLATION_SIGMA_MAX = {'vp': vp_sigma(1.0, 19.9, 0.1), 've': 100.0, 'iddpm': 81.0, 'edm': 80.0}


def test_ablation_default_ranges():
    assert vp_sigma(1.0, 19.9, 0.1) == pytest.approx(math.sqrt(math.exp(9.95 + 0.1) - 1), rel=1e-14)
    for disc, smax in ABLATION_SIGMA_MAX.items():
        net = GaussianDenoiser()
        ablation_sampler(net, latents(), num_steps=4, discretization=disc, solver='euler')
        if disc == 'iddpm':  # the grid's own levels: largest ≤ 81, smallest nonzero u_{M−1} ≥ 0.002
            assert 70 < net.calls[0] <= 81
            assert net.calls[-1] == _iddpm_sigmas(1000, 0.001, 0.008)[999].item()
        else:
            assert net.calls[0] == pytest.approx(smax, rel=1e-12)
    net = GaussianDenoiser()
    ablation_sampler(net, latents(), num_steps=4, discretization='ve', solver='euler')
    assert net.calls[-1] == pytest.approx(0.02, rel=1e-12)
    net = GaussianDenoiser()
    ablation_sampler(net, latents(), num_steps=4, discretization='vp', solver='euler')
    assert net.calls[-1] == pytest.approx(vp_sigma(1e-3, 19.9, 0.1), rel=1e-10)


@pytest.mark.parametrize('disc', ['vp', 've', 'edm'])
@pytest.mark.parametrize('schedule', ['vp', 've', 'linear'])
@pytest.mark.parametrize('scaling', ['vp', 'none'])
def test_ablation_converges_to_exact_flow_at_second_order(disc, schedule, scaling):
    s = 0.5
    z = latents()
    want = exact_flow(z, ABLATION_SIGMA_MAX[disc], s)
    errors = [rel_err(ablation_sampler(GaussianDenoiser(s), z, num_steps=n, sigma_min=1e-4,
                                       discretization=disc, schedule=schedule, scaling=scaling), want)
              for n in (48, 96)]
    assert 3.5 < errors[0] / errors[1] < 6.0  # second order (≈ 4 per halving of the step)
    assert errors[1] < 0.06


@pytest.mark.parametrize('alpha', [0.5, 0.75, 1.0])
def test_ablation_alpha_family_is_second_order_and_euler_first(alpha):
    s = 0.5
    z = latents()
    want = exact_flow(z, 80.0, s)
    heun = [rel_err(ablation_sampler(GaussianDenoiser(s), z, num_steps=n, sigma_min=1e-6, alpha=alpha), want)
            for n in (32, 64)]
    euler = [rel_err(ablation_sampler(GaussianDenoiser(s), z, num_steps=n, sigma_min=1e-6, solver='euler'), want)
             for n in (32, 64)]
    assert heun[0] / heun[1] > 3.5  # at least 2nd order (α = ½ happens to cancel more on this linear ODE)
    assert euler[0] / euler[1] == pytest.approx(2.0, rel=0.2)


def test_ablation_iddpm_grid_and_convergence():
    M, C_1, C_2 = 1000, 0.001, 0.008
    u = _iddpm_sigmas(M, C_1, C_2)
    # Closed form of the recursion: u_j² + 1 = Π_{k>j} 1/max(ᾱ_{k−1}/ᾱ_k, C_1), here in float64; the
    # sampler (like the reference) forms ᾱ in float32, which costs up to ~1e-3 near u_{M−1}.
    j = torch.arange(M + 1, dtype=torch.float64)
    abar = torch.sin(0.5 * math.pi * j / M / (C_2 + 1)) ** 2
    inv_ratio = 1 / (abar[:-1] / abar[1:]).clip(min=C_1)
    tail_prod = torch.flip(torch.cumprod(torch.flip(inv_ratio, [0]), 0), [0])
    prod = torch.cat([tail_prod, torch.ones(1, dtype=torch.float64)])
    assert torch.allclose(u, (prod - 1).clamp(min=0).sqrt(), rtol=2e-3, atol=1e-9)
    assert u[-1] == 0 and bool((u[1:] < u[:-1]).all())

    net = GaussianDenoiser()
    ablation_sampler(net, latents(), num_steps=10, discretization='iddpm', solver='euler')
    kept = u[(u >= 0.002) & (u <= 81)]
    idx = [round((len(kept) - 1) / 9 * i) for i in range(10)]
    assert net.calls == pytest.approx([kept[i].item() for i in idx], rel=1e-12)

    s, z = 0.5, latents()
    out = ablation_sampler(GaussianDenoiser(s), z, num_steps=200, discretization='iddpm')
    assert rel_err(out, exact_flow(z, kept[0].item(), s)) < 1e-3


def test_ablation_edm_linear_matches_edm_sampler():
    z = latents()
    rnd_a, rnd_b = RecordingRandn(3), RecordingRandn(3)
    a = ablation_sampler(GaussianDenoiser(), z, num_steps=8, S_churn=3.0, randn_like=rnd_a)
    b = edm_sampler(GaussianDenoiser(), z, num_steps=8, S_churn=3.0, randn_like=rnd_b)
    assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize('kwargs,bad', [
    ({'solver': 'rk4'}, 'rk4'), ({'discretization': 'cosine'}, 'cosine'),
    ({'schedule': 'edm'}, "'edm'"), ({'scaling': 've'}, "'ve'"),
])
def test_ablation_rejects_bad_options(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        ablation_sampler(GaussianDenoiser(), latents(), num_steps=3, **kwargs)


def test_heun_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match='midpoint'):
        heun_sampler(GaussianDenoiser(), latents(), edm_sigma_steps(3), solver='midpoint')
    with pytest.raises(ValueError, match='sigma_steps'):
        heun_sampler(GaussianDenoiser(), latents(), torch.tensor([1.0]))


# ------------------------------------------------------------------------------------------------
# Parity with the reference implementation (golden fixture).

def build_net(rec):
    import training.networks
    net = getattr(training.networks, rec['precond'])(**rec['precond_kwargs'], **rec['model_kwargs'])
    net.load_state_dict(rec['state_dict'], strict=True)
    return net.eval()


def test_edm_sampler_matches_reference(parity_records):
    checked = 0
    for name, rec in parity_records.items():
        if 'sampler' not in rec:
            continue
        ref = rec['sampler']
        net = build_net(rec)
        with torch.no_grad():
            out = edm_sampler(net, ref['latents'], ref['class_labels'], num_steps=ref['num_steps'],
                              sigma_min=ref['sigma_min'], sigma_max=ref['sigma_max'], rho=ref['rho'])
        assert out.dtype == torch.float64
        assert rel_err(out, ref['output']) <= 1e-5, name
        checked += 1
    assert checked >= 3


def test_stochastic_samplers_match_reference(parity_records):
    kinds = set()
    for name, rec in parity_records.items():
        for case in rec.get('stochastic', []):
            net = build_net(rec)
            gen = torch.Generator().manual_seed(case['noise_seed'])

            def randn_like(x, gen=gen):
                return torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.dtype)

            sampler = {'edm': edm_sampler, 'ablation': ablation_sampler}[case['kind']]
            with torch.no_grad():
                out = sampler(net, case['latents'], case['class_labels'], randn_like=randn_like, **case['kwargs'])
            assert rel_err(out, case['output']) <= 1e-5, (name, case['kind'], case['kwargs'])
            kinds.add((case['kind'], case['kwargs'].get('discretization')))
    assert len(kinds) >= 4


# ------------------------------------------------------------------------------------------------
# GPU: the sampling loops never synchronise with the host.

class SilentGaussianDenoiser:
    """GaussianDenoiser without host-side bookkeeping (safe under sync-debug mode)."""
    sigma_min, sigma_max = 0, float('inf')

    def __init__(self, s=0.5):
        self.s = s

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)

    def __call__(self, x, sigma, class_labels=None):
        return x * (self.s ** 2 / (self.s ** 2 + sigma ** 2))


@pytest.mark.gpu
def test_samplers_do_not_sync_on_cuda():
    z = latents((4, 3, 8, 8))
    runs = [
        lambda net, lat, **kw: edm_sampler(net, lat, num_steps=6, S_churn=5, **kw),
        lambda net, lat, **kw: heun_sampler(net, lat, edm_sigma_steps(6, device=lat.device), solver='euler', **kw),
        lambda net, lat, **kw: ablation_sampler(net, lat, num_steps=6, discretization='vp', schedule='vp',
                                                scaling='vp', S_churn=3, **kw),
        lambda net, lat, **kw: ablation_sampler(net, lat, num_steps=6, discretization='ve', schedule='ve', **kw),
    ]
    for run in runs:
        cpu = run(SilentGaussianDenoiser(), z, randn_like=lambda x: torch.ones_like(x))
        lat = z.cuda()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            gpu = run(SilentGaussianDenoiser(), lat, randn_like=lambda x: torch.ones_like(x))
        finally:
            torch.cuda.set_sync_debug_mode('default')
        assert gpu.device.type == 'cuda' and gpu.dtype == torch.float64
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
