"""Write failures for real: a file-size limit (RLIMIT_FSIZE, in a child process) and a full tmpfs as the run
directory. Every case ends with one line naming the file and the cause; earlier files are intact and no partial
file remains."""
import hashlib
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import traceback
import uuid

import pytest
import torch
from click.testing import CliRunner

import train
from dnnlib import util
from helpers import assert_clean_error
from torch_utils import persistence
from training import checkpoint, network_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny InfoNoise digits run of test_preemption (64 images per step, ticks every 5 steps, refreshes every 3
# steps after 4 warm-up steps). Its snapshots are ~130 kB and its training states ~300 kB.
TINY = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 64, '--batch-gpu', 32, '--workers', 0,
        '--grid', 0, '--plot', 0, '--seed', 3, '--tick', 0.32, '--snap', 1, '--dump', 1,
        '--infonoise-base', 'loguniform', '--infonoise-bins', 8, '--infonoise-buffer', 32,
        '--infonoise-min-count', 2, '--infonoise-warmup', 4, '--infonoise-refresh', 3]
LIMIT = 200_000            # bytes: above a snapshot, below a training state

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def invoke(*args):
    return CliRunner().invoke(train.main, [str(a) for a in args])


def limit_file_size(limit):
    """In a child: writes past `limit` bytes fail with EFBIG (SIGXFSZ would otherwise kill the process)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def in_child(fn, *args):
    """fn(*args) in a forked child process (torch is already imported there); returns its result or re-raises
    its traceback as an AssertionError."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        try:
            os.close(read)
            payload = pickle.dumps(('ok', fn(*args)))
        except BaseException:
            payload = pickle.dumps(('error', traceback.format_exc()))
        with os.fdopen(write, 'wb') as f:
            f.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, 'rb') as f:
        data = f.read()
    os.waitpid(pid, 0)
    status, value = pickle.loads(data)
    if status != 'ok':
        raise AssertionError(f'child failed:\n{value}')
    return value


def digest(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def temporaries(directory):
    return [n for n in os.listdir(directory) if n.endswith('.tmp')]


# ------------------------------------------------------------------------------------------------------------
# The writers themselves.

def _write_past_the_limit(directory):
    limit_file_size(100_000)
    big = torch.zeros(50_000)                       # 200 kB of tensor data
    writers = {'state.pt': lambda f: torch.save({'x': big}, f),
               'snap.pkl': lambda f: pickle.dump({'x': big}, f, protocol=4),
               'plot.png': lambda f: f.write(b'x' * 150_000)}
    errors = {}
    for name, write in writers.items():
        with util.atomic_write(os.path.join(directory, name)) as f:
            f.write(b'previous')
        try:
            with util.atomic_write(os.path.join(directory, name)) as f:
                write(f)
        except util.WriteError as err:
            errors[name] = (str(err), err.errno)
    log = util.AppendFile(os.path.join(directory, 'stats.jsonl'))
    log.append('{"tick": 0}\n')
    try:
        log.append('{"pad": "' + 'x' * 150_000 + '"}\n')
    except util.WriteError as err:
        errors['stats.jsonl'] = (str(err), err.errno)
    log.append('{"tick": 1}\n')                      # the log goes on with whole lines
    log.close()
    return errors


def test_writers_under_a_file_size_limit_fail_cleanly_and_keep_the_previous_file(tmp_path):
    errors = in_child(_write_past_the_limit, str(tmp_path))
    assert sorted(errors) == ['plot.png', 'snap.pkl', 'state.pt', 'stats.jsonl']
    for name, (message, errno_) in errors.items():
        # torch.save used to say only "[enforce fail at inline_container.cc] unexpected pos ... vs ...".
        assert message == f'Cannot write {tmp_path / name}: file too large (a file-size limit was reached; ' \
                          f'see ulimit -f).'
        assert errno_ == 27   # EFBIG
    for name in ('plot.png', 'snap.pkl', 'state.pt'):
        assert (tmp_path / name).read_bytes() == b'previous'
    assert (tmp_path / 'stats.jsonl').read_text() == '{"tick": 0}\n{"tick": 1}\n'   # rolled back, no partial line
    assert temporaries(tmp_path) == []


def test_an_append_log_left_without_a_final_newline_gets_one():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'stats.jsonl')
        with open(path, 'w') as f:
            f.write('{"tick": 0}\n{"tick": 1, "kil')      # a kill mid-line (older code)
        with util.AppendFile(path) as log:
            log.append('{"tick": 1}\n')
        assert open(path).read().splitlines()[-1] == '{"tick": 1}'


# ------------------------------------------------------------------------------------------------------------
# train.py end to end.

@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, one_torch_thread):
    """A finished 0.64 kimg run: states at 0.384 and 0.64 kimg (both named training-state-000000.pt, the
    later one kept), snapshots, stats."""
    out = tmp_path_factory.mktemp('finished')
    result = invoke('--outdir', out, '--nosubdir', *TINY, '--kimg', 0.64)
    assert result.exit_code == 0, result.output
    return out


def test_file_size_limit_during_a_state_write_in_a_real_process(tmp_path, finished_run):
    # A requeued job continues the run directory; its next training state exceeds the limit.
    run_dir = tmp_path / 'run'
    shutil.copytree(finished_run, run_dir)
    state = run_dir / 'training-state-000000.pt'
    before = digest(state)
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), '--outdir', str(run_dir), '--nosubdir',
           '--resume', str(run_dir), '--kimg', '0.96', '--threads', '1']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=lambda: limit_file_size(LIMIT))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f'Error: Cannot write {state}: file too large (a file-size limit was reached; see ulimit -f).'], proc.stderr
    assert digest(state) == before                   # the previous state is intact
    assert temporaries(run_dir) == []
    assert checkpoint.load_training_state(str(state))['cur_nimg'] == 640


def _train_with_limit(args, limit):
    limit_file_size(limit)
    result = invoke(*args)
    return result.exit_code, result.output, repr(result.exception)


@pytest.mark.parametrize('name', ['stats.jsonl', 'infonoise.jsonl'])
def test_file_size_limit_on_an_append_log_stops_the_run_and_keeps_the_log_whole(tmp_path, name):
    # A long run's log that has grown to just below the limit: the next line does not fit.
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    pad = '{"pad": "' + 'x' * 990 + '"}\n'
    (run_dir / name).write_text(pad * (LIMIT // len(pad)))
    before = digest(run_dir / name)
    args = ['--outdir', run_dir, '--nosubdir', *TINY, '--kimg', 1.28, '--dump', 100]   # no state before the end
    code, output, exception = in_child(_train_with_limit, args, LIMIT)
    assert code == 1 and 'SystemExit' in exception, output
    assert 'Traceback' not in output and 'Logging error' not in output
    errors = [line for line in output.splitlines() if line.startswith('Error')]
    assert errors == [f'Error: Cannot write {run_dir / name}: file too large (a file-size limit was reached; '
                      f'see ulimit -f).'], output
    assert digest(run_dir / name) == before
    assert temporaries(run_dir) == []


@pytest.fixture
def tmpfs(tmp_path):
    """A 200 kB tmpfs (we run as root in CI containers); skipped where mounting is not permitted."""
    mount_point = tmp_path / f'tmpfs-{uuid.uuid4().hex[:6]}'
    mount_point.mkdir()
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=200k', 'tmpfs', str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f'cannot mount a tmpfs here ({(proc.stderr or proc.stdout).strip() or "mount failed"}); '
                    f'the full-disk case needs root or CAP_SYS_ADMIN')
    yield mount_point
    if subprocess.run(['umount', str(mount_point)], capture_output=True).returncode != 0:
        subprocess.run(['umount', '-l', str(mount_point)], capture_output=True)


def test_full_disk_during_a_snapshot(tmpfs):
    # Tick 0 writes network-snapshot-000000.pkl (~130 kB); rewriting it at tick 1 needs a second copy until
    # the rename, which does not fit.
    result = invoke('--outdir', tmpfs, '--nosubdir', *TINY, '--kimg', 0.64)
    assert_clean_error(result, f'Cannot write {tmpfs / "network-snapshot-000000.pkl"}: no space left on device.')
    assert 'Logging error' not in result.output
    with open(tmpfs / 'network-snapshot-000000.pkl', 'rb') as f:      # the previous snapshot is intact
        snap = persistence.load_network_pickle(f, class_map=network_io.class_map())
    assert snap['ema'].img_resolution == 8
    assert temporaries(tmpfs) == [] and not checkpoint.list_states(str(tmpfs))
