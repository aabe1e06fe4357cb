"""generate.py and training.generation: per-seed reproducibility, σ grids, InfoGrid, ablations, bad input."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from helpers import assert_clean_error
from click.testing import CliRunner

import generate
import infonoise
from torch_utils import persistence
from training import generation
from training import sampler as samplers
from training.networks import EDMPrecond

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = '4'


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def tiny_net(channels: int = 3, label_dim: int = 0, **kwargs) -> EDMPrecond:
    torch.manual_seed(123)
    return EDMPrecond(img_resolution=8, img_channels=channels, label_dim=label_dim, model_type='SongUNet',
                      model_channels=8, channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0,
                      **kwargs).eval()


def closed_form_profile() -> dict:
    """A profile on 16 bins whose rate is the two-Gaussian-mixture oracle's (d = 16)."""
    grid = infonoise.SigmaGrid(0.002, 80, 16)
    sigma = grid.sigma.numpy()
    rate = infonoise.GaussianMixture(d=16, m=1.0, s=0.3, p=0.5).rate(sigma)
    gated = rate * infonoise.gate(sigma, 0.05, 3)
    return dict(sigma=sigma, edges=grid.edges.numpy(), rate=rate, gated_rate=gated, pivot=0.05)


def write_snapshot(path, net, profile=None) -> str:
    snap = dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={},
                infonoise=None if profile is None else infonoise.profile_to_json(profile))
    persistence.dump_network_pickle(snap, str(path))
    return str(path)


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp('snap') / 'net.pkl', tiny_net(), closed_form_profile())


def run(args, device='cpu'):
    """generate.py in-process (CPU unless told otherwise, so expectations computed on CPU apply)."""
    return CliRunner().invoke(generate.main, [str(a) for a in args] + ['--device', device])


def read_pngs(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith('.png'))
    return names, [np.asarray(PIL.Image.open(os.path.join(folder, n))) for n in names]


def expected_uint8(net, seeds, sigma_steps, **kw):
    """Independent path: per-seed generators by hand, then the sampler on the given grid."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    latents = torch.stack([torch.randn([net.img_channels, 8, 8], generator=g) for g in gens])

    def randn_like(x):
        return torch.stack([torch.randn(x.shape[1:], dtype=x.dtype, generator=g) for g in gens])
    with torch.no_grad():
        x = samplers.heun_sampler(net, latents, sigma_steps, randn_like=randn_like, **kw)
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------------------------------------

def test_parse_seeds():
    assert generation.parse_seeds('0-3,10,12-13') == [0, 1, 2, 3, 10, 12, 13]
    assert generation.parse_seeds('5') == [5]
    for bad in ('3-1', 'x', '', '-2'):
        with pytest.raises(ValueError):
            generation.parse_seeds(bad)


@pytest.mark.parametrize('num,batch,world', [(10, 3, 1), (10, 3, 2), (5, 64, 4), (64, 8, 3)])
def test_rank_batches_cover_seeds_once_with_equal_batch_counts(num, batch, world):
    seeds = list(range(100, 100 + num))
    per_rank = [generation.rank_batches(seeds, batch, r, world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    flat = sorted(s for batches in per_rank for b in batches for s in b)
    assert flat == seeds
    assert max(len(b) for batches in per_rank for b in batches) <= batch


def test_writes_pngs_and_batch_size_does_not_change_images(snapshot, tmp_path):
    r1 = run(['--network', snapshot, '--outdir', tmp_path / 'b1', '--seeds', '0-5', '--steps', STEPS, '--batch', 1])
    r4 = run(['--network', snapshot, '--outdir', tmp_path / 'b4', '--seeds', '0-5', '--steps', STEPS, '--batch', 4])
    assert r1.exit_code == 0 and r4.exit_code == 0, r1.output + r4.output
    names1, imgs1 = read_pngs(tmp_path / 'b1')
    names4, imgs4 = read_pngs(tmp_path / 'b4')
    assert names1 == names4 == [f'{s:06d}.png' for s in range(6)]
    assert all(im.shape == (8, 8, 3) and im.dtype == np.uint8 for im in imgs1)
    for a, b in zip(imgs1, imgs4):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(imgs1[0], imgs1[1])   # different seeds, different images

    # EDM's grid on the default range, sampled through an independent per-seed path.
    net = tiny_net()
    grid = samplers.edm_sigma_steps(int(STEPS), 0.002, 80, 7)
    np.testing.assert_array_equal(np.stack(imgs1), expected_uint8(net, list(range(6)), grid))


def test_default_path_matches_edm_sampler(snapshot):
    net = tiny_net()
    seeds = [3, 7]
    opts = generation.SamplerOptions(num_steps=5, S_churn=5, S_min=0.01, S_max=10, S_noise=1.003)
    ours = generation.sample_batch(net, seeds, opts, generation.resolve_sigma_steps(net, opts))
    rnd = generation.SeedRandom(seeds, 'cpu')
    latents = rnd.randn([2, 3, 8, 8])
    with torch.no_grad():
        ref = samplers.edm_sampler(net, latents, randn_like=rnd.randn_like, num_steps=5, S_churn=5, S_min=0.01,
                                   S_max=10, S_noise=1.003)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_subdirs_layout(snapshot, tmp_path):
    r = run(['--network', snapshot, '--outdir', tmp_path, '--seeds', '998-1001', '--steps', 2, '--subdirs'])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / '000000')) == ['000998.png', '000999.png']
    assert sorted(os.listdir(tmp_path / '001000')) == ['001000.png', '001001.png']


def test_infogrid_uses_embedded_profile(snapshot, tmp_path):
    r = run(['--network', snapshot, '--outdir', tmp_path / 'out', '--seeds', '0-2', '--steps', 6, '--infogrid',
             '--grid-out', tmp_path / 'grid.json'])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / 'grid.json').read_text())
    # --infogrid defaults to the solver-aware construction (compared in docs/BENCHMARKS.md §10).
    expected = torch.as_tensor(infonoise.infogrid.solver_aware_sigma_steps(closed_form_profile(), 6, 0.002, 80,
                                                                           solver='heun'), dtype=torch.float64)
    assert record['grid'] == 'infogrid' and record['method'] == 'solver-aware' and record['solver'] == 'heun'
    np.testing.assert_allclose(record['sigma_steps'], expected.numpy(), rtol=1e-12, atol=0)
    assert not np.allclose(expected.numpy(), samplers.edm_sigma_steps(6, 0.002, 80, 7).numpy())
    _, imgs = read_pngs(tmp_path / 'out')
    np.testing.assert_array_equal(np.stack(imgs), expected_uint8(tiny_net(), [0, 1, 2], expected))


def test_infogrid_profile_file_and_variants(tmp_path):
    bare = write_snapshot(tmp_path / 'bare.pkl', tiny_net())
    profile_path = tmp_path / 'profile.json'
    profile_path.write_text(json.dumps(infonoise.profile_to_json(closed_form_profile())))
    r = run(['--network', bare, '--outdir', tmp_path / 'out', '--seeds', '0', '--steps', 5, '--infogrid-profile',
             profile_path, '--infogrid-method', 'eq19', '--infogrid-measure', 'entropic', '--infogrid-floor', 0, '--infogrid-gated',
             '--sigma_min', 0.01, '--sigma_max', 20, '--grid-out', tmp_path / 'grid.json'])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / 'grid.json').read_text())['sigma_steps']
    expected = infonoise.infogrid_sigma_steps(closed_form_profile(), 5, 0.01, 20, measure='entropic', floor=0.0,
                                              gated=True)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-12, atol=0)

    # The last row of an infonoise.jsonl is accepted as well.
    rows = [dict(infonoise.profile_to_json(closed_form_profile()), step=s) for s in (100, 200)]
    (tmp_path / 'infonoise.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
    r = run(['--network', bare, '--outdir', tmp_path / 'out2', '--seeds', '0', '--steps', 3,
             '--infogrid-profile', tmp_path / 'infonoise.jsonl'])
    assert r.exit_code == 0, r.output


def test_edm_grid_out(snapshot, tmp_path):
    r = run(['--network', snapshot, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 7, '--rho', 3,
             '--grid-out', tmp_path / 'g.json'])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / 'g.json').read_text())
    assert record['grid'] == 'edm'
    np.testing.assert_allclose(record['sigma_steps'], samplers.edm_sigma_steps(7, 0.002, 80, 3).numpy(), rtol=1e-15)


def test_infogrid_without_profile_fails_clearly(tmp_path):
    bare = write_snapshot(tmp_path / 'bare.pkl', tiny_net())
    r = run(['--network', bare, '--outdir', tmp_path / 'o', '--seeds', '0', '--infogrid'])
    assert_clean_error(r, 'no InfoNoise profile', 'scripts.infonoise_profile measure')
    assert not os.path.exists(tmp_path / 'o')


def test_class_errors_and_conditional_generation(tmp_path):
    uncond = write_snapshot(tmp_path / 'u.pkl', tiny_net())
    assert_clean_error(run(['--network', uncond, '--outdir', tmp_path / 'o', '--class', 1]), 'unconditional')
    cond = write_snapshot(tmp_path / 'c.pkl', tiny_net(label_dim=3))
    assert_clean_error(run(['--network', cond, '--outdir', tmp_path / 'o', '--class', 3]), 'out of range')
    r = run(['--network', cond, '--outdir', tmp_path / 'c', '--class', 2, '--seeds', '0-1', '--steps', 2])
    assert r.exit_code == 0, r.output
    r = run(['--network', cond, '--outdir', tmp_path / 'r', '--seeds', '0-1', '--steps', 2])
    assert r.exit_code == 0, r.output


def test_guidance_changes_the_images_and_equals_the_cfg_combination(tmp_path):
    # A conditional net with perturbed weights (fresh ones barely depend on the label), sampled through the CLI
    # with --guidance 1 and 2; W = 2 must equal D_u + W (D_c − D_u) computed here with two separate calls.
    net = tiny_net(label_dim=3, label_dropout=0.1)   # guidance needs a net that learned the null label
    with torch.no_grad():
        gen = torch.Generator().manual_seed(5)
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    path = write_snapshot(tmp_path / 'c.pkl', net)
    images = {}
    for w in (1, 2):
        r = run(['--network', path, '--outdir', tmp_path / f'w{w}', '--class', 1, '--seeds', '0-3', '--steps', 3,
                 '--guidance', w])
        assert r.exit_code == 0, r.output
        images[w] = np.stack(read_pngs(tmp_path / f'w{w}')[1]).astype(np.int64)
    assert np.abs(images[2] - images[1]).mean() > 2   # guidance moves the samples

    onehot = torch.eye(3)[[1]]

    class ClosedFormCFG(torch.nn.Module):
        sigma_min, sigma_max, img_channels = net.sigma_min, net.sigma_max, net.img_channels

        def round_sigma(self, sigma):
            return net.round_sigma(sigma)

        def forward(self, x, sigma, class_labels=None):
            d_cond = net(x, sigma, onehot.expand(x.shape[0], -1))
            d_uncond = net(x, sigma, torch.zeros(x.shape[0], 3))
            return d_uncond + 2 * (d_cond - d_uncond)
    grid = samplers.edm_sigma_steps(3, 0.002, 80, 7)
    expected = expected_uint8(ClosedFormCFG(), list(range(4)), grid).astype(np.int64)
    assert np.abs(images[2] - expected).max() <= 1   # float32 batching may move a pixel by one level
    assert np.abs(images[1] - expected).mean() > 2


def test_ablation_options_run_and_match_the_ablation_sampler(snapshot, tmp_path):
    args = ['--solver', 'euler', '--disc', 'vp', '--schedule', 'vp', '--scaling', 'vp']
    r = run(['--network', snapshot, '--outdir', tmp_path / 'vp', '--seeds', '0-1', '--steps', 3, *args])
    assert r.exit_code == 0, r.output
    net = tiny_net()
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    latents = torch.stack([torch.randn([3, 8, 8], generator=g) for g in gens])
    with torch.no_grad():
        x = samplers.ablation_sampler(net, latents, num_steps=3, solver='euler', discretization='vp', schedule='vp',
                                      scaling='vp', randn_like=lambda x: torch.stack(
                                          [torch.randn(x.shape[1:], dtype=x.dtype, generator=g) for g in gens]))
    expected = (x * 127.5 + 128).clip(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.stack(read_pngs(tmp_path / 'vp')[1]), expected)
    for extra in (['--disc', 've', '--schedule', 've'], ['--disc', 'iddpm', '--solver', 'heun']):
        r = run(['--network', snapshot, '--outdir', tmp_path / extra[1], '--seeds', '0', '--steps', 3, *extra])
        assert r.exit_code == 0, r.output
        assert len(read_pngs(tmp_path / extra[1])[0]) == 1
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'x', '--disc', 'vp', '--infogrid']),
                       'InfoGrid', '--disc')
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'x', '--disc', 'vp', '--grid-out',
                            tmp_path / 'g.json']), '--grid-out')


def test_bad_inputs_fail_with_one_sentence(snapshot, tmp_path):
    assert_clean_error(run(['--network', tmp_path / 'missing.pkl', '--outdir', tmp_path / 'o']), 'does not exist')
    (tmp_path / 'junk.pkl').write_bytes(b'not a pickle at all')
    assert_clean_error(run(['--network', tmp_path / 'junk.pkl', '--outdir', tmp_path / 'o']), 'Cannot load network')
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'o', '--seeds', '5-1']), 'seed')
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'o', '--infogrid-floor', 0.2]),
                       '--infogrid')
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'o', '--sigma_min', 5, '--sigma_max', 1]),
                       'sigma_min')


class _Exploit:
    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null',))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'ema': _Exploit()}))
    assert_clean_error(run(['--network', path, '--outdir', tmp_path / 'o']), 'Cannot load network')


def test_two_ranks_give_the_same_images_as_one(snapshot, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(ROOT, 'generate.py'), '--network', snapshot, '--outdir', str(tmp_path / 'two'),
           '--seeds', '0-4', '--steps', '3', '--batch', '2', '--device', 'cpu']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = run(['--network', snapshot, '--outdir', tmp_path / 'one', '--seeds', '0-4', '--steps', 3, '--batch', 5])
    assert r.exit_code == 0, r.output
    names2, imgs2 = read_pngs(tmp_path / 'two')
    names1, imgs1 = read_pngs(tmp_path / 'one')
    assert names1 == names2 and len(names1) == 5
    for a, b in zip(imgs1, imgs2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_cuda_batch_size_does_not_change_images(snapshot, tmp_path):
    r1 = run(['--network', snapshot, '--outdir', tmp_path / 'b1', '--seeds', '0-5', '--steps', STEPS, '--batch', 1,
              '--S_churn', 10], device='cuda')
    r4 = run(['--network', snapshot, '--outdir', tmp_path / 'b4', '--seeds', '0-5', '--steps', STEPS, '--batch', 4,
              '--S_churn', 10], device='cuda')
    assert r1.exit_code == 0 and r4.exit_code == 0, r1.output + r4.output
    names1, imgs1 = read_pngs(tmp_path / 'b1')
    names4, imgs4 = read_pngs(tmp_path / 'b4')
    assert names1 == names4 and len(names1) == 6
    for a, b in zip(imgs1, imgs4):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1   # cuDNN may pick batch-dependent kernels


# ------------------------------------------------------------------------------------------------
# --sigmas (a user σ list), --verbose, and the tempered, solver-aware and calibrated InfoGrid constructions.

def test_sigmas_list_is_used_as_given_and_printed(snapshot, tmp_path):
    r = run(['--network', snapshot, '--outdir', tmp_path / 'o', '--seeds', '0-1', '--sigmas', '80,10,1,0.1,0.002',
             '--grid-out', tmp_path / 'g.json', '--verbose'])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / 'g.json').read_text())
    assert record['grid'] == 'user' and record['num_steps'] == 5
    assert record['sigma_steps'] == [80.0, 10.0, 1.0, 0.1, 0.002, 0.0]
    assert 'σ levels: 80, 10, 1, 0.1, 0.002, 0' in r.output and 'grid=user' in r.output
    grid = torch.tensor(record['sigma_steps'], dtype=torch.float64)
    np.testing.assert_array_equal(np.stack(read_pngs(tmp_path / 'o')[1]), expected_uint8(tiny_net(), [0, 1], grid))
    # Matching --steps is accepted; Euler and churn apply to the user list too.
    r = run(['--network', snapshot, '--outdir', tmp_path / 'e', '--seeds', '0', '--sigmas', '80,1,0', '--steps', 2,
             '--solver', 'euler', '--S_churn', 1])
    assert r.exit_code == 0, r.output
    expected = expected_uint8(tiny_net(), [0], torch.tensor([80.0, 1.0, 0.0], dtype=torch.float64), solver='euler',
                              S_churn=1)
    np.testing.assert_array_equal(np.stack(read_pngs(tmp_path / 'e')[1]), expected)


def test_sigmas_from_files(snapshot, tmp_path):
    (tmp_path / 's.json').write_text('[40, 4, 0.4, 0.004]')
    (tmp_path / 's.txt').write_text('# my grid\n40\n4\n\n0.4\n0.004\n0\n')
    for name in ('s.json', 's.txt'):
        r = run(['--network', snapshot, '--outdir', tmp_path / ('out-' + name), '--seeds', '0',
                 '--sigmas', tmp_path / name, '--grid-out', tmp_path / (name + '.grid')])
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / (name + '.grid')).read_text())['sigma_steps'] == [40, 4, 0.4, 0.004, 0]


@pytest.mark.parametrize('value,phrase', [
    ('80,10,10', 'strictly decreasing'), ('1,10', 'strictly decreasing'), ('80,-1', 'finite number > 0'),
    ('80,nan,1', 'finite number > 0'), ('abc', 'neither a comma-separated list'), ('0', 'at least one positive'),
    ('missing.json', 'neither a comma-separated list'), ('80,0,0', 'finite number > 0'),
])
def test_bad_sigma_lists_fail_with_one_sentence(snapshot, tmp_path, value, phrase):
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'o', '--sigmas', value]), '--sigmas', phrase)
    assert not os.path.exists(tmp_path / 'o')


@pytest.mark.parametrize('extra,phrase', [
    (['--infogrid'], '--infogrid'), (['--rho', 5], '--rho'), (['--disc', 'vp'], '--disc'),
    (['--sigma_max', 50], '--sigma_max'), (['--infogrid-method', 'tempered'], '--infogrid-method'),
    (['--steps', 2], 'disagrees'),
])
def test_sigmas_excludes_other_grids(snapshot, tmp_path, extra, phrase):
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'o', '--sigmas', '80,1,0.01', *extra]),
                       phrase)


def test_verbose_prints_the_default_edm_grid(snapshot, tmp_path):
    r = run(['--network', snapshot, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 4, '--verbose'])
    assert r.exit_code == 0, r.output
    assert 'grid=edm' in r.output and 'rho=7' in r.output
    levels = [ln for ln in r.output.splitlines() if ln.startswith('σ levels: ')]
    assert len(levels) == 1
    printed = [float(v) for v in levels[0].split(': ')[1].split(', ')]
    np.testing.assert_allclose(printed, samplers.edm_sigma_steps(4, 0.002, 80, 7).numpy(), rtol=1e-5)


def test_infogrid_methods_tempered_and_solver_aware(snapshot, tmp_path):
    from infonoise.infogrid import solver_aware_sigma_steps, tempered_sigma_steps
    r = run(['--network', snapshot, '--outdir', tmp_path / 't', '--seeds', '0', '--steps', 6, '--infogrid',
             '--infogrid-method', 'tempered', '--infogrid-gamma', 0.25, '--rho', 5, '--grid-out', tmp_path / 't.json'])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / 't.json').read_text())
    assert record['method'] == 'tempered' and record['gamma'] == 0.25 and record['rho'] == 5
    expected = tempered_sigma_steps(closed_form_profile(), 6, 0.002, 80, gamma=0.25, rho=5)
    np.testing.assert_allclose(record['sigma_steps'], expected.numpy(), rtol=1e-12)
    r = run(['--network', snapshot, '--outdir', tmp_path / 's', '--seeds', '0', '--steps', 5, '--infogrid',
             '--infogrid-method', 'solver-aware', '--solver', 'euler', '--grid-out', tmp_path / 's.json'])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / 's.json').read_text())
    assert record['method'] == 'solver-aware' and record['solver'] == 'euler'
    expected = solver_aware_sigma_steps(closed_form_profile(), 5, 0.002, 80, solver='euler')
    np.testing.assert_allclose(record['sigma_steps'], expected.numpy(), rtol=1e-12)


def test_infogrid_calibrate_picks_a_tempered_grid(snapshot, tmp_path):
    from infonoise.infogrid import tempered_sigma_steps
    r = run(['--network', snapshot, '--outdir', tmp_path / 'c', '--seeds', '0', '--steps', 3, '--infogrid',
             '--infogrid-calibrate', 3, '--grid-out', tmp_path / 'c.json', '--verbose'])
    assert r.exit_code == 0, r.output
    record = json.loads((tmp_path / 'c.json').read_text())
    assert record['method'] == 'tempered' and record['calibration']['num_latents'] == 3
    assert record['calibration']['error'] <= record['calibration']['edm_error']
    tried = {(c['gamma'], c['rho']) for c in record['calibration']['candidates']}
    assert (record['gamma'], record['rho']) in tried and (0.0, 7.0) in tried
    expected = tempered_sigma_steps(closed_form_profile(), 3, 0.002, 80, gamma=record['gamma'], rho=record['rho'])
    np.testing.assert_allclose(record['sigma_steps'], expected.numpy(), rtol=1e-12)
    assert 'method=tempered' in r.output


@pytest.mark.parametrize('args,phrase', [
    (['--infogrid-gamma', 0.3], 'only applies together with --infogrid'),
    (['--infogrid-calibrate', 4], 'only applies together with --infogrid'),
    (['--infogrid', '--infogrid-method', 'eq19', '--infogrid-calibrate', 4], 'tempered'),
    (['--infogrid', '--infogrid-method', 'tempered', '--infogrid-floor', 0.3], 'eq19 only'),
    (['--infogrid', '--infogrid-gamma', 0.3], 'tempered only'),
    (['--infogrid', '--infogrid-calibrate', 4, '--rho', 3], 'chooses γ and ρ'),
])
def test_bad_infogrid_method_combinations(snapshot, tmp_path, args, phrase):
    assert_clean_error(run(['--network', snapshot, '--outdir', tmp_path / 'o', *args]), phrase)


def test_help_names_the_default_grid_and_the_evidence():
    """The help says which grid is the default, what --infogrid uses, and where the numbers are."""
    text = ' '.join(CliRunner().invoke(generate.main, ['--help']).output.split())
    assert "EDM's ρ = 7 grid (--steps, --rho) by default" in text
    assert '--infogrid builds the grid' in text and 'solver-aware construction' in text
    assert generation.DEFAULT_INFOGRID_METHOD == 'solver-aware'
    assert 'docs/BENCHMARKS.md §10' in text and 'scripts/bench_infogrid.py' in text
