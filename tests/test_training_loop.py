"""The training loop end to end on CPU with tiny networks: files, σ-sampler driving, EMA, LR ramp-up,
divergence handling, the sample grid and the profile plot."""
import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import infonoise
import train
from torch_utils import persistence
from training import checkpoint, image_grid
from training import options as O
from training import training_loop as TL

# A tiny digits model: 8 channels, one resolution, one block, no attention (from the digits-demo preset).
TINY = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 32, '--workers', 0, '--grid', 0,
        '--seed', 1]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def run_cli(tmp_path, *args):
    result = CliRunner().invoke(train.main, [str(a) for a in ['--outdir', tmp_path, '--nosubdir', *TINY, *args]])
    return result


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def load_snapshot(path):
    with open(path, 'rb') as f:
        return persistence.load_network_pickle(f)


# ------------------------------------------------------------------------------------------------

def test_infonoise_run_drives_the_sampler_and_records_every_refresh(tmp_path):
    # 50 steps of 32; refreshes at steps 20, 30, 40, 50 (step > warm-up 10 and step % 10 == 0).
    result = run_cli(tmp_path, '--kimg', 1.6, '--tick', 0.8, '--snap', 1, '--dump', 1, '--sigma-dist', 'infonoise',
                     '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 32,
                     '--infonoise-min-count', 2, '--infonoise-warmup', 10, '--infonoise-refresh', 10, '--grid', 16)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / 'infonoise.jsonl')
    assert [r['refreshes'] for r in rows] == [1, 2, 3, 4]
    assert [r['step'] for r in rows] == [20, 30, 40, 50]
    assert [r['kimg'] for r in rows] == pytest.approx([0.64, 0.96, 1.28, 1.6])
    for r in rows:
        mass = np.asarray(r['pi']) * np.diff(np.asarray(r['edges']))
        assert mass.sum() == pytest.approx(1.0, abs=1e-9)

    # The final snapshot embeds the latest profile: π and r as of the last refresh.
    snap = load_snapshot(tmp_path / 'network-snapshot-000001.pkl')
    assert set(snap) >= {'ema', 'loss_fn', 'augment_pipe', 'dataset_kwargs', 'infonoise'}
    assert np.array_equal(snap['infonoise']['pi'], rows[-1]['pi'])
    assert np.array_equal(snap['infonoise']['rate'], rows[-1]['rate'])
    assert snap['dataset_kwargs']['class_name'] == 'training.dataset.DigitsDataset'
    profile = infonoise.profile_from_json(snap['infonoise'])
    assert infonoise.infogrid_sigma_steps(profile, 8, 0.002, 80).shape == (9,)

    # The training state holds the sampler state of the one rank.
    state = checkpoint.load_training_state(str(tmp_path / 'training-state-000001.pt'))
    assert state['cur_nimg'] == 1600 and state['world_size'] == 1
    assert state['ranks'][0]['sigma_sampler']['refreshes'] == 4

    # Ticks end after the first step, then every 0.8 kimg, and at the end: 3 stats lines, 3 status lines.
    stats = read_jsonl(tmp_path / 'stats.jsonl')
    assert [s['Progress/kimg']['mean'] for s in stats] == pytest.approx([0.032, 0.832, 1.6])
    log = (tmp_path / 'log.txt').read_text()
    status = [line for line in log.splitlines() if ' tick ' in f' {line}' and 'sec/kimg' in line]
    assert len(status) == 3
    assert 'loss' in status[-1] and 'pivot' in status[-1] and 'H(pi)' in status[-1]
    pivot = float(status[-1].split('pivot')[1].split()[0])
    assert pivot == pytest.approx(rows[-1]['pivot'], rel=1e-2)
    options = json.loads((tmp_path / 'training_options.json').read_text())
    assert options['options']['sigma_dist'] == 'infonoise' and options['batch_size'] == 32

    # End-of-run extras: a 4x4 grid of 8x8 grayscale samples (1-pixel borders) and the profile plot.
    with PIL.Image.open(tmp_path / 'samples.png') as img:
        assert img.size == (4 * 37, 4 * 37) and img.mode == 'L'   # shown 4x: >= 32 px per image
    assert (tmp_path / 'infonoise-profile.png').stat().st_size > 1000



def test_infonoise_freeze_stops_the_refreshes_at_its_step(tmp_path):
    # As above, with --infonoise-freeze 30: refreshes at steps 20 and 30 only; the snapshot keeps the step-30 table.
    result = run_cli(tmp_path, '--kimg', 1.6, '--tick', 0.8, '--snap', 1, '--dump', 1, '--sigma-dist', 'infonoise',
                     '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 32,
                     '--infonoise-min-count', 2, '--infonoise-warmup', 10, '--infonoise-refresh', 10,
                     '--infonoise-freeze', 30, '--grid', 16)
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / 'infonoise.jsonl')
    assert [r['step'] for r in rows] == [20, 30]
    snap = load_snapshot(tmp_path / 'network-snapshot-000001.pkl')
    assert np.array_equal(snap['infonoise']['pi'], rows[-1]['pi']) and snap['infonoise']['step'] == 50
    with open(tmp_path / 'training_options.json', encoding='utf-8') as f:
        config = json.load(f)
    assert config['options']['infonoise_freeze'] == 30 and config['sigma_sampler_kwargs']['freeze_after'] == 30

def test_fixed_sampler_conditional_run_with_augmentation(tmp_path):
    result = run_cli(tmp_path, '--kimg', 0.32, '--tick', 1, '--sigma-dist', 'lognormal', '--p-mean', -0.5, '--cond', 1,
                     '--augment', 0.12, '--grid', 20)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / 'infonoise.jsonl').exists()
    assert not (tmp_path / 'infonoise-profile.png').exists()
    snap = load_snapshot(tmp_path / 'network-snapshot-000000.pkl')
    assert snap['infonoise'] is None
    assert snap['ema'].label_dim == 10 and snap['augment_pipe'] is not None
    # σ-samplers are not pickled: the snapshot stores the loss (class and constructor kwargs); the sampler
    # class lives in the run's config, and its state (steps counted, one per optimizer step) in the state.
    assert type(snap['loss_fn']).__name__ == 'EDMLoss' and snap['loss_fn']._init_kwargs == dict(P_mean=-0.5,
                                                                                                  P_std=1.2, sigma_data=0.5)
    config = json.loads((tmp_path / 'training_options.json').read_text())
    assert config['sigma_sampler_kwargs'] == dict(class_name='infonoise.LogNormalSampler', P_mean=-0.5, P_std=1.2)
    state = checkpoint.load_training_state(str(tmp_path / 'training-state-000000.pt'))
    assert state['config']['sigma_sampler_kwargs'] == config['sigma_sampler_kwargs']
    assert state['ranks'][0]['sigma_sampler'] == {'step': state['cur_nimg'] // config['batch_size']} != {'step': 0}
    with PIL.Image.open(tmp_path / 'samples.png') as img:
        assert img.size == (4 * 91, 4 * 19)  # one class per column: 10 wide, 2 rows, 1-pixel borders, 4x


def test_lr_rampup_and_ema_limits(tmp_path):
    # --ema 0: the EMA is the network itself after every step; LR ramps linearly over 10 kimg.
    result = run_cli(tmp_path / 'a', '--kimg', 0.64, '--tick', 10, '--ema', 0, '--lr', 1e-3, '--lr-rampup', 10,
                     '--sigma-dist', 'lognormal')
    assert result.exit_code == 0, result.output
    state = checkpoint.load_training_state(str(tmp_path / 'a' / 'training-state-000000.pt'))
    for name, value in state['net'].items():
        assert torch.equal(value, state['ema'][name]), name
    # The last step ran with cur_nimg = 640 - 32 images seen before it.
    assert state['optimizer']['param_groups'][0]['lr'] == pytest.approx(1e-3 * (640 - 32) / 10000)

    # A half-life of 1e9 kimg without ramp-up: the EMA stays at the initial weights (the first step has
    # lr = 0, so the tick-0 snapshot holds them) while the network moves.
    result = run_cli(tmp_path / 'b', '--kimg', 0.64, '--tick', 10, '--snap', 1, '--ema', 1e6, '--ema-rampup', 0,
                     '--lr', 1e-2, '--lr-rampup', 0, '--sigma-dist', 'lognormal')
    assert result.exit_code == 0, result.output
    initial = load_snapshot(tmp_path / 'b' / 'network-snapshot-000000.pkl')['ema'].state_dict()
    state = checkpoint.load_training_state(str(tmp_path / 'b' / 'training-state-000000.pt'))
    moved = 0.0
    for name, value in state['ema'].items():
        assert torch.allclose(value, initial[name], rtol=0, atol=1e-6), name
        moved = max(moved, float((state['net'][name] - initial[name]).abs().max()))
    assert moved > 1e-3


def test_persistently_nonfinite_loss_stops_with_one_line(tmp_path):
    # Transfer from a snapshot whose weights are NaN: every loss is NaN, gradients are zeroed, the
    # weights never recover, and training stops after 50 consecutive non-finite steps.
    opts = O.resolve_options(dict(cbase=8, cres=[1], batch=32), O.load_preset('digits-demo'))
    config = O.build_config(opts, dict(name='digits', resolution=8, num_channels=1, label_dim=0, has_labels=False,
                                       endpoint='continuous', size=1797, dataset_kwargs={'class_name': 'x'}))
    net = dnnlib.util.construct_class_by_name(**config['network_kwargs'], img_resolution=8, img_channels=1,
                                              label_dim=0)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float('nan'))
    poisoned = str(tmp_path / 'poisoned.pkl')
    checkpoint.save_network_snapshot(poisoned, ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={},
                                     infonoise=None)
    out = tmp_path / 'run'
    result = run_cli(out, '--kimg', 3.2, '--tick', 10, '--transfer', poisoned, '--infonoise-warmup', 5,
                     '--infonoise-refresh', 5)
    assert result.exit_code != 0
    assert 'Traceback' not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1 and 'NaN/Inf for 50 consecutive steps' in errors[0], result.output
    assert not list(out.glob('training-state-*.pt'))


@pytest.mark.gpu
def test_cuda_run_with_speed_flags(tmp_path):
    result = run_cli(tmp_path, '--device', 'cuda', '--kimg', 0.64, '--tick', 0.32, '--bf16', '--channels-last',
                     '--sdpa', '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 32,
                     '--infonoise-min-count', 2, '--infonoise-warmup', 5, '--infonoise-refresh', 5, '--grid', 4)
    assert result.exit_code == 0, result.output
    assert 'gpumem' in result.output
    rows = read_jsonl(tmp_path / 'infonoise.jsonl')
    assert [r['step'] for r in rows] == [10, 15, 20]
    state = checkpoint.load_training_state(str(tmp_path / 'training-state-000000.pt'))
    assert all(torch.isfinite(v).all() for v in state['ema'].values())
    assert (tmp_path / 'samples.png').is_file()


def test_build_sigma_sampler_from_plain_data():
    opts = O.resolve_options(dict(data='x', sigma_dist='infonoise', infonoise_bins=16, weighting='edm'))
    kwargs = O.build_config(opts, dict(name='x', resolution=8, num_channels=1, label_dim=0, has_labels=False,
                                       endpoint='discrete', size=1, dataset_kwargs={'class_name': 'x'}))
    sampler = TL.build_sigma_sampler(kwargs['sigma_sampler_kwargs'], torch.device('cpu'))
    assert isinstance(sampler, infonoise.InfoNoiseSampler)
    assert sampler.grid.num_bins == 16 and sampler.endpoint == 'discrete'
    assert isinstance(sampler.base, infonoise.LogUniformSampler)
    s = sampler.grid.sigma
    assert torch.allclose(sampler.weight_fn(s), (s ** 2 + 0.25) / (s * 0.5) ** 2)
    assert TL.build_sigma_sampler(None) is None


def test_sampler_summary_closed_forms():
    grid = infonoise.SigmaGrid(0.01, 10.0, 12)
    uniform = infonoise.LogUniformSampler(0.01, 10.0).profile(grid)
    s = TL.sampler_summary(uniform)
    assert s['entropy'] == pytest.approx(1.0, abs=1e-12)      # equal mass in every log-spaced bin
    edges = grid.edges.numpy()
    pi = np.zeros(12)
    pi[7] = 1.0 / (edges[8] - edges[7])                         # all mass in bin 7
    s = TL.sampler_summary(dict(pi=pi, sigma=grid.sigma.numpy(), edges=edges, pivot=0.3))
    assert s['entropy'] == 0.0 and s['peak'] == pytest.approx(float(grid.sigma[7])) and s['pivot'] == 0.3
    assert math.isnan(TL.sampler_summary({})['peak'])
    # A starved sampler shows in the summary and in the status line.
    starved = TL.sampler_summary(dict(uniform, starved=1, starved_bins=5))
    assert starved['starved'] == 5 and TL.sampler_summary(uniform)['starved'] == 0

    class Collector:
        def mean(self, name):
            return 0.5
    stats = {'Progress/tick': 1, 'Progress/kimg': 2.0, 'Timing/total_sec': 3.0, 'Timing/sec_per_tick': 1.0,
             'Timing/sec_per_kimg': 0.5, 'Timing/maintenance_sec': 0.0, 'Resources/cpu_mem_gb': 0.1,
             'Resources/peak_gpu_mem_gb': 0.0}
    assert 'starved 5 bins' in TL._status_line(stats, Collector(), starved)
    assert 'starved' not in TL._status_line(stats, Collector(), TL.sampler_summary(uniform))


def test_tile_places_every_image_row_major():
    images = np.arange(5 * 2 * 3 * 3, dtype=np.uint8).reshape(5, 2, 3, 3)
    images = np.concatenate([images[:, :1], images[:, :1], images[:, :1]], axis=1)  # 3 channels
    canvas = image_grid.tile(images, grid_w=3)
    assert canvas.shape == (6, 9, 3)
    for k in range(5):
        r, c = divmod(k, 3)
        assert np.array_equal(canvas[3 * r:3 * r + 3, 3 * c:3 * c + 3], images[k].transpose(1, 2, 0))
    assert not canvas[3:, 6:].any()                             # the sixth cell is blank
    padded = image_grid.tile(images, grid_w=3, pad=1, pad_value=7)
    assert padded.shape == (2 * 4 + 1, 3 * 4 + 1, 3)
    assert np.array_equal(padded[5:8, 5:8], images[4].transpose(1, 2, 0))
    assert (padded[0] == 7).all() and (padded[:, 4] == 7).all() and (padded[-1] == 7).all()
    assert np.array_equal(image_grid.to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0])), [0, 128, 255, 255])


def test_save_image_grid_scales_by_nearest_neighbour(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    path = str(tmp_path / 'grid.png')
    image_grid.save_image_grid(images, path, grid_w=2, pad=1, scale=4)
    saved = np.asarray(PIL.Image.open(path))
    small = image_grid.tile(images, grid_w=2, pad=1)[:, :, 0]
    assert saved.shape == (small.shape[0] * 4, small.shape[1] * 4)
    assert np.array_equal(saved[::4, ::4], small) and np.array_equal(saved[3::4, 3::4], small)
    with pytest.raises(ValueError, match='scale'):
        image_grid.save_image_grid(images, path, scale=0)


def test_run_guard_counts_nonfinite_steps_and_keeps_the_first_failed_write():
    from dnnlib.util import WriteError
    from training.preemption import RunGuard, StopSignals, TrainingError
    signals = StopSignals([])
    guard = RunGuard(signals, nonfinite_limit=4, device=torch.device('cpu'))   # checks every 2 steps
    nan, one = torch.tensor(float('nan')), torch.tensor(1.0)
    assert [guard.after_step(x, 0) for x in (nan, nan, one, nan)] == [0, 0, 0, 0]   # a finite step resets
    signals.signum = 15
    assert guard.after_step(nan, 0) == 15 and guard.at_tick(0) == 15
    with pytest.raises(TrainingError, match=r'NaN/Inf for 5 consecutive steps \(at 1 kimg\)'):
        for _ in range(3):            # streaks 3 (checked), 4 (not a check step), 5 (checked: over the limit)
            guard.after_step(nan, 1000)
    calls = []

    def fail(path):
        calls.append(path)
        raise WriteError(path, OSError(28, 'No space left on device'))
    guard = RunGuard(None, nonfinite_limit=50, device=torch.device('cpu'))
    assert guard.write(fail, 'a') is False and guard.write(calls.append, 'b') is False and calls == ['a']
    with pytest.raises(TrainingError, match='Cannot write a'):
        guard.finish()
