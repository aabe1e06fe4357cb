"""The Table 1(a) driver (`python -m scripts.reproduce table1a`, which also holds the former time-to-quality
benchmark as its `ttq` rows): a tiny run killed mid-way resumes from its last training state and ends bitwise
where an uninterrupted run ends; a finished run is skipped; the results land where scripts.report reads them."""
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from scripts import report, reproduce
from helpers import REPO_ENV

TINY = ['--rows', 'digits-binary', '--methods', 'loguniform', '--seeds', '0', '--kimg', '3', '--every', '1',
        '--curve-num', '16', '--final-num', '32', '--steps', '3', '--jobs', '1']


def _driver(tmp_path, name):
    return [sys.executable, '-m', 'scripts.reproduce', 'table1a', *TINY, '--outdir', str(tmp_path / name),
            '--results', str(tmp_path / f'{name}-results')]


def _values(run):
    return [(r['kimg'], r['value']) for r in report.read_jsonl(os.path.join(run, 'metrics.jsonl'))]


@pytest.mark.slow
def test_killed_run_resumes_bitwise_and_finished_runs_are_skipped(tmp_path):
    # Uninterrupted reference run.
    ref = subprocess.run(_driver(tmp_path, 'ref'), cwd=str(tmp_path), capture_output=True, text=True, env=REPO_ENV,
                         timeout=900)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_run = tmp_path / 'ref' / 'digits-binary' / 'loguniform-seed0'
    assert [round(k) for k, _ in _values(ref_run)] == [1, 2, 3]            # an evaluation per kEx
    # The same run, killed (driver and train.py together) once its first training state exists.
    cmd = _driver(tmp_path, 'cut')
    run = tmp_path / 'cut' / 'digits-binary' / 'loguniform-seed0'
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=REPO_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not (run.is_dir() and any(n.startswith('training-state-') for n in os.listdir(run))):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = reproduce.run_state(reproduce.ProtocolPlan(str(tmp_path / 'cut'), None, '', (0,), dict(
        kimg=3, every=1, curve_num=16, final_num=32), 3), reproduce.PROTOCOL_ROWS['digits-binary'], 'loguniform', 0)
    assert state == 'partial'
    again = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=REPO_ENV, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'resumed, trained and evaluated' in again.stderr and '--resume' in again.stderr
    assert _values(run) == _values(ref_run)                               # bitwise: the same curve
    final = report.read_jsonl(str(run / 'final.jsonl'))
    assert final == [dict(r, commit=final[0]['commit'], seconds=f['seconds']) for r, f in
                     zip(report.read_jsonl(str(ref_run / 'final.jsonl')), final)]
    assert {(r['decoded'], r['num']) for r in final} == {(True, 32), (False, 32)}   # binarised: decoded and raw
    # Finished: a relaunch trains and evaluates nothing.
    third = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=REPO_ENV, timeout=300)
    assert third.returncode == 0 and 'finished earlier; skipped' in third.stderr and 'train.py' not in third.stderr
    results = tmp_path / 'cut-results' / 'digits-binary'
    assert sorted(os.listdir(results / 'loguniform-seed0')) == sorted(
        ['final.jsonl', 'metrics.jsonl', 'stats.jsonl', 'training_options.json'])
    assert set(report._read_json(str(results / 'floor.json'))['fd-digits']) == {'16', '32'}
    rows, summaries = report.build_report(str(tmp_path / 'cut-results'))
    assert summaries['digits-binary']['best_baseline'] == 'loguniform'


def test_dry_run_lists_states_and_commands(tmp_path):
    result = CliRunner().invoke(reproduce.main, ['table1a', '--rows', 'bmnist', '--methods', 'edm,lognormal-grid',
                                                 '--outdir', str(tmp_path), '--dry-run'])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith('# bmnist/') for line in lines) == 3 + 9    # edm x 3 seeds + the grid at seed 0
    assert '# bmnist/lognormal--0.4-1.8-seed0: new' in lines and '# bmnist/lognormal-0.4-0.8-seed0: new' in lines
    train = next(line for line in lines if 'lognormal--1.2-1.2-seed0' in line and 'train.py' in line)
    assert '--p-mean -1.2 --p-std 1.2 --weighting unit' in train and '--dump 1' in train
    assert '--kimg 384 --tick 16' in train and '--metrics-every 16' in train     # 24 evaluations
    assert '--threads 1 --device cpu' in train
    import train as train_cli
    args = train.split('train.py', 1)[1].split()
    train_cli.main.make_context('train.py', args)                            # train.py accepts the command


def test_the_dim_200_dna_row_runs_on_a_gpu_and_says_so_on_a_machine_without_one(tmp_path):
    import torch
    argv = ['table1a', '--rows', 'gpu', '--methods', 'loguniform,infonoise', '--seeds', '0', '--device', 'cuda',
            '--outdir', str(tmp_path), '--dna4', str(tmp_path / 'dna4')]
    listed = CliRunner().invoke(reproduce.main, [*argv, '--dry-run'])           # printable anywhere
    assert listed.exit_code == 0, listed.output
    train = next(line for line in listed.output.splitlines() if 'dna200/infonoise-seed0' in line and 'train.py' in line)
    final = next(line for line in listed.output.splitlines() if 'dna200/infonoise-seed0' in line and 'final-eval' in line)
    assert '--preset dna ' in train and '--kimg 96 --tick 8' in train and '--metrics-guidance 2' in train
    assert '--device cuda' in train and '--threads' not in train               # the GPU, not one CPU thread
    assert final.endswith('--guidance 2 --steps 18 --device cuda') and '--num 4000' in final
    import train as train_cli
    train_cli.main.make_context('train.py', train.split('train.py', 1)[1].split())
    if not torch.cuda.is_available():
        for args in (argv, ['final-eval', str(tmp_path), '--metrics', 'fd-dna', '--num', '8', '--device', 'cuda']):
            r = CliRunner().invoke(reproduce.main, args)
            assert r.exit_code == 2 and 'CUDA is not available on this machine.' in r.output, r.output


def test_protocol_rows_have_at_least_twelve_even_evaluations():
    for row in reproduce.PROTOCOL_ROWS.values():
        assert row.kimg / row.every >= 12 and (row.kimg / row.every).is_integer(), row.key
        assert row.final_num // row.classes >= (1000 if 'dna' in row.key else 1797)
    assert set(reproduce.GRID_METHODS) == {f'lognormal-{m:g}-{s:g}' for m in (-1.2, -0.4, 0.4) for s in (0.8, 1.2, 1.8)}


def test_bad_input_is_one_sentence(tmp_path):
    for argv, message in ((['--rows', 'cifar'], 'unknown row'), (['--rows', 'mnist', '--methods', 'ddpm'], 'unknown method'),
                          (['--rows', 'bmnist', '--methods', 'lognormal-best'], 'lognormal-grid'),
                          (['--kimg', '10', '--every', '3'], 'not a multiple')):
        bad = CliRunner().invoke(reproduce.main, ['table1a', '--outdir', str(tmp_path), *argv, '--dry-run'])
        assert bad.exit_code != 0 and message in bad.output and not isinstance(bad.exception, (TypeError, KeyError)), \
            (argv, bad.output)


def _tiny_digits_runs(tmp_path, monkeypatch, names):
    """(network, dataset kwargs): a tiny untrained 8x8 network, snapshotted at 3 kimg on binarised digits into
    TMP/NAME/row/run for each name (the metric's classifier cached under TMP)."""
    import torch
    from training.checkpoint import save_network_snapshot
    from training.dataset import dataset_kwargs_from_spec
    from training.networks import EDMPrecond
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'dnnlib-cache'))
    torch.manual_seed(0)
    net = EDMPrecond(img_resolution=8, img_channels=1, label_dim=0, model_type='SongUNet', model_channels=8,
                     channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0)
    kwargs = dataset_kwargs_from_spec('builtin:digits-binary')
    for name in names:
        (tmp_path / name / 'row' / 'run').mkdir(parents=True)
        save_network_snapshot(str(tmp_path / name / 'row' / 'run' / 'network-snapshot-000003.pkl'), net, None, None,
                              kwargs, None)
    return net.eval(), kwargs


def test_a_killed_final_evaluation_resumes_from_its_finished_batches(tmp_path, monkeypatch):
    from training.metrics import registry
    net, _ = _tiny_digits_runs(tmp_path, monkeypatch, ('whole', 'cut'))
    args = ['--metrics', 'fd-digits', '--num', '256', '--floor-sizes', '256', '--steps', '3', '--commit', 'abc']
    whole = CliRunner().invoke(reproduce.main, ['final-eval', str(tmp_path / 'whole' / 'row' / 'run'), *args])
    assert whole.exit_code == 0, whole.output
    # What a kill during sampling leaves: the first two of the four batches of 64 written, the rest not.
    run = tmp_path / 'cut' / 'row' / 'run'
    cache = run / 'final-samples-network-snapshot-000003-n256-steps3-g1'
    samples, _ = registry.sample(net, 256, seed=0, num_steps=3, cache=cache)
    for name in ('batch-None-128.npy', 'batch-None-192.npy'):
        (cache / name).unlink()
    assert sorted(os.listdir(cache)) == ['batch-None-0.npy', 'batch-None-64.npy']
    from training import generation
    sampled, real_sample_batch = [], generation.sample_batch
    monkeypatch.setattr(generation, 'sample_batch', lambda net, seeds, *a, **k: (
        sampled.append(list(seeds)), real_sample_batch(net, seeds, *a, **k))[1])
    cut = CliRunner().invoke(reproduce.main, ['final-eval', str(run), *args])
    assert cut.exit_code == 0, cut.output
    assert sampled == [list(range(128, 192)), list(range(192, 256))]    # only the two missing batches were sampled
    read = {name: report.read_jsonl(str(tmp_path / name / 'row' / 'run' / 'final.jsonl')) for name in ('whole', 'cut')}
    assert [dict(r, seconds=0) for r in read['cut']] == [dict(r, seconds=0) for r in read['whole']]
    assert {(r['decoded'], r['num']) for r in read['cut']} == {(True, 256), (False, 256)}
    assert not cache.exists()                                        # written up: the batches are removed


def test_a_run_in_use_is_skipped_and_a_child_outliving_its_driver_keeps_it_locked(tmp_path):
    run = tmp_path / 'runs' / 'digits-binary' / 'loguniform-seed0'
    # A driver that started a child (train.py) and was killed: the child inherited the lock and still runs.
    with reproduce.run_lock(str(run)) as fd:
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], pass_fds=(fd,))
    try:
        with pytest.raises(reproduce.RunBusy, match='in use by another process'):
            with reproduce.run_lock(str(run)):
                pass
        r = CliRunner().invoke(reproduce.main, ['table1a', *TINY, '--outdir', str(tmp_path / 'runs')])
        assert r.exit_code == 1 and 'digits-binary/loguniform-seed0: BUSY:' in r.output, r.output
        assert 'relaunch once it has ended' in r.output and '$ python train.py' not in r.output
        assert os.listdir(run) == [reproduce.RUN_LOCK]                   # nothing was trained or written
        listed = CliRunner().invoke(reproduce.main, ['table1a', *TINY, '--outdir', str(tmp_path / 'runs'), '--dry-run'])
        assert '# digits-binary/loguniform-seed0: new (BUSY: another process holds it)' in listed.output
    finally:
        child.kill()
        child.wait()
    with reproduce.run_lock(str(run)) as fd:                              # the child ended: the lock is free
        assert fd is not None
    assert not reproduce.run_in_use(str(run)) and not reproduce.run_in_use(str(tmp_path / 'nowhere'))
    assert not (tmp_path / 'nowhere').exists()


def test_the_drivers_train_py_holds_the_lock_after_the_driver_is_killed(tmp_path):
    run = tmp_path / 'cut' / 'digits-binary' / 'loguniform-seed0'
    proc = subprocess.Popen(_driver(tmp_path, 'cut'), cwd=str(tmp_path), env=REPO_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (run / 'training_options.json').is_file():
            time.sleep(0.1)
        assert (run / 'training_options.json').is_file(), 'train.py did not start'
        os.kill(proc.pid, signal.SIGKILL)            # the driver only: its train.py goes on
        proc.wait()
        with pytest.raises(reproduce.RunBusy):
            with reproduce.run_lock(str(run)):
                pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.gpu
def test_a_final_evaluation_with_device_cuda_samples_on_the_gpu(tmp_path, monkeypatch):
    from training.metrics import registry
    net, kwargs = _tiny_digits_runs(tmp_path, monkeypatch, ('cpu', 'cuda'))
    values = {}
    for device in ('cpu', 'cuda'):
        run = tmp_path / device / 'row' / 'run'
        r = CliRunner().invoke(reproduce.main, ['final-eval', str(run), '--metrics', 'fd-digits', '--num', '64',
                                                '--steps', '3', '--device', device])
        assert r.exit_code == 0, r.output
        values[device] = {x['decoded']: x['value'] for x in report.read_jsonl(str(run / 'final.jsonl'))}
    # Per-seed generators live on the sampling device, so CUDA draws other latents than the CPU (as EDM's
    # generate.py does): the CUDA final is what sampling on the GPU gives, not the CPU's value.
    samples, classes = registry.sample(net.cuda(), 64, seed=0, device='cuda', num_steps=3)
    direct = registry.evaluate_samples(['fd-digits'], registry.decode(samples), classes, kwargs)['fd-digits']
    assert values['cuda'][True] == pytest.approx(direct, rel=1e-6)
    assert values['cuda'][True] != pytest.approx(values['cpu'][True], rel=1e-6)
