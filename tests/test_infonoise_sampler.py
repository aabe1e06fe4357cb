"""InfoNoiseSampler: FIFO estimator, refresh schedule, table sampling, resume, exact-truth recovery."""
import collections
import io
import math

import numpy as np
import pytest
import torch

import infonoise
from infonoise import (GaussianMixture, InfoNoiseSampler, LogNormalSampler, LogUniformSampler, SigmaGrid,
                       edm_weight, unit_weight)

GRID = SigmaGrid(0.002, 80.0, 64)


def make(grid=GRID, **kwargs):
    kwargs.setdefault('base', LogUniformSampler(grid.sigma_min, grid.sigma_max))
    kwargs.setdefault('min_count', 1)
    return InfoNoiseSampler(grid, **kwargs)


def gaussian_mse(sigma, s=0.5):
    """Per-element mmse of N(0, s²): s² σ² / (s² + σ²)."""
    return s ** 2 * sigma ** 2 / (s ** 2 + sigma ** 2)


def fill_exact(sampler, n=64 * 200, seed=0, mse=gaussian_mse):
    """Observe noise-free losses mse(σ) at log-uniform σ covering every bin."""
    g = torch.Generator().manual_seed(seed)
    sigma = LogUniformSampler(sampler.grid.sigma_min, sampler.grid.sigma_max).sample(n, generator=g)
    sampler.observe(sigma, mse(sigma.double()).float())


# ----------------------------------------------------------------------------------------- arguments

@pytest.mark.parametrize('kwargs, name', [
    (dict(warmup_steps=-1), 'warmup_steps'), (dict(refresh_every=0), 'refresh_every'),
    (dict(buffer_size=0), 'buffer_size'), (dict(min_count=0), 'min_count'), (dict(ema=0), 'ema'),
    (dict(ema=1.5), 'ema'), (dict(gate_n=0), 'gate_n'), (dict(gate_n=-3), 'gate_n'),
    (dict(endpoint='images'), 'endpoint'), (dict(onset_p=0), 'onset_p'), (dict(onset_p=1), 'onset_p'),
    (dict(floor=1.0), 'floor'), (dict(floor=-0.1), 'floor'), (dict(smooth=-1), 'smooth'),
    (dict(weight_fn='karras'), 'weight'), (dict(weight_fn=lambda s: -s), 'weight_fn'),
    (dict(base=object()), 'base'), (dict(refresh_every=2.5), 'refresh_every'),
    (dict(min_count=33, buffer_size=32), 'min_count'), (dict(freeze_after=-1), 'freeze_after'),
])
def test_constructor_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make(**kwargs)
    with pytest.raises(ValueError, match='grid'):
        InfoNoiseSampler((0.002, 80, 64))


def test_defaults_match_the_design():
    s = InfoNoiseSampler(GRID)
    assert isinstance(s.base, LogNormalSampler) and s.weight_fn is edm_weight
    assert (s.warmup_steps, s.refresh_every, s.buffer_size, s.ema, s.min_count) == (2000, 200, 512, 0.1, 32)
    assert (s.gate_n, s.endpoint, s.onset_p, s.floor, s.smooth) == (3, 'continuous', 2e-3, 0.05, 0)
    assert s.freeze_after == 0                               # the paper refreshes to the end


def test_freeze_keeps_the_last_table_while_the_losses_move_on():
    """Refreshes at steps 2, 4, 6, ... until step F = 4; afterwards the losses change to another profile (a
    Gaussian of std 2 instead of 0.5) and the frozen sampler keeps drawing from its step-4 table, while the
    unfrozen one rebuilds from the new losses."""
    runs = {}
    for freeze in (0, 4):
        s = make(warmup_steps=0, refresh_every=2, buffer_size=64, floor=0.0, ema=1.0, freeze_after=freeze)
        rebuilt, tables = [], {}
        for step in range(1, 11):
            fill_exact(s, n=64 * 8, seed=step, mse=gaussian_mse if step <= 4 else lambda x: gaussian_mse(x, 2.0))
            rebuilt.append(s.step())
            tables[step] = s.profile()['pi'].copy()
        runs[freeze] = ([i + 1 for i, r in enumerate(rebuilt) if r], tables)
    assert runs[0][0] == [2, 4, 6, 8, 10] and runs[4][0] == [2, 4]
    np.testing.assert_array_equal(runs[4][1][10], runs[4][1][4])
    np.testing.assert_array_equal(runs[4][1][4], runs[0][1][4])                  # identical up to the freeze
    assert np.abs(runs[0][1][10] - runs[0][1][4]).max() > 0.01 * runs[0][1][4].max()   # the profile did move


def test_observe_rejects_bad_shapes_and_devices():
    s = make(device='cpu')
    with pytest.raises(ValueError, match='loss'):
        s.observe(torch.ones(4), torch.ones(5))
    with pytest.raises(ValueError, match='loss'):
        s.observe(torch.ones(4), torch.ones(4, 1))
    with pytest.raises(ValueError, match='sigma'):
        s.observe(torch.ones(4, 2), torch.ones(4))
    with pytest.raises(ValueError, match='sampler lives on'):
        s.observe(torch.ones(4, device='meta'), torch.ones(4, device='meta'))
    with pytest.raises(ValueError, match='on'):
        s.observe(torch.ones(4), torch.ones(4, device='meta'))
    s.observe(torch.ones(4, 1, 1, 1), torch.ones(4))        # [N, 1, 1, 1] σ as the losses produce it
    assert int(s.profile()['counts'].sum()) == 4


# ----------------------------------------------------------------------------------------- estimator

def test_fifo_buffers_match_a_brute_force_deque_per_bin():
    K, B = 8, 5
    grid = SigmaGrid(0.1, 10.0, K)
    s = make(grid, buffer_size=B)
    ref = [collections.deque(maxlen=B) for _ in range(K)]
    rng = np.random.default_rng(0)
    for step in range(40):
        n = int(rng.integers(1, 30))
        # Concentrate some batches in few bins so one batch often overflows a bin's capacity.
        hi = 10.0 if step % 3 else 0.3
        sigma = np.exp(rng.uniform(math.log(0.05), math.log(hi), n))
        loss = rng.random(n)
        s.observe(torch.from_numpy(sigma).float(), torch.from_numpy(loss).float())
        for sig, l in zip(torch.from_numpy(sigma).float().double().numpy(), np.float32(loss)):
            k = min(max(np.searchsorted(grid.edges.numpy(), sig, side='right') - 1, 0), K - 1)
            ref[k].append(l)
    state = s.state_dict()
    fill = np.minimum(state['total'][:K].numpy(), B)
    for k in range(K):
        assert fill[k] == len(ref[k])
        got = np.sort(state['buf'][k, :fill[k]].numpy())
        np.testing.assert_array_equal(got, np.sort(np.array(ref[k], dtype=np.float32)))


def test_nonfinite_losses_are_dropped_counted_and_never_stored():
    s = make(buffer_size=16)
    sigma = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, float('nan'), -1.0, 0.0])
    loss = torch.tensor([1.0, float('nan'), float('inf'), -float('inf'), 2.0, 1.0, 1.0, 1.0])
    s.observe(sigma, loss)
    prof = s.profile()
    assert prof['dropped_nonfinite'] == 5 and prof['counts'].sum() == 3 and prof['counts'][0] == 1   # σ = 0
    state = s.state_dict()
    assert torch.isfinite(state['buf']).all()
    assert sorted(state['buf'][:64].flatten()[state['buf'][:64].flatten() != 0].tolist()) == [1.0, 1.0, 2.0]


def test_sigma_outside_the_grid_lands_in_the_edge_bins():
    s = make(buffer_size=8)
    s.observe(torch.tensor([1e-6, 1e-3, 100.0, 1e6]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    counts = s.profile()['counts']
    assert counts[0] == 2 and counts[-1] == 2 and counts.sum() == 4
    buf = s.state_dict()['buf']
    assert sorted(buf[0, :2].tolist()) == [1.0, 2.0] and sorted(buf[63, :2].tolist()) == [3.0, 4.0]


# ----------------------------------------------------------------------------------------- schedule

def test_warmup_draws_come_from_the_base_and_refreshes_follow_the_schedule():
    s = make(warmup_steps=5, refresh_every=3, min_count=2, buffer_size=64, floor=0.0)
    base = LogUniformSampler(0.002, 80)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    rebuilt = []
    for step in range(1, 13):
        sigma = s.sample(256, generator=g1)
        if step <= 6:                                        # first refresh happens at step 6
            assert torch.equal(sigma, base.sample(256, generator=g2))
        s.observe(sigma, gaussian_mse(sigma.double()).float())
        fill_exact(s, n=64 * 4, seed=step)
        rebuilt.append(s.step())
    assert [i + 1 for i, r in enumerate(rebuilt) if r] == [6, 9, 12]
    assert s.profile()['refreshes'] == 3 and s.profile()['step'] == 12


def test_refresh_needs_min_count_in_every_bin():
    s = make(warmup_steps=0, refresh_every=1, min_count=3, buffer_size=8, floor=0.0)
    sigma = GRID.sigma.float()
    s.observe(sigma[1:], torch.ones(63))
    s.observe(sigma.repeat(2), torch.ones(128))
    assert s.step() is False                                 # bin 0 holds 2 < 3
    s.observe(sigma[:1], torch.ones(1))
    assert s.step() is True


def test_first_refresh_uses_bin_means_then_ema():
    K = 16
    grid = SigmaGrid(0.01, 10.0, K)
    s = make(grid, warmup_steps=0, refresh_every=1, min_count=1, buffer_size=4, ema=0.25, floor=0.0)
    rng = np.random.default_rng(3)
    means = []
    for rnd in range(2):
        losses = rng.random((K, 4)) + 0.5
        s.observe(grid.sigma.float().repeat(4), torch.from_numpy(losses.T.reshape(-1)).float())
        assert s.step() is True
        means.append(losses.astype(np.float32).astype(np.float64).mean(1))
    expected = 0.75 * means[0] + 0.25 * means[1]
    prof = s.profile()
    np.testing.assert_allclose(prof['mse'], expected, rtol=1e-6)
    sig = grid.sigma.numpy()
    np.testing.assert_allclose(prof['rate'], expected / sig ** 3, rtol=1e-6)
    # Onset pivot brute force: smallest centre with r̄ < p at it and everywhere above it.
    r_bar = prof['rate'] / prof['rate'].max()
    ok = [k for k in range(K) if np.all(r_bar[k:] < 2e-3)]
    assert prof['pivot'] == (sig[ok[0]] if ok else sig[-1])
    gate = sig ** 3 / (sig ** 3 + prof['pivot'] ** 3)
    np.testing.assert_allclose(prof['gated_rate'], prof['rate'] * gate, rtol=1e-12)


def test_starved_bins_switch_on_the_floor_until_a_refresh_succeeds():
    # Log-normal draws essentially never reach the top bins of [0.002, 80].
    def run(floor):
        s = InfoNoiseSampler(GRID, base=LogNormalSampler(), warmup_steps=2, refresh_every=2, min_count=2,
                             buffer_size=64, floor=floor)
        g = torch.Generator().manual_seed(0)
        for _ in range(60):
            sigma = s.sample(512, generator=g)
            s.observe(sigma, gaussian_mse(sigma.double()).float())
            if s.step():
                return s
        return s
    assert run(0.0).profile()['refreshes'] == 0
    s = run(0.2)
    assert s.profile()['refreshes'] == 1 and s.profile()['counts'].min() >= 2


def test_discrete_endpoint_and_smoothing_end_to_end():
    c0 = 0.3

    def mse(sigma):      # a power law σ^-1 in the rate below c0, σ^-4 above: a break at c0
        return sigma ** 3 * sigma ** -1.0 * (1 + (sigma / c0) ** 30) ** (-3.0 / 30)
    s = make(warmup_steps=0, refresh_every=1, min_count=8, buffer_size=512, endpoint='discrete', smooth=1,
             weight_fn=unit_weight)
    fill_exact(s, n=64 * 100, mse=mse)
    assert s.step()
    prof = s.profile()
    assert abs(math.log(prof['pivot'] / c0)) <= 2 * GRID.log_width
    np.testing.assert_allclose(prof['rate'], infonoise.log_smooth(prof['mse'] / GRID.sigma.numpy() ** 3, 1))


# ----------------------------------------------------------------------------------------- table sampling

def refreshed(weight_fn, floor, smooth=0):
    s = make(warmup_steps=0, refresh_every=1, min_count=4, buffer_size=256, weight_fn=weight_fn, floor=floor,
             smooth=smooth)
    fill_exact(s, mse=lambda sg: gaussian_mse(sg) * (1 + 0.5 * torch.sin(3 * sg.log())))
    assert s.step() is True
    return s


def test_table_from_mse_rebuilds_the_refresh_and_leaves_the_sampler_alone():
    s = make(warmup_steps=0, refresh_every=1, min_count=4, buffer_size=256, weight_fn=unit_weight, floor=0.1,
             endpoint='discrete', smooth=1)
    fill_exact(s, mse=lambda sg: gaussian_mse(sg) * (1 + 0.5 * torch.sin(3 * sg.log())))
    assert s.step()
    before = s.profile()
    built = s.table_from_mse(before['mse'])
    assert built['pivot'] == before['pivot']                             # the same rule on the same numbers
    for key in ('rate', 'gated_rate', 'pi'):
        np.testing.assert_array_equal(built[key], before[key])
    after = s.profile()
    assert all(np.array_equal(after[k], before[k], equal_nan=True) for k in before if isinstance(before[k], np.ndarray))
    # A held pivot: r̃ = r · σ³/(σ³ + c³) by hand, and π = 0.9 · r̃/Σ r̃Δσ + 0.1 · log-uniform.
    sigma, edges, widths = GRID.sigma.numpy(), GRID.edges.numpy(), GRID.widths.numpy()
    held = s.table_from_mse(before['mse'], pivot=0.7)
    gated = before['rate'] * sigma ** 3 / (sigma ** 3 + 0.7 ** 3)
    loguniform = np.log(edges[1:] / edges[:-1]) / math.log(80 / 0.002) / widths    # bin-averaged 1/(σ log R)
    np.testing.assert_allclose(held['gated_rate'], gated, rtol=1e-12)
    np.testing.assert_allclose(held['pi'], 0.9 * gated / np.sum(gated * widths) + 0.1 * loguniform, rtol=1e-12)
    with pytest.raises(ValueError, match='one value per bin'):
        s.table_from_mse(before['mse'][:-1])


def test_band_shares_by_hand():
    # density 0.5 on [1, 2) and 0.25 on [2, 4): masses 0.5 and 0.5, flat in σ inside each bin.
    assert infonoise.band_shares([1, 2, 4], [0.5, 0.25], [1.5]).tolist() == [0.25, 0.75]
    np.testing.assert_allclose(infonoise.band_shares([1, 2, 4], [0.5, 0.25], [0.5, 3, 10]), [0, 0.75, 0.25, 0])


def test_sampled_histogram_matches_the_table_with_floor():
    f = 0.05
    s = refreshed(unit_weight, floor=f)
    prof = s.profile()
    draws = s.sample(2_000_000, generator=torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float32 and bool((draws > 0).all())
    # Four sub-bins per bin: inside a bin the table's CDF is linear in σ, the floor's in log σ.
    e = GRID.edges.numpy()
    sub = np.concatenate([np.linspace(e[k], e[k + 1], 5)[:-1] for k in range(64)] + [[e[-1]]])
    rho_sub = np.repeat(prof['rho'], 4)                 # unit weight: π_table = ρ
    expected = (1 - f) * rho_sub * np.diff(sub) + f * np.diff(np.log(sub)) / math.log(80 / 0.002)
    hist = np.histogram(draws.double().numpy(), bins=sub)[0] / draws.numel()
    assert expected.sum() == pytest.approx(1.0, abs=1e-12)
    assert 0.5 * np.abs(hist - expected).sum() <= 0.01
    np.testing.assert_allclose(prof['pi'], (1 - f) * prof['rho'] + f / (64 * GRID.widths.numpy()), rtol=1e-12)


def test_phi_is_proportional_to_rho_under_the_edm_weight():
    s = refreshed(edm_weight, floor=0.0)
    prof = s.profile()
    ratio = prof['phi'] / prof['rho']
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)
    np.testing.assert_allclose(prof['phi'], prof['pi'] * edm_weight(GRID.sigma.numpy()), rtol=1e-12)
    assert np.sum(prof['pi'] * GRID.widths.numpy()) == pytest.approx(1.0)
    np.testing.assert_allclose(prof['u'], np.concatenate([[0], np.cumsum(prof['rho'] * GRID.widths.numpy())]))
    draws = s.sample(1_000_000, generator=torch.Generator().manual_seed(1)).double().numpy()
    hist = np.histogram(draws, bins=GRID.edges.numpy())[0] / draws.size
    assert 0.5 * np.abs(hist - prof['pi'] * GRID.widths.numpy()).sum() <= 0.01


# ----------------------------------------------------------------------------------------- exact truth

def feed_oracle(denoise, x0, sampler, seed):
    g = torch.Generator().manual_seed(seed)
    sigma = LogUniformSampler(0.002, 80).sample(x0.shape[0], generator=g).double()
    x = x0 + sigma[:, None] * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    error = (denoise(x, sigma) - x0).square().mean(1)
    for chunk in range(0, x0.shape[0], 8192):
        sampler.observe(sigma[chunk:chunk + 8192].float(), error[chunk:chunk + 8192].float())
    assert sampler.step() is True
    return sampler.profile()


def test_recovers_the_closed_form_gaussian_rate_in_every_bin():
    d, s2 = 10, 0.25
    x0 = 0.5 * torch.randn(200_000, d, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    sampler = make(warmup_steps=0, refresh_every=1, min_count=1, buffer_size=8192)
    prof = feed_oracle(lambda x, sg: s2 / (s2 + sg[:, None] ** 2) * x, x0, sampler, seed=8)
    sig = prof['sigma']
    truth = d * s2 * sig ** 2 / (s2 + sig ** 2) / sig ** 3
    rel = np.abs(prof['rate'] * d / truth - 1)           # observe takes the per-element mean
    assert rel.max() <= 0.12, rel.max()


def test_recovers_the_exact_gaussian_mixture_rate_in_every_bin():
    d = 10
    gm = GaussianMixture(d, m=1.0, s=0.5, p=0.8)
    x0 = gm.sample(200_000, generator=torch.Generator().manual_seed(9))
    sampler = make(warmup_steps=0, refresh_every=1, min_count=1, buffer_size=8192)
    prof = feed_oracle(gm.denoise, x0, sampler, seed=10)
    truth = gm.rate(prof['sigma'])
    rel = np.abs(prof['rate'] * d / truth - 1)
    assert rel.max() <= 0.12, rel.max()


# ----------------------------------------------------------------------------------------- resume

def test_exact_resume_through_a_refresh_boundary():
    def make_run():
        return make(warmup_steps=3, refresh_every=4, min_count=2, buffer_size=32, floor=0.1, smooth=1)

    def advance(s, gen, noise, steps):
        out = []
        for _ in range(steps):
            sigma = s.sample(300, generator=gen)
            loss = gaussian_mse(sigma.double()) * (1 + 0.1 * torch.rand(300, generator=noise, dtype=torch.float64))
            s.observe(sigma, loss.float())
            out.append((sigma, s.step()))
        return out

    a = make_run()
    gen, noise = torch.Generator().manual_seed(11), torch.Generator().manual_seed(12)
    advance(a, gen, noise, 6)
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    gen_state, noise_state = gen.get_state(), noise.get_state()
    tail_a = advance(a, gen, noise, 11)                  # refreshes at steps 8, 12, 16

    b = make_run()
    blob.seek(0)
    b.load_state_dict(torch.load(blob, weights_only=True))
    gen.set_state(gen_state), noise.set_state(noise_state)
    tail_b = advance(b, gen, noise, 11)
    assert [r for _, r in tail_a] == [r for _, r in tail_b] and sum(r for _, r in tail_a) == 3
    for (sa, _), (sb, _) in zip(tail_a, tail_b):
        assert torch.equal(sa, sb)
    pa, pb = a.profile(), b.profile()
    for key in ('mse', 'rate', 'pi', 'counts'):
        np.testing.assert_array_equal(pa[key], pb[key])


def test_state_dict_holds_only_tensors_and_numbers_and_checks_shape():
    s = refreshed(edm_weight, floor=0.05)

    def check(v):
        if isinstance(v, dict):
            for x in v.values():
                check(x)
        else:
            assert isinstance(v, (torch.Tensor, int, float)) and not isinstance(v, bool)
    check(s.state_dict())
    with pytest.raises(ValueError, match='bins'):
        make(SigmaGrid(0.002, 80, 32)).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match='lacks'):
        make().load_state_dict({'step': 3})


# ----------------------------------------------------------------------------------------- GPU

@pytest.mark.gpu
def test_sample_and_observe_do_not_synchronise_on_cuda():
    s = make(warmup_steps=0, refresh_every=1, min_count=1, buffer_size=64, device='cuda')
    sigma = LogUniformSampler().sample(64 * 64, device='cuda')
    s.observe(sigma, gaussian_mse(sigma))
    assert s.step() is True
    gen = torch.Generator(device='cuda').manual_seed(0)
    poison = torch.ones(512, device='cuda')
    poison[0] = float('nan')                                 # one non-finite loss per batch
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for _ in range(3):
            sigma = s.sample(512, device='cuda', generator=gen)
            s.observe(sigma, gaussian_mse(sigma) * poison)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert sigma.device.type == 'cuda' and s.profile()['dropped_nonfinite'] == 3
    cpu = make(warmup_steps=0, refresh_every=1, min_count=1, buffer_size=64)
    cpu.load_state_dict(s.state_dict())
    assert cpu.profile()['counts'].sum() == s.profile()['counts'].sum()


@pytest.mark.parametrize('floor', [1e-6, 1e-4, 0.01, 0.3])
def test_small_floors_sample_log_uniformly_without_overflow(floor):
    # The floor used to precompute R^(1/floor), which overflows for floor <= ~0.015 (R = 4e4).
    s = InfoNoiseSampler(GRID, base=LogNormalSampler(), floor=floor, warmup_steps=0, refresh_every=1,
                         min_count=1, buffer_size=8)
    fill_exact(s, mse=gaussian_mse)
    assert s.step()
    g = torch.Generator().manual_seed(1)
    u = torch.rand(400_000, generator=g, dtype=torch.float64) * floor   # the floor's part of u-space
    floor_draws = s._floor_sigma(u)
    assert bool(torch.isfinite(floor_draws).all())
    z = (floor_draws.log() - math.log(0.002)) / math.log(80 / 0.002)  # log-uniform <=> z ~ U[0, 1)
    assert float(z.min()) >= -1e-9 and float(z.max()) < 1 + 1e-9
    assert abs(float(z.mean()) - 0.5) < 0.005 and abs(float((z ** 2).mean()) - 1 / 3) < 0.005
    draws = s.sample(100_000, generator=g)
    assert bool((draws >= 0.002 * (1 - 1e-6)).all() and (draws <= 80 * (1 + 1e-6)).all())


def test_readme_loop_recovers_from_starvation_by_routing_the_floor_to_unfilled_bins():
    # The README's snippet: batch 64, warm-up 100, refresh 50, min-count 8. The log-normal base never reaches
    # the top bins; a floor spread over all 64 bins fills each at ~0.05 losses/step, so no refresh came in 400
    # steps. Routed to the unfilled bins only, the floor fills them and the first refresh comes at step 250.
    s = InfoNoiseSampler(GRID, base=LogNormalSampler(), weight_fn=edm_weight, warmup_steps=100, refresh_every=50,
                         buffer_size=512, ema=0.1, min_count=8)
    g = torch.Generator().manual_seed(0)
    first, seen = None, {}
    for step in range(1, 401):
        sigma = s.sample(64, generator=g)
        s.observe(sigma, gaussian_mse(sigma.double()).float())
        if s.step() and first is None:
            first = step
        if step in (150, 200):
            prof = s.profile()
            seen[step] = (prof['starved'], prof['starved_bins'], prof['counts'])
    assert first is not None and first <= 300
    assert seen[150][0] == 1 and 0 < seen[150][1] < 64
    assert seen[200][1] < seen[150][1]          # the unfilled set shrinks
    # While starved, the floor's mass sits on the unfilled bins only (the profile says so too).
    starved = InfoNoiseSampler(GRID, base=LogNormalSampler(), warmup_steps=0, refresh_every=1, min_count=8,
                               buffer_size=8, floor=0.5)
    sigma = torch.full((64,), 1.0)
    starved.observe(sigma, gaussian_mse(sigma))
    assert not starved.step()
    prof = starved.profile()
    unfilled = prof['counts'] < 8
    assert prof['starved'] == 1 and prof['starved_bins'] == int(unfilled.sum()) == 63
    filled = int(np.flatnonzero(~unfilled)[0])
    base_pi = LogNormalSampler().profile(GRID)['pi']
    assert prof['pi'][filled] == pytest.approx(0.5 * base_pi[filled], rel=1e-12)   # no floor mass there
    draws = starved.sample(400_000, generator=torch.Generator().manual_seed(2))
    hist = np.bincount(GRID.bin_index(draws).numpy(), minlength=64) / draws.numel()
    assert 0.5 * np.abs(hist - prof['pi'] * GRID.widths.numpy()).sum() < 0.01
    # Exact resume keeps the starved routing.
    again = InfoNoiseSampler(GRID, base=LogNormalSampler(), warmup_steps=0, refresh_every=1, min_count=8,
                             buffer_size=8, floor=0.5)
    again.load_state_dict(starved.state_dict())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(starved.sample(1000, generator=g1), again.sample(1000, generator=g2))
