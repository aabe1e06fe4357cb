"""Exact resume: an interrupted and resumed run equals the uninterrupted one; kills never corrupt states."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

import train
from torch_utils import persistence
from training import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny InfoNoise digits model; 250 images per step in 2 accumulation rounds of 125; the σ-sampler
# refreshes every 5 steps after 10 warm-up steps, so its table changes across the resume point.
TINY = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 250, '--batch-gpu', 125, '--workers', 0,
        '--grid', 0, '--plot', 0, '--seed', 3, '--deterministic', '--tick', 4, '--snap', 100, '--dump', 1,
        '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 64,
        '--infonoise-min-count', 2, '--infonoise-warmup', 10, '--infonoise-refresh', 5]


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def run_cli(outdir, *args):
    result = CliRunner().invoke(train.main, [str(a) for a in ['--outdir', outdir, '--nosubdir', *args]])
    return result


def assert_states_equal(a, b):
    for key in ('net', 'ema'):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f'{key}.{name}'
    opt_a, opt_b = a['optimizer']['state'], b['optimizer']['state']
    assert opt_a.keys() == opt_b.keys()
    for idx in opt_a:
        for name in opt_a[idx]:
            assert torch.equal(opt_a[idx][name], opt_b[idx][name]), f'optimizer.{idx}.{name}'
    sa, sb = a['ranks'][0]['sigma_sampler'], b['ranks'][0]['sigma_sampler']
    for name in sa:
        va, vb = sa[name], sb[name]
        if isinstance(va, torch.Tensor):
            assert torch.equal(torch.nan_to_num(va), torch.nan_to_num(vb)), f'sigma_sampler.{name}'
        elif name != 'pivot':
            assert va == vb, f'sigma_sampler.{name}'
    assert torch.equal(a['ranks'][0]['rng']['torch'], b['ranks'][0]['rng']['torch'])
    assert a['data']['position'] == b['data']['position']
    assert a['cur_nimg'] == b['cur_nimg']


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_stop_at_8_kimg_and_resume_to_12_equals_straight_12_kimg(tmp_path, device):
    straight, part = tmp_path / 'straight', tmp_path / 'part'
    result = run_cli(straight, *TINY, '--kimg', 12, '--device', device)
    assert result.exit_code == 0, result.output
    result = run_cli(part, *TINY, '--kimg', 8, '--device', device)
    assert result.exit_code == 0, result.output
    assert (part / 'training-state-000008.pt').is_file()

    # Resume from the run directory (its newest state); the options come from the state, --kimg extends it.
    resumed = tmp_path / 'resumed'
    result = run_cli(resumed, '--resume', part, '--kimg', 12)
    assert result.exit_code == 0, result.output
    assert 'training-state-000008.pt' in result.output

    a = checkpoint.load_training_state(str(straight / 'training-state-000012.pt'))
    b = checkpoint.load_training_state(str(resumed / 'training-state-000012.pt'))
    assert a['cur_nimg'] == 12000
    assert a['ranks'][0]['sigma_sampler']['refreshes'] == 7   # steps 15, 20, ..., 45 of 48
    assert_states_equal(a, b)
    with open(straight / 'network-snapshot-000012.pkl', 'rb') as f:
        snap_a = persistence.load_network_pickle(f)
    with open(resumed / 'network-snapshot-000012.pkl', 'rb') as f:
        snap_b = persistence.load_network_pickle(f)
    assert snap_a['infonoise']['pi'] == snap_b['infonoise']['pi']


def test_resume_with_another_config_is_refused(tmp_path):
    part = tmp_path / 'part'
    assert run_cli(part, *TINY, '--kimg', 0.5).exit_code == 0
    other = tmp_path / 'other'
    result = run_cli(other, '--resume', part, '--kimg', 1, '--cbase', 16)
    assert result.exit_code != 0 and 'Traceback' not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1, result.output
    assert 'was trained with --cbase=8, not 16' in errors[0]
    assert not other.exists()
    # Already finished: nothing to continue.
    result = run_cli(other, '--resume', part)
    assert result.exit_code != 0 and 'already at 0.5 kimg' in result.output
    assert not other.exists()


def test_resume_picks_the_newest_finished_state(tmp_path):
    for kimg in (4, 12, 8):
        (tmp_path / f'training-state-{kimg:06d}.pt').write_bytes(b'x')
    (tmp_path / '.training-state-000016.pt.0123456789ab.tmp').write_bytes(b'partial')
    (tmp_path / 'training-state-000020.pt.bak').write_bytes(b'x')
    assert checkpoint.resolve_resume(str(tmp_path)) == str(tmp_path / 'training-state-000012.pt')
    assert checkpoint.resolve_resume(str(tmp_path / 'training-state-000004.pt')).endswith('000004.pt')
    with pytest.raises(checkpoint.CheckpointError, match='training-state'):
        checkpoint.resolve_resume(str(tmp_path / 'training-state-000020.pt.bak'))


def test_sigkill_during_training_never_corrupts_the_newest_state(tmp_path):
    run_dir = tmp_path / 'run'
    args = [sys.executable, os.path.join(ROOT, 'train.py'), '--outdir', str(run_dir), '--nosubdir',
            *[str(a) for a in TINY], '--kimg', '1000', '--tick', '0.2', '--snap', '1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while len(checkpoint.list_states(str(run_dir)) if run_dir.is_dir() else []) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, 'no training states appeared'
            time.sleep(0.05)
        time.sleep(random.uniform(0, 0.3))   # land anywhere, likely inside a write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    states = checkpoint.list_states(str(run_dir))
    assert len(states) >= 2
    for _, path in states:                   # every finished state is complete
        checkpoint.load_training_state(path)
    for name in os.listdir(run_dir):
        if name.endswith('.pkl'):
            with open(run_dir / name, 'rb') as f:
                persistence.load_network_pickle(f)
    newest_kimg = states[-1][0]
    newest = checkpoint.load_training_state(states[-1][1], mmap=True)
    result = run_cli(tmp_path / 'resumed', '--resume', run_dir, '--kimg', newest['cur_nimg'] / 1000 + 0.2)
    assert result.exit_code == 0, result.output
    assert f'training-state-{newest_kimg:06d}.pt' in result.output
