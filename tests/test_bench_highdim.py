"""scripts/bench_highdim.py: grids, the exact reduced GM sampler, the metrics and the CLI."""

import json
import math

import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from infonoise.oracles import CurieWeiss, GaussianMixture
from scripts import bench_highdim as bench
from training.grid_calibration import NamedGrids


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _noisy_start(oracle, n, sigma_max, seed):
    g = _gen(seed)
    return oracle.sample(n, generator=g) + sigma_max * torch.randn(n, oracle.dim, dtype=torch.float64, generator=g)


def _grid(name, n, gm, sigma_max, profile=None, named=None):
    return bench.make_grid(name, n, sigma_max, gm.dim, gm.mu_norm, profile, 3.0, 1.0, named=named)


@pytest.mark.parametrize('name,num_steps', [('edm', 8), ('vp-dilated', 7), ('ve-const', 5), ('loguniform', 2)])
def test_full_d_sampler_equals_reduced_per_sample(name, num_steps):
    gm = GaussianMixture(6, m=1.0, s=0.5, p=0.7)
    sigma_max = 10 * gm.mu_norm
    grid = _grid(name, num_steps, gm, sigma_max)
    x_start = _noisy_start(gm, 64, sigma_max, seed=1)
    full = bench.sample_exact(gm, x_start, grid)
    mu_hat = gm.mu_hat()
    y_final, factor = bench.gm_reduced_heun(gm, x_start @ mu_hat, grid)
    assert torch.allclose(full @ mu_hat, y_final, rtol=1e-10, atol=1e-10)
    perp_start = x_start - (x_start @ mu_hat)[:, None] * mu_hat
    perp_final = full - (full @ mu_hat)[:, None] * mu_hat
    assert torch.allclose(perp_final, factor * perp_start, rtol=1e-10, atol=1e-10)


def test_exact_sampling_is_edm_heun_by_hand():
    """Two Heun steps and the closing Euler step written out by hand with the exact denoiser."""
    gm = GaussianMixture(5, p=0.8)
    grid = torch.tensor([30.0, 2.0, 0.1, 0.0], dtype=torch.float64)
    x = _noisy_start(gm, 16, 30.0, seed=2)
    ours = bench.sample_exact(gm, x, grid)
    for t_cur, t_next in ((30.0, 2.0), (2.0, 0.1)):
        d_cur = (x - gm.denoise(x, t_cur)) / t_cur
        x_eul = x + (t_next - t_cur) * d_cur
        x = x + (t_next - t_cur) * 0.5 * (d_cur + (x_eul - gm.denoise(x_eul, t_next)) / t_next)
    x = x + (0.0 - 0.1) * (x - gm.denoise(x, 0.1)) / 0.1
    assert torch.allclose(ours, x, rtol=1e-10, atol=1e-10)


def test_reduced_state_trajectory_error_equals_full_d():
    """ReducedGMNet on [y, |x_perp|] gives exactly the full-d distance between two runs' end points."""
    gm = GaussianMixture(20, p=0.7)
    sigma_max = 10 * gm.mu_norm
    x_start = _noisy_start(gm, 32, sigma_max, seed=6)
    mu_hat = gm.mu_hat()
    y = x_start @ mu_hat
    reduced = torch.stack([y, (x_start - y[:, None] * mu_hat).norm(dim=1)], 1)
    coarse, fine = _grid('edm', 4, gm, sigma_max), _grid('edm', 64, gm, sigma_max)
    full_err = (bench.sample_exact(gm, x_start, coarse) - bench.sample_exact(gm, x_start, fine)).norm(dim=1)
    net = bench.ReducedGMNet(gm)
    red = bench._deterministic(net, reduced, coarse) - bench._deterministic(net, reduced, fine)
    assert torch.allclose(red.norm(dim=1), full_err, rtol=1e-9)


@pytest.mark.parametrize('name', bench.GRID_NAMES)
@pytest.mark.parametrize('num_steps', [2, 5, 16])
def test_grid_layout(name, num_steps):
    gm = GaussianMixture(100)
    sigma_max = 10 * gm.mu_norm
    profile = bench.oracle_profile(gm.rate, bench.SIGMA_MIN, sigma_max)
    named = None
    if name == 'infogrid-calibrated':
        start = bench.gm_reduced_start(gm, 8, sigma_max, _gen(7))
        named = NamedGrids(bench.ReducedGMNet(gm), profile, bench.SIGMA_MIN, sigma_max, start / sigma_max,
                           calib_ref_steps=bench.CALIB_REF_STEPS)
    grid = _grid(name, num_steps, gm, sigma_max, profile, named)
    assert grid.dtype == torch.float64 and grid.shape == (num_steps + 1,)
    assert grid[0].item() == pytest.approx(sigma_max, rel=1e-12)
    assert grid[-2].item() == pytest.approx(bench.SIGMA_MIN, rel=1e-9)
    assert grid[-1].item() == 0.0
    assert torch.all(grid[1:] < grid[:-1])


def test_interpolant_grid_definitions():
    d, n = 400, 9
    gm = GaussianMixture(d)
    sigma_max = 10 * gm.mu_norm
    # VE-constant: equal steps in sigma. VP-constant: equal steps in t = 1/sqrt(1 + sigma^2).
    ve = _grid('ve-const', n, gm, sigma_max)[:-1]
    assert torch.allclose(ve[:-1] - ve[1:], (ve[0] - ve[1]).expand(n - 1), rtol=1e-9)
    t = 1 / torch.sqrt(1 + _grid('vp-const', n, gm, sigma_max)[:-1] ** 2)
    assert torch.allclose(t[1:] - t[:-1], (t[1] - t[0]).expand(n - 1), rtol=1e-7)
    # Dilated: the middle level (odd n) sits at the breakpoint, uniform on each side.
    ve_dil = _grid('ve-dilated', n, gm, sigma_max)[:-1]
    assert ve_dil[n // 2].item() == pytest.approx(1.0 * sigma_max / math.sqrt(d), rel=1e-9)
    assert torch.allclose(ve_dil[:4] - ve_dil[1:5], (ve_dil[0] - ve_dil[1]).expand(4), rtol=1e-9)
    t_dil = 1 / torch.sqrt(1 + _grid('vp-dilated', n, gm, sigma_max)[:-1] ** 2)
    assert t_dil[n // 2].item() == pytest.approx(3.0 / gm.mu_norm, rel=1e-9)
    assert torch.allclose(t_dil[5:] - t_dil[4:-1], (t_dil[5] - t_dil[4]).expand(4), rtol=1e-7)


def test_gm_metrics_match_monte_carlo_of_reduced_dynamics():
    gm = GaussianMixture(10, m=1.0, s=0.5, p=0.8)
    sigma_max = 10 * gm.mu_norm
    grid = _grid('vp-const', 6, gm, sigma_max)            # coarse: errors well above the MC noise
    metrics = bench.gm_metrics(gm, grid, sigma_max)
    n = 400_000
    g = _gen(3)
    c = torch.where(torch.rand(n, dtype=torch.float64, generator=g) < gm.p, 1.0, -1.0)
    spread = math.sqrt(gm.s ** 2 + sigma_max ** 2)
    y_start = c * gm.mu_norm + spread * torch.randn(n, dtype=torch.float64, generator=g)
    y_final, factor = bench.gm_reduced_heun(gm, y_start, grid)
    weight = (y_final > 0).double().mean().item()
    assert abs(metrics['mode_weight'] - weight) < 4 * math.sqrt(weight * (1 - weight) / n)
    assert metrics['mode_weight_error'] > 0.01
    pos, neg = y_final[y_final > 0], y_final[y_final <= 0]
    pooled = (pos.var() * pos.numel() + neg.var() * neg.numel()).item() / n
    assert metrics['var_par'] == pytest.approx(pooled, rel=0.01)
    assert metrics['var_perp'] == pytest.approx(factor ** 2 * spread ** 2, rel=1e-12)


def test_gm_metrics_vanish_on_a_fine_grid():
    """The exact flow carries the start law to the GM: a fine EDM grid must meet the tolerances easily."""
    gm = GaussianMixture(100, p=0.8)
    sigma_max = 10 * gm.mu_norm
    metrics = bench.gm_metrics(gm, _grid('edm', 256, gm, sigma_max), sigma_max)
    assert metrics['mode_weight_error'] < 1e-4 and metrics['variance_error'] < 1e-3
    assert bench.gm_passes(metrics)


def test_ve_vp_dichotomy_with_constant_denoising():
    """Seed paper: at a fixed step count VE-const loses the variance and VP-const the mode weight as d grows."""
    out = {}
    for d in (10, 1000):
        gm = GaussianMixture(d, p=0.8)
        sigma_max = 10 * gm.mu_norm
        out[d] = {g: bench.gm_metrics(gm, _grid(g, 64, gm, sigma_max), sigma_max) for g in ('ve-const', 'vp-const')}
    assert out[1000]['ve-const']['variance_error'] > 10 * out[10]['ve-const']['variance_error']
    assert out[1000]['ve-const']['mode_weight_error'] < 0.01
    assert out[1000]['vp-const']['mode_weight_error'] > 5 * out[10]['vp-const']['mode_weight_error']
    assert out[1000]['vp-const']['var_perp_rel_error'] < 0.02


def test_wasserstein_and_cw_metrics():
    g = _gen(4)
    a = torch.randn(500, generator=g, dtype=torch.float64)
    b = 0.3 + 2 * torch.randn(500, generator=g, dtype=torch.float64)
    assert bench.wasserstein1(a, b) == pytest.approx(stats.wasserstein_distance(a.numpy(), b.numpy()), rel=1e-12)
    cw = CurieWeiss(50)
    mag = bench.sample_exact(cw, _noisy_start(cw, 200, 10 * cw.m * math.sqrt(50), seed=5),
                             bench.edm_sigma_steps(32, bench.SIGMA_MIN, 10 * cw.m * math.sqrt(50))).mean(1)
    same = bench.cw_metrics(cw, mag, mag)
    assert same['flip_rate'] == 0 and same['w1'] == 0 and same['w1_abs_rel'] == 0
    assert same['phase_error'] == pytest.approx(abs((mag > 0).double().mean().item() - cw.pi_plus))
    flipped = bench.cw_metrics(cw, -mag, mag)
    assert flipped['flip_rate'] == 1.0 and flipped['w1_abs_rel'] == 0
    assert not bench.cw_passes(flipped)


def test_cli_small_run_writes_json(tmp_path):
    path = tmp_path / 'out.json'
    args = ['--dims', '10,20', '--cw-dims', '10', '--ladder', '2,8,64', '--cw-ladder', '2,16', '--samples', '200',
            '--ref-steps', '64', '--profile-samples', '16', '--json', str(path)]
    threads = torch.get_num_threads()
    result = CliRunner().invoke(bench.main, args)
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads                       # restored after the run
    assert '| edm |' in result.output and '| vp-dilated |' in result.output
    data = json.loads(path.read_text())
    for model, dims in (('gm', ['10', '20']), ('cw', ['10'])):
        assert set(data[model]['N_star']) == set(bench.GRID_NAMES)
        for grid in bench.GRID_NAMES:
            assert sorted(data[model]['N_star'][grid]) == sorted(dims)
            value = data[model]['N_star'][grid][dims[0]]
            assert value is None or value in data[model]['ladder']
    assert set(data['gm']['errors']['edm']['10']) == {'2', '8', '64'}
    assert data['gm']['N_star']['edm']['10'] == min(
        int(n) for n, m in data['gm']['errors']['edm']['10'].items() if bench.gm_passes(m))


@pytest.mark.parametrize('args,needle', [
    (['--grids', 'edm,nope'], 'unknown name'),
    (['--dims', '1'], 'at least 2'),
    (['--ladder', 'a,b'], 'comma-separated'),
    (['--models', 'xx'], 'unknown name'),
])
def test_cli_bad_input_is_one_clear_error(args, needle):
    result = CliRunner().invoke(bench.main, args + ['--quick'])
    assert result.exit_code != 0
    assert needle in result.output and 'Traceback' not in result.output
