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
from helpers import assert_clean_error
from torch_utils import persistence
from training import checkpoint, network_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny InfoNoise digits model; 250 images per step in 2 accumulation rounds of 125; the σ-sampler
# refreshes every 5 steps after 10 warm-up steps, so its table changes across the resume point.
TINY = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 250, '--batch-gpu', 125, '--workers', 0,
        '--grid', 0, '--plot', 0, '--seed', 3, '--deterministic', '--tick', 4, '--snap', 100, '--dump', 1,
        '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 64,
        '--infonoise-min-count', 2, '--infonoise-warmup', 10, '--infonoise-refresh', 5]

# A smaller one: 64 images per step in 2 rounds of 32, ticks every 5 steps (states at 0.384, 0.704, 1.024, 1.28 kimg
# named 000000, 000000, 000001, 000001), refreshes every 3 steps after 4 warm-up steps.
SMALL = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 64, '--batch-gpu', 32, '--workers', 0,
         '--grid', 0, '--plot', 0, '--seed', 3, '--deterministic', '--tick', 0.32, '--snap', 1, '--dump', 1,
         '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 32,
         '--infonoise-min-count', 2, '--infonoise-warmup', 4, '--infonoise-refresh', 3]

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
    assert len(a['ranks']) == len(b['ranks'])
    for rank, (ra, rb) in enumerate(zip(a['ranks'], b['ranks'])):
        sa, sb = ra['sigma_sampler'], rb['sigma_sampler']
        assert sa.keys() == sb.keys()
        for name in sa:
            va, vb = sa[name], sb[name]
            if isinstance(va, torch.Tensor):
                assert torch.equal(torch.nan_to_num(va), torch.nan_to_num(vb)), f'rank {rank} sigma_sampler.{name}'
            elif name != 'pivot':
                assert va == vb, f'rank {rank} sigma_sampler.{name}'
        assert torch.equal(ra['rng']['torch'], rb['rng']['torch']), f'rank {rank} rng'
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
        snap_a = persistence.load_network_pickle(f, class_map=network_io.class_map())
    with open(resumed / 'network-snapshot-000012.pkl', 'rb') as f:
        snap_b = persistence.load_network_pickle(f, class_map=network_io.class_map())
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
    assert checkpoint.list_states(str(tmp_path))[-1][1] == str(tmp_path / 'training-state-000012.pt')
    with pytest.raises(checkpoint.CheckpointError, match=r'\(newest: .*000012\.pt\)'):   # none of them loads
        checkpoint.plan_resume(str(tmp_path), str(tmp_path))
    with pytest.raises(checkpoint.CheckpointError, match='training-state-000004.pt'):
        checkpoint.plan_resume(str(tmp_path / 'training-state-000004.pt'), str(tmp_path))
    with pytest.raises(checkpoint.CheckpointError, match='must name a training-state'):
        checkpoint.plan_resume(str(tmp_path / 'training-state-000020.pt.bak'), str(tmp_path))


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
                persistence.load_network_pickle(f, class_map=network_io.class_map())
    newest_kimg = states[-1][0]
    newest = checkpoint.load_training_state(states[-1][1], mmap=True)
    result = run_cli(tmp_path / 'resumed', '--resume', run_dir, '--kimg', newest['cur_nimg'] / 1000 + 0.2)
    assert result.exit_code == 0, result.output
    assert f'training-state-{newest_kimg:06d}.pt' in result.output


# ------------------------------------------------------------------------------------------------------------
# Requeue-safe resume: the same command line before and after a preemption.

def invoke(*args):
    return CliRunner().invoke(train.main, [str(a) for a in args])


def lines_with(output, text):
    return [line for line in output.splitlines() if text in line]


def test_resume_of_a_directory_without_state_starts_a_run_there_and_says_so(tmp_path):
    # A job killed before its first state dump is requeued with the same --resume DIR: it starts in DIR
    # (not in a new numbered directory) and a later invocation continues DIR.
    out, job = tmp_path / 'runs', tmp_path / 'runs' / 'job'
    first = invoke('--outdir', out, '--resume', job, *SMALL, '--kimg', 0.32)
    assert first.exit_code == 0, first.output
    assert len(lines_with(first.output, f'--resume: {job} holds no training state yet; starting a new run there.')) == 1
    assert os.listdir(out) == ['job'] and (job / 'training-state-000000.pt').is_file()
    assert 'holds no training state yet' in (job / 'log.txt').read_text()
    second = invoke('--outdir', out, '--resume', job, *SMALL, '--kimg', 0.64)
    assert second.exit_code == 0, second.output
    assert f'Resuming from "{job / "training-state-000000.pt"}" at 0.32 kimg' in second.output
    assert os.listdir(out) == ['job']
    assert checkpoint.load_training_state(str(job / 'training-state-000000.pt'))['cur_nimg'] == 640
    # Requeued once more after it finished (killed after its last state): nothing to do, and no error.
    third = invoke('--outdir', out, '--resume', job, *SMALL, '--kimg', 0.64)
    assert third.exit_code == 0, third.output
    assert f'--resume: the run in {job} is finished (0.64 kimg); nothing to do' in third.output


def test_resume_skips_newest_states_that_do_not_load_and_names_them(tmp_path):
    run_dir = tmp_path / 'run'
    result = invoke('--outdir', run_dir, '--nosubdir', *SMALL, '--kimg', 1.28)
    assert result.exit_code == 0, result.output
    newest = run_dir / 'training-state-000001.pt'
    reference = checkpoint.load_training_state(str(newest))
    assert reference['cur_nimg'] == 1280
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])                           # truncated by a full disk or a copy
    (run_dir / 'training-state-000002.pt').write_bytes(b'not a state')  # and something else that does not load
    stale = run_dir / '.training-state-000003.pt.0123456789ab.tmp'     # a write that SIGKILL interrupted
    stale.write_bytes(b'partial')

    result = invoke('--outdir', run_dir, '--nosubdir', '--resume', run_dir)
    assert result.exit_code == 0, result.output
    for name in ('training-state-000002.pt', 'training-state-000001.pt'):
        skipped = lines_with(result.output, name)
        assert len(skipped) == 1 and skipped[0].startswith(f'--resume: skipped {run_dir / name}, which does not '
                                                           f'load ('), result.output
    assert f'Resuming from "{run_dir / "training-state-000000.pt"}" at 0.704 kimg' in result.output
    assert 'Removed 1 temporary file(s)' in result.output and not stale.exists()
    assert_states_equal(reference, checkpoint.load_training_state(str(newest)))   # rewritten, bitwise the same


def test_resume_refuses_a_directory_whose_states_all_fail_to_load(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    (run_dir / 'training-state-000004.pt').write_bytes(b'x' * 100)
    result = invoke('--outdir', tmp_path / 'other', '--resume', run_dir, '--data', 'builtin:digits')
    assert_clean_error(result, f'none of the 1 training state(s) in {run_dir} loads',
                       'remove them to start over')
    result = invoke('--outdir', tmp_path / 'other', '--resume', run_dir / 'training-state-000004.pt')
    assert_clean_error(result, f'Cannot read training state {run_dir / "training-state-000004.pt"}')
    assert not (tmp_path / 'other').exists()


def test_resume_auto_picks_the_newest_run_directory_or_the_outdir(tmp_path):
    out = tmp_path / 'runs'
    assert checkpoint.plan_resume('auto', str(out)).run_dir is None               # nothing yet: a new run
    for name in ('00002-old', '00010-newest', '00009-other', 'notes'):
        (out / name).mkdir(parents=True)
    plan = checkpoint.plan_resume('auto', str(out))
    assert plan.run_dir == str(out / '00010-newest') and plan.state is None
    assert plan.notes == [f'--resume: {out / "00010-newest"} holds no training state yet; starting a new run there.']
    plan = checkpoint.plan_resume('auto', str(out / 'flat'), nosubdir=True)
    assert plan.run_dir == str(out / 'flat') and plan.state is None
    with pytest.raises(checkpoint.CheckpointError, match='does not exist'):
        checkpoint.plan_resume(str(out / 'training-state-000001.pt'), str(out))


def test_a_state_from_before_a_constructor_parameter_existed_resumes_at_its_default_only(tmp_path):
    part = tmp_path / 'part'
    assert run_cli(part, *TINY, '--kimg', 0.5).exit_code == 0
    path = checkpoint.list_states(str(part))[-1][1]
    state = checkpoint.load_training_state(path)
    # What a state written before --infonoise-freeze existed holds: neither the option nor the sampler's entry.
    del state['config']['sigma_sampler_kwargs']['freeze_after'], state['options']['infonoise_freeze']
    checkpoint.save_training_state(path, state)
    refused = run_cli(tmp_path / 'frozen', '--resume', part, '--kimg', 1, '--infonoise-freeze', 3)
    assert_clean_error(refused, 'first difference: sigma_sampler_kwargs.freeze_after (null vs 3)')
    assert run_cli(tmp_path / 'default', '--resume', part, '--kimg', 1).exit_code == 0   # 0: the paper's default


def test_constructor_defaults_fill_only_missing_entries_of_the_same_class():
    fill = checkpoint.with_constructor_defaults
    loss = {'class_name': 'training.loss.EDMLoss', 'P_mean': -1.2}
    # EDMLoss(P_std=1.2, sigma_data=0.5, ...) by default: a missing entry at its default is filled in, nested too.
    assert fill(dict(loss), dict(loss, P_std=1.2)) == dict(loss, P_std=1.2)
    assert fill({'loss_kwargs': loss}, {'loss_kwargs': dict(loss, P_std=1.2)}) == {'loss_kwargs': dict(loss, P_std=1.2)}
    assert fill(dict(loss), dict(loss, P_std=1.5)) == loss                      # not the default: still a difference
    assert fill(dict(loss), dict(loss, nonexistent=1)) == loss                  # not a constructor parameter
    other = dict(loss, class_name='training.loss.VPLoss')
    assert fill(dict(loss), dict(other, P_std=1.2)) == loss                     # another class: nothing is assumed
    refused = {'class_name': 'os.system'}
    assert fill(dict(refused), dict(refused, command='x')) == refused           # never resolved outside the table
