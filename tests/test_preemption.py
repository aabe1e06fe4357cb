"""Graceful preemption with real signals: one process (SIGTERM) and 2 gloo ranks under torchrun (SIGUSR1 to one
rank only). The stop lands on one agreed step, writes a state and a snapshot, exits 75, and the same command
line then finishes the run bitwise equal to an uninterrupted one."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import psutil
import pytest
import torch
from click.testing import CliRunner

import train
from helpers import assert_clean_error
from test_resume import SMALL, assert_states_equal
from torch_utils import persistence
from training import checkpoint, network_io, preemption

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# test_resume's small run (64 images per step, ticks every 5 steps, σ-sampler refreshes every 3 steps after 4
# warm-up steps, so its table changes before and after any stop point), 1.28 kimg = 20 steps.
TINY = [*SMALL, '--kimg', 1.28]

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def invoke(*args):
    return CliRunner().invoke(train.main, [str(a) for a in args])


def final_state(run_dir):
    return checkpoint.load_training_state(checkpoint.list_states(str(run_dir))[-1][1])


@pytest.fixture(scope='module')
def straight(tmp_path_factory, one_torch_thread):
    """The uninterrupted single-process run."""
    out = tmp_path_factory.mktemp('straight')
    result = invoke('--outdir', out, '--nosubdir', *TINY)
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------------------------------------------------
# Signal handling units.

def test_signal_names_parse_and_bad_ones_are_one_sentence():
    assert preemption.parse_signals('SIGTERM,SIGUSR1') == ('SIGTERM', 'SIGUSR1')
    assert preemption.parse_signals(' term, usr1 ,TERM') == ('SIGTERM', 'SIGUSR1')
    assert preemption.parse_signals('none') == preemption.parse_signals('') == ()
    with pytest.raises(ValueError, match='SIGKILL cannot be caught'):
        preemption.parse_signals('SIGTERM,SIGKILL')
    with pytest.raises(ValueError, match="Unknown signal 'SIGFOO'"):
        preemption.parse_signals('SIGFOO')


def test_stop_signals_record_the_first_signal_and_restore_the_previous_handlers():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        stop = preemption.StopSignals(['SIGUSR1', 'SIGUSR2']).install()
        try:
            assert stop.signum == 0
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGUSR1)       # a repeat (another signal) does not replace the first
            assert stop.signum == signal.SIGUSR2 and preemption.signal_name(stop.signum) == 'SIGUSR2'
        finally:
            stop.restore()
        assert seen == []
        os.kill(os.getpid(), signal.SIGUSR2)           # the handler from before is back
        assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_bad_signal_list_is_one_clear_error(tmp_path):
    result = invoke('--outdir', tmp_path / 'o', *TINY, '--preempt-signals', 'SIGTERM,SIGKILL')
    assert_clean_error(result, '--preempt-signals', 'SIGKILL cannot be caught')
    assert not (tmp_path / 'o').exists()


# ------------------------------------------------------------------------------------------------------------
# One process.

def _send_when_training(path, signum, done):
    """Send `signum` to this process once `path` (the first tick's stats line) exists."""
    while not done.is_set():
        if os.path.exists(path) and os.path.getsize(path) > 0:
            os.kill(os.getpid(), signum)
            return
        time.sleep(0.01)


def test_sigterm_stops_one_process_and_the_same_command_continues_bitwise(tmp_path, straight):
    # The job's one command line, before and after the preemption: --resume auto in a fresh outdir.
    out = tmp_path / 'runs'
    command = ['--outdir', out, '--resume', 'auto', *TINY]
    late = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: late.append(signum))  # pytest must survive
    done = threading.Event()
    try:
        out.mkdir()
        run_dir = out / '00000-digits-uncond-ddpmpp-edm-infonoise-gpus1-batch64-fp32'
        sender = threading.Thread(target=_send_when_training, args=(run_dir / 'stats.jsonl', signal.SIGTERM, done))
        sender.start()
        first = invoke(*command)
        done.set()
        sender.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert late == [], 'the signal arrived after training had finished'
    assert first.exit_code == preemption.PREEMPTED_EXIT_CODE == 75, first.output
    assert 'holds no run yet; starting a new run' in first.output
    assert 'SIGTERM received: stopping at' in first.output
    assert 'run the same command to continue (exit code 75' in first.output

    # The stop wrote a state and a snapshot at the same step, before the end (tick 0 ends after step 1).
    stopped = checkpoint.load_training_state(checkpoint.list_states(str(run_dir))[-1][1])
    assert 64 < stopped['cur_nimg'] < 1280 and stopped['cur_nimg'] % 64 == 0
    kimg = stopped['cur_nimg'] // 1000
    with open(checkpoint.snapshot_path(str(run_dir), kimg), 'rb') as f:
        snap = persistence.load_network_pickle(f, class_map=network_io.class_map())
    for name, value in snap['ema'].state_dict().items():
        assert torch.equal(value, stopped['ema'][name]), name

    # The requeued job: the same command continues the same run directory and ends where the straight run ends.
    second = invoke(*command)
    assert second.exit_code == 0, second.output
    assert f'Resuming from "{checkpoint.state_path(str(run_dir), kimg)}"' in second.output
    assert sorted(os.listdir(out)) == [run_dir.name]
    a, b = final_state(straight), final_state(run_dir)
    assert a['cur_nimg'] == b['cur_nimg'] == 1280
    assert_states_equal(a, b)


# ------------------------------------------------------------------------------------------------------------
# Two gloo ranks under torchrun.

def write_png_folder(path, num=96, seed=0):
    """A folder of 8x8 grayscale PNGs (blobs on noise): opens much faster than builtin:digits, whose loader
    imports scikit-learn in every rank of every launch."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:8, :8]
    path.mkdir(parents=True, exist_ok=True)
    for i in range(num):
        cy, cx = rng.uniform(1, 7, size=2)
        img = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4) + rng.normal(0, 10, (8, 8))
        PIL.Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), 'L').save(path / f'{i:03d}.png')
    return path


# 64 images per step = 2 ranks x 32; the ranks agree on stop signals in the all-reduce they make every 25 steps
# (and at ticks): tick 0 after step 1, tick 1 after step 26, the end after 30 steps (1.92 kimg).
TINY2 = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 64, '--workers', 0, '--grid', 0,
         '--plot', 0, '--seed', 5, '--tick', 1.6, '--dump', 1, '--snap', 1, '--device', 'cpu', '--deterministic',
         '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 64,
         '--infonoise-min-count', 2, '--infonoise-warmup', 5, '--infonoise-refresh', 5, '--kimg', 1.92]


def torchrun_cmd(*args):
    return [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
            os.path.join(ROOT, 'train.py'), *[str(a) for a in args]]


ENV = dict(os.environ, OMP_NUM_THREADS='1')


def kill_tree(pid: int) -> None:
    """SIGKILL a launcher and everything under it (torchrun starts each worker in a session of its own, so
    killing its process group would leave the workers running)."""
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


def worker_of_rank(launcher: psutil.Process, rank: int) -> psutil.Process:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get('RANK') == str(rank) and 'train.py' in ' '.join(child.cmdline()):
                return child
        except psutil.Error:
            continue
    raise AssertionError(f'no worker with RANK={rank}')


def test_two_gloo_ranks_agree_on_one_stop_step_when_one_rank_gets_sigusr1(tmp_path):
    data = write_png_folder(tmp_path / 'data')
    straight = tmp_path / 'straight'
    proc = subprocess.run(torchrun_cmd('--outdir', straight, '--nosubdir', '--data', data, *TINY2), cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_dir = tmp_path / 'job'
    command = torchrun_cmd('--outdir', run_dir, '--nosubdir', '--resume', run_dir, '--data', data, *TINY2)
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        stats = run_dir / 'stats.jsonl'
        while not (stats.exists() and stats.stat().st_size > 0):   # rank 0 finished step 1
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
            time.sleep(0.02)
        worker_of_rank(psutil.Process(proc.pid), 1).send_signal(signal.SIGUSR1)   # rank 1 only
        output, _ = proc.communicate(timeout=240)
    finally:
        kill_tree(proc.pid)
        proc.wait()
    assert 'SIGUSR1 received: stopping at' in output, output[-3000:]
    assert 'exitcode  : 75' in output, output[-3000:]          # torchrun's report of the workers' exit code
    stopped = final_state(run_dir)
    assert stopped['cur_nimg'] in (25 * 64, 26 * 64), stopped['cur_nimg']   # the periodic check or tick 1
    assert stopped['world_size'] == 2

    proc = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    a, b = final_state(straight), final_state(run_dir)
    assert a['cur_nimg'] == b['cur_nimg'] == 1920
    assert_states_equal(a, b)
