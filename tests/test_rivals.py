"""The rival schedules (infonoise/rivals.py) and weightings against independent truth: their papers' formulas
computed here from the raw losses, scipy / scikit-learn references, Monte-Carlo unbiasedness of the importance
weights through the real loss, and exact resume."""
import io
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from click.testing import CliRunner
from sklearn.isotonic import IsotonicRegression

import infonoise
import train
from helpers import assert_clean_error
from infonoise import (CDCDSampler, KingmaGaoSampler, LaplaceSampler, LossSecondMomentSampler, SigmaGrid,
                       isotonic_increasing, min_snr_weight)
from torch_utils import persistence
from training.loss import EDMLoss
from training.network_io import class_map

K = 8
GRID = SigmaGrid(0.002, 80.0, K)


def feed(sampler, values_per_bin):
    """Observe, for every bin k, the losses values_per_bin[k] at σ = the bin's centre, then one step."""
    sigma = torch.cat([torch.full((len(v),), float(GRID.sigma[k])) for k, v in enumerate(values_per_bin)])
    loss = torch.cat([torch.as_tensor(v, dtype=torch.float32) for v in values_per_bin])
    sampler.observe(sigma, loss)
    sampler.step()


def bin_mass(sampler):
    return sampler.profile()['pi'] * GRID.widths.numpy()


def known_losses(history, rng):
    """history positive losses per bin (float32 values), different level and spread per bin."""
    return [(np.float32(0.1 * (k + 1)) * rng.uniform(0.5, 1.5, history)).astype(np.float32) for k in range(K)]


def test_loss_second_moment_density_is_the_root_mean_square_of_the_last_h_losses():
    rng = np.random.default_rng(0)
    s = LossSecondMomentSampler(GRID, weight_fn='unit', history=5, uniform=0.001)
    old = known_losses(5, rng)
    new = known_losses(5, rng)
    feed(s, old)
    feed(s, new)                                     # the FIFO keeps only these
    rms = np.array([math.sqrt(np.mean(np.asarray(v, np.float64) ** 2)) for v in new])
    expected = 0.999 * rms / rms.sum() + 0.001 / K   # improved-diffusion: (1 − 0.001)·p + 0.001/N
    np.testing.assert_allclose(bin_mass(s), expected, rtol=1e-6)
    # Importance weight 1/(N·p) of a draw in each bin.
    w = s.importance_weight(GRID.sigma.float())
    np.testing.assert_allclose(w.numpy(), 1 / (K * expected), rtol=1e-5)


def test_loss_second_moment_is_uniform_until_every_bin_holds_h_losses():
    s = LossSecondMomentSampler(GRID, weight_fn='unit', history=4)
    values = [np.ones(4, np.float32) * (k + 1) for k in range(K)]
    values[3] = values[3][:3]                        # one bin short of its history
    feed(s, values)
    np.testing.assert_allclose(bin_mass(s), np.full(K, 1 / K), rtol=1e-12)
    assert torch.equal(s.importance_weight(GRID.sigma.float()), torch.ones(K))


def test_stored_loss_is_the_weighted_one():
    """With w = EDM's weight the table is built from w(σ)·error, the base objective's per-example loss."""
    rng = np.random.default_rng(1)
    s = KingmaGaoSampler(GRID, weight_fn='edm', history=3, uniform=0.0)
    errors = known_losses(3, rng)
    feed(s, errors)
    sig = GRID.sigma.numpy()
    w = (sig ** 2 + 0.25) / (sig * 0.5) ** 2
    means = np.array([np.mean(np.float32(w[k]) * np.asarray(v, np.float32), dtype=np.float64)
                      for k, v in enumerate(errors)])
    np.testing.assert_allclose(bin_mass(s), means / means.sum(), rtol=1e-5)


def test_kingma_gao_density_is_proportional_to_the_mean_loss():
    rng = np.random.default_rng(2)
    s = KingmaGaoSampler(GRID, weight_fn='unit', history=6, uniform=0.01)
    values = known_losses(6, rng)
    feed(s, values)
    means = np.array([np.mean(np.asarray(v, np.float64)) for v in values])
    np.testing.assert_allclose(bin_mass(s), 0.99 * means / means.sum() + 0.01 / K, rtol=1e-6)


def test_isotonic_fit_equals_scikit_learn():
    rng = np.random.default_rng(3)
    for _ in range(5):
        y = rng.normal(size=20).cumsum() * 0.3 + np.linspace(0, 2, 20)
        wts = rng.uniform(0.5, 3, 20)
        ref = IsotonicRegression().fit(np.arange(20), y, sample_weight=wts).predict(np.arange(20))
        got = isotonic_increasing(torch.from_numpy(y), torch.from_numpy(wts)).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-12)


def test_cdcd_cdf_is_the_normalised_monotone_fit_of_the_loss():
    values = [np.full(4, v, np.float32) for v in (0.1, 0.3, 0.2, 0.5, 0.9, 0.8, 1.0, 1.0)]
    s = CDCDSampler(GRID, history=4, uniform=0.0)
    feed(s, values)
    # Hand-computed: isotonic fit of the bin means (equal counts) = 0.1, 0.25, 0.25, 0.5, 0.85, 0.85, 1, 1;
    # F at the edges = end values and midpoints; bin masses = ΔF / (F_K − F_0).
    fit = np.array([0.1, 0.25, 0.25, 0.5, 0.85, 0.85, 1.0, 1.0])
    knots = np.concatenate([[fit[0]], (fit[1:] + fit[:-1]) / 2, [fit[-1]]])
    expected = np.diff(knots) / (knots[-1] - knots[0])
    np.testing.assert_allclose(bin_mass(s), expected, atol=1e-7)
    # An allocation sampler: no importance weight.
    assert torch.equal(s.importance_weight(GRID.sigma.float()), torch.ones(K))


@pytest.mark.parametrize('cls', [LossSecondMomentSampler, KingmaGaoSampler, CDCDSampler])
def test_draws_follow_the_table(cls):
    rng = np.random.default_rng(4)
    s = cls(GRID, weight_fn='unit', history=4, uniform=0.05)
    feed(s, [np.sort(v) for v in known_losses(4, rng)] if cls is not CDCDSampler else
         [np.full(4, (k + 1) ** 2, np.float32) for k in range(K)])
    mass = bin_mass(s)
    n = 200_000
    sigma = s.sample(n, generator=torch.Generator().manual_seed(0))
    assert sigma.dtype == torch.float32 and sigma.min() >= GRID.sigma_min and sigma.max() <= GRID.sigma_max
    counts = np.bincount(GRID.bin_index(sigma).numpy(), minlength=K)
    assert scipy.stats.chisquare(counts, mass * n).pvalue > 1e-3
    # Inside a bin: log-uniform (importance samplers) or uniform in σ (CDCD).
    k = int(np.argmax(mass))
    inside = sigma[GRID.bin_index(sigma) == k].double()
    lo, hi = float(GRID.edges[k]), float(GRID.edges[k + 1])
    pos = (inside.log() - math.log(lo)) / math.log(hi / lo) if cls is not CDCDSampler else (inside - lo) / (hi - lo)
    assert scipy.stats.kstest(pos.numpy(), 'uniform').pvalue > 1e-3


@pytest.mark.parametrize('cls', [LossSecondMomentSampler, KingmaGaoSampler])
def test_importance_weighted_loss_is_unbiased_for_the_base_objective(cls):
    """Through the real loss: Gaussian data of std σ_d and its exact Bayes denoiser, w ≡ 1. The base
    objective is E over log-uniform σ on the grid of the MMSE σ²σ_d²/(σ²+σ_d²) (integrated by quad)."""
    sigma_data = 0.5
    s = cls(GRID, weight_fn='unit', history=4, uniform=0.0)
    feed(s, [np.full(4, (k + 1.0) ** 3, np.float32) for k in range(K)])      # a strongly non-uniform table
    assert np.ptp(bin_mass(s)) > 0.3
    loss_fn = EDMLoss(weighting='unit')
    loss_fn.sigma_sampler = s

    def net(x, sigma, labels=None, augment_labels=None):
        return x * sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)

    def mc_mean(loss):
        torch.manual_seed(0)
        per_example = []
        for _ in range(20):
            images = torch.randn(5000, 1, 2, 2, dtype=torch.float32) * sigma_data
            per_example.append(loss(net, images).double().flatten(1).mean(1))
        per_example = torch.cat(per_example).numpy()
        return per_example.mean(), per_example.std(ddof=1) / math.sqrt(len(per_example))

    lo, hi = math.log(GRID.sigma_min), math.log(GRID.sigma_max)
    truth = scipy.integrate.quad(lambda t: math.exp(2 * t) * sigma_data ** 2 / (math.exp(2 * t) + sigma_data ** 2),
                                 lo, hi, limit=200)[0] / (hi - lo)
    mean, se = mc_mean(loss_fn)
    assert abs(mean - truth) < 4 * se, (mean, truth, se)

    class SameTableNoWeight:     # the same draws without the importance weight: far off
        sample = s.sample
    loss_fn.sigma_sampler = SameTableNoWeight()
    raw_mean, raw_se = mc_mean(loss_fn)
    assert abs(raw_mean - truth) > 10 * raw_se, (raw_mean, truth, raw_se)


def test_laplace_sampler_matches_scipy():
    s = LaplaceSampler(mu=0.3, b=0.7)
    sigma = s.sample(100_000, generator=torch.Generator().manual_seed(0)).double()
    lam = (-2 * sigma.log()).numpy()
    assert scipy.stats.kstest(lam, scipy.stats.laplace(loc=0.3, scale=0.7).cdf).pvalue > 1e-3
    grid = SigmaGrid(0.01, 100.0, 16)
    lam_edges = -2 * np.log(grid.edges.numpy())
    ref = scipy.stats.laplace(loc=0.3, scale=0.7).cdf(lam_edges[:-1]) - scipy.stats.laplace(loc=0.3, scale=0.7).cdf(
        lam_edges[1:])
    np.testing.assert_allclose(s.profile(grid)['pi'] * grid.widths.numpy(), ref, rtol=1e-9, atol=1e-15)


def test_laplace_sampler_never_returns_inf():
    s = LaplaceSampler(b=0.5)
    assert torch.isfinite(s.sample(1_000_000, generator=torch.Generator().manual_seed(1))).all()


def test_min_snr_weight_hand_values():
    sigma = torch.tensor([0.1, 0.5, 1.0, 4.0], dtype=torch.float64)
    # SNR = 1/σ²: 100, 4, 1, 1/16; γ = 5 caps the first.
    torch.testing.assert_close(min_snr_weight(sigma), torch.tensor([5.0, 4.0, 1.0, 1 / 16], dtype=torch.float64))
    w = infonoise.get_weight('min-snr', min_snr_gamma=2.0)
    torch.testing.assert_close(w(sigma), torch.tensor([2.0, 2.0, 1.0, 1 / 16], dtype=torch.float64))
    assert np.allclose(min_snr_weight(np.array([0.1, 2.0]), gamma=5.0), [5.0, 0.25])


@pytest.mark.parametrize('bad', [0.0, -1.0, float('nan')])
def test_library_refuses_bad_parameters(bad):
    with pytest.raises(ValueError, match='gamma'):
        infonoise.get_weight('min-snr', min_snr_gamma=bad)
    with pytest.raises(ValueError, match='scale'):
        LaplaceSampler(b=bad)
    with pytest.raises(ValueError, match='history'):
        KingmaGaoSampler(GRID, history=0)
    with pytest.raises(ValueError, match='gamma'):
        EDMLoss(weighting='min-snr', min_snr_gamma=bad)


@pytest.mark.parametrize('args, phrase', [
    (['--weighting', 'min-snr', '--min-snr-gamma', '0'], '--min-snr-gamma'),
    (['--sigma-dist', 'laplace', '--laplace-b', '-1'], '--laplace-b'),
    (['--sigma-dist', 'loss-second-moment', '--rival-history', '0'], '--rival-history'),
    (['--sigma-dist', 'kingma-gao', '--rival-uniform', '1'], '--rival-uniform'),
    (['--sigma-dist', 'laplace', '--laplace-mu', 'nan'], '--laplace-mu'),
    (['--weighting', 'min-snr', '--min-snr-gamma', 'inf'], '--min-snr-gamma'),
])
def test_cli_refuses_bad_parameters_in_one_sentence(tmp_path, args, phrase):
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--preset', 'digits-demo', *args])
    assert_clean_error(result, phrase)


@pytest.mark.parametrize('cls', [LossSecondMomentSampler, KingmaGaoSampler, CDCDSampler])
def test_state_round_trip_continues_bitwise(cls):
    gen = torch.Generator().manual_seed(5)

    def run(sampler, steps, g):
        out = []
        for _ in range(steps):
            sigma = sampler.sample(64, generator=g)
            sampler.observe(sigma, sigma ** 2 / (sigma ** 2 + 0.25) * (0.5 + torch.rand(64, generator=g)))
            sampler.step()
            out.append(sigma)
        return torch.cat(out)

    a = cls(GRID, history=3, log_every=4)
    run(a, 6, gen)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = cls(GRID, history=3, log_every=4)
    b.load_state_dict(torch.load(buf, weights_only=True))
    state = gen.get_state()
    ga = torch.Generator()
    ga.set_state(state)
    gb = torch.Generator()
    gb.set_state(state)
    assert torch.equal(run(a, 5, ga), run(b, 5, gb))
    assert torch.equal(a.state_dict()['mass'], b.state_dict()['mass'])
    assert a.profile()['refreshes'] == b.profile()['refreshes'] == 11
    with pytest.raises(ValueError, match='bins'):
        cls(SigmaGrid(0.002, 80.0, K + 1), history=3).load_state_dict(a.state_dict())


def test_step_reports_every_log_every_steps_and_profile_has_the_shared_keys():
    s = KingmaGaoSampler(GRID, history=2, log_every=3)
    reported = []
    for _ in range(7):
        sigma = s.sample(16)
        s.observe(sigma, torch.ones(16))
        reported.append(s.step())
    assert reported == [False, False, True, False, False, True, False]
    prof = s.profile()
    for key in ('sigma', 'edges', 'pi', 'counts', 'step', 'refreshes'):
        assert key in prof
    assert prof['step'] == prof['refreshes'] == 7
    assert abs(float(np.sum(prof['pi'] * GRID.widths.numpy())) - 1) < 1e-12
    # φ of an importance sampler is the base (log-uniform) emphasis times w, whatever π is.
    sig = GRID.sigma.numpy()
    w = (sig ** 2 + 0.25) / (sig * 0.5) ** 2
    np.testing.assert_allclose(prof['phi'], w / K / GRID.widths.numpy(), rtol=1e-12)
    json_line = infonoise.profile_to_json(prof)
    assert json_line['pi'] == pytest.approx(list(prof['pi']))


def test_uncertainty_weighting_is_edm2s_and_its_u_survives_a_safe_snapshot_load():
    loss_fn = EDMLoss(uncertainty=True)
    sigma = torch.tensor([0.01, 0.3, 2.0, 50.0])
    assert torch.equal(loss_fn.logvar(sigma), torch.zeros(4))     # starts at the base objective
    with torch.no_grad():
        loss_fn.logvar.linear.weight.normal_(std=0.05, generator=torch.Generator().manual_seed(0))
        loss_fn.logvar.linear.bias.fill_(0.3)
    u = loss_fn.logvar(sigma)
    # Hand formula: u = b + Σ_i a_i √2 cos(2π(f_i ln(σ)/4 + φ_i)).
    lin = loss_fn.logvar.linear
    c = sigma.double().log()[:, None] / 4
    feats = math.sqrt(2) * torch.cos(2 * math.pi * (c * loss_fn.logvar.freqs.double() + loss_fn.logvar.phases.double()))
    torch.testing.assert_close(u.double(), feats @ lin.weight.double()[0] + 0.3, rtol=1e-5, atol=1e-5)

    # The per-element loss (w/e^u)·(D − y)² + u with the sampler's σ (fixed here through a one-point sampler).
    class Fixed:
        def sample(self, n, device=None, generator=None):
            return torch.full((n,), 2.0)
    loss_fn.sigma_sampler = Fixed()
    images = torch.randn(3, 1, 2, 2)
    torch.manual_seed(1)
    got = loss_fn(lambda x, s, labels=None, augment_labels=None: 0 * x, images)
    u2 = loss_fn.logvar(torch.tensor([2.0]))
    w = (4 + 0.25) / (2 * 0.5) ** 2
    torch.testing.assert_close(got, w / u2.exp() * images ** 2 + u2, rtol=1e-6, atol=1e-6)
    assert [p.shape for p in loss_fn.trainable_parameters()] == [torch.Size([1, 128]), torch.Size([1])]

    buf = io.BytesIO()
    persistence.dump_network_pickle(dict(loss_fn=loss_fn), buf)
    buf.seek(0)
    loaded = persistence.load_network_pickle(buf, class_map=class_map())['loss_fn']
    assert torch.equal(loaded.logvar.linear.weight, loss_fn.logvar.linear.weight)
    assert torch.equal(loaded.logvar(sigma), loss_fn.logvar(sigma))
    assert EDMLoss().trainable_parameters() == []


def test_sd3_logit_normal_is_the_lognormal_sampler():
    """SD3's logit-normal t (logit t ~ N(μ, s²)) with σ = t/(1 − t) is ln σ ~ N(μ, s²): LogNormalSampler."""
    mu, s = 0.2, 1.1
    t = torch.sigmoid(mu + s * torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    sigma_sd3 = (t / (1 - t)).numpy()
    sigma_ln = infonoise.LogNormalSampler(mu, s).sample(200_000, generator=torch.Generator().manual_seed(1)).numpy()
    assert scipy.stats.ks_2samp(sigma_sd3, sigma_ln).pvalue > 1e-3


@pytest.mark.gpu
@pytest.mark.parametrize('cls', [LossSecondMomentSampler, KingmaGaoSampler, CDCDSampler])
def test_no_host_sync_per_step_on_cuda(cls):
    device = torch.device('cuda')
    s = cls(GRID, history=4, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(3):                                  # allocator and kernels warm
        sigma = s.sample(256, device=device, generator=gen)
        s.importance_weight(sigma)
        s.observe(sigma, sigma ** 2)
        s.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(5):
            sigma = s.sample(256, device=device, generator=gen)
            s.importance_weight(sigma)
            s.observe(sigma, sigma ** 2)
            s.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert s.profile()['refreshes'] == 8


# Kill-and-resume through train.py: 64 images per step in 2 rounds of 32, a state every tick (5 steps); the rival's
# table is rebuilt every step and the uncertainty u(σ) is trained, so both change across the resume point.
SMALL = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 64, '--batch-gpu', 32, '--workers', 0,
         '--grid', 0, '--plot', 0, '--seed', 3, '--deterministic', '--tick', 0.32, '--snap', 1, '--dump', 1,
         '--infonoise-bins', 8, '--infonoise-refresh', 3, '--rival-history', 2]


def _run(outdir, *args):
    return CliRunner().invoke(train.main, [str(a) for a in ['--outdir', outdir, '--nosubdir', *args]])


def _assert_tree_equal(a, b, path=''):
    if isinstance(a, torch.Tensor):
        assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_tree_equal(a[key], b[key], f'{path}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_tree_equal(x, y, f'{path}[{i}]')
    else:
        assert a == b, path


@pytest.mark.usefixtures('one_torch_thread')
@pytest.mark.parametrize('dist, weighting', [('loss-second-moment', 'uncertainty'), ('cdcd', 'min-snr')])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, dist, weighting):
    from training import checkpoint
    extra = ['--sigma-dist', dist, '--weighting', weighting]
    straight, part, resumed = tmp_path / 'straight', tmp_path / 'part', tmp_path / 'resumed'
    result = _run(straight, *SMALL, *extra, '--kimg', 1.28)
    assert result.exit_code == 0, result.output
    result = _run(part, *SMALL, *extra, '--kimg', 0.64)
    assert result.exit_code == 0, result.output
    result = _run(resumed, '--resume', part, '--kimg', 1.28)
    assert result.exit_code == 0, result.output
    a = checkpoint.load_training_state(str(straight / 'training-state-000001.pt'))
    b = checkpoint.load_training_state(str(resumed / 'training-state-000001.pt'))
    assert a['cur_nimg'] == b['cur_nimg'] == 1280
    for key in ('net', 'ema', 'optimizer', 'ranks', 'loss_params', 'data'):
        _assert_tree_equal(a[key], b[key], key)
    assert a['ranks'][0]['sigma_sampler']['refreshes'] == 20
    if weighting == 'uncertainty':
        assert len(a['loss_params']) == 2 and a['loss_params'][0].abs().sum() > 0    # u(σ) was trained
    with open(straight / 'training_options.json') as f:
        text = f.read()
    assert f'"sigma_dist": "{dist}"' in text and f'"weighting": "{weighting}"' in text


def test_bench_sampler_reports_every_sampler_as_a_fraction_of_the_step(tmp_path):
    import json

    from scripts import bench_sampler
    args = ['--device', 'cpu', '--quick', '--batch', '64', '--bins', '16', '--step-ms', '50']
    result = CliRunner().invoke(bench_sampler.main, args + ['--json', '-'])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    result = CliRunner().invoke(bench_sampler.main, args + ['--json', str(tmp_path / 'r.json')])
    assert result.exit_code == 0, result.output
    assert '% of step' in result.output
    written = json.loads((tmp_path / 'r.json').read_text())
    assert set(written['results'][0]['per_step_us']) == set(out['results'][0]['per_step_us'])
    (row,) = out['results']
    assert set(row['per_step_us']) == {'infonoise', 'loss-second-moment', 'kingma-gao', 'cdcd', 'laplace'}
    for name, us in row['per_step_us'].items():
        assert us > 0
        assert row['fraction_of_step'][name] == pytest.approx(us / 50e3)
    missing = tmp_path / 'no-such-folder' / 'sampler.json'
    result = CliRunner().invoke(bench_sampler.main, ['--device', 'cpu', '--quick', '--json', str(missing)])
    assert_clean_error(result, 'does not exist', '--json')
    assert result.exit_code == 2 and not missing.parent.exists()
    if not torch.cuda.is_available():        # the same sentence as every other CLI's --device cuda
        result = CliRunner().invoke(bench_sampler.main, ['--device', 'cuda', '--quick'])
        assert_clean_error(result, 'CUDA is not available on this machine.', '--device')


@pytest.mark.usefixtures('one_torch_thread')
def test_a_rival_run_is_named_plotted_and_refused_by_infogrid_in_one_sentence(tmp_path):
    """A rival has π and counts but no entropy rate: the status line shows no pivot, the end-of-run plot and the
    start-up summary name the schedule and the weighting, the profile plot draws what it has, and InfoGrid says
    it needs an InfoNoise profile."""
    import json

    import generate
    from scripts import infonoise_profile
    from training.metrics import plotting
    run_dir = tmp_path / 'run'
    result = _run(run_dir, *SMALL, '--sigma-dist', 'kingma-gao', '--weighting', 'uncertainty', '--plot', 1,
                  '--kimg', 0.64)
    assert result.exit_code == 0, result.output
    assert '(weighting uncertainty: edm times the learned 1/e^u(σ))' in result.output
    log = (run_dir / 'log.txt').read_text()
    assert 'Saved the kingma-gao profile plot' in log
    status = [line for line in log.splitlines() if ' tick ' in line and 'peak ' in line]
    assert status and not any('pivot' in line for line in status)
    assert (run_dir / 'infonoise-profile.png').stat().st_size > 1000

    plots = CliRunner().invoke(infonoise_profile.main, ['plot', str(run_dir / 'infonoise.jsonl'),
                                                        '--outdir', str(tmp_path / 'plots')])
    assert plots.exit_code == 0, plots.output
    assert 'InfoGrid needs an InfoNoise profile' in plots.output
    for name in ('profile.png', 'grids.png', 'emergence.png'):
        assert (tmp_path / 'plots' / name).stat().st_size > 1000
    last = infonoise.profile_from_json(json.loads((run_dir / 'infonoise.jsonl').read_text().splitlines()[-1]))
    assert [key for key, _ in plotting.profile_panels(last)] == ['counts', 'pi', 'phi', 'u']   # no rate: no ρ
    assert last['counts'].sum() > 0 and np.isfinite(last['pi']).all()

    snapshot = sorted(run_dir.glob('network-snapshot-*.pkl'))[-1]
    refused = CliRunner().invoke(generate.main, ['--network', str(snapshot), '--outdir', str(tmp_path / 'out'),
                                                 '--seeds', '0', '--steps', 4, '--infogrid'])
    assert_clean_error(refused, 'InfoGrid needs an InfoNoise profile')
