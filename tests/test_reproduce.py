"""Table 1 kit: reproduce.py prints valid commands for every row; report.py builds the table from run directories;
and the whole chain (train.py -> fid.py with the digit detector -> metrics.jsonl -> report) runs on CPU."""
import json
import os
import shlex
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

from scripts import report, reproduce
from helpers import REPO_ENV

TABLE1 = {'bmnist': 'bMNIST', 'bfashionmnist': 'bFashionMNIST', 'dna': 'DNA', 'mnist': 'MNIST',
          'fashionmnist': 'FashionMNIST', 'cifar10-uncond': 'CIFAR-10 (uncond.)', 'cifar10-cond': 'CIFAR-10 (cond.)',
          'ffhq64': 'FFHQ 64x64'}
DISCRETE = {'bmnist', 'bfashionmnist', 'dna'}
EXPECTED_FLAGS = {
    True: {'loguniform': ('loguniform', 'unit'), 'edm': ('lognormal', 'edm'), 'infonoise': ('infonoise', 'unit')},
    False: {'loguniform': ('loguniform', None), 'edm': ('lognormal', None), 'infonoise': ('infonoise', None)},
}


def _flag(args, name):
    return args[args.index(name) + 1] if name in args else None


def _commands(text, script):
    """Argument lists (after the script name) of the printed commands that run `script`."""
    out = []
    for line in text.splitlines():
        line = line.split('every snapshot: ', 1)[-1]
        if line.startswith('#'):
            continue
        args = shlex.split(line)
        if script in args:
            out.append((args[:args.index(script)], args[args.index(script) + 1:]))
    return out


def test_plan_covers_every_table1_row_with_valid_commands():
    import fid
    import train
    from training import options
    result = CliRunner().invoke(reproduce.main, ['--nproc', '8', '--data-root', 'data', '--outdir', 'out',
                                                 '--sei-detector', 'sei.pt'])
    assert result.exit_code == 0, result.output
    text = result.output
    for title in TABLE1.values():
        assert f'## {title} [' in text
    trains = _commands(text, 'train.py')
    assert len(trains) == len(TABLE1) * 3
    seen = set()
    for launcher, args in trains:
        assert launcher == ['torchrun', '--standalone', '--nproc_per_node=8']
        row = _flag(args, '--preset')
        options.load_preset(row)                                   # an existing preset
        method = os.path.basename(_flag(args, '--outdir')).rsplit('-seed', 1)[0]
        sigma_dist, weighting = EXPECTED_FLAGS[row in DISCRETE][method]
        assert _flag(args, '--sigma-dist') == sigma_dist and _flag(args, '--weighting') == weighting
        assert _flag(args, '--outdir') == os.path.join('out', row, f'{method}-seed0') and '--nosubdir' in args
        assert _flag(args, '--data').replace('binary:', '').replace('dna:', '').startswith('data/')
        train.main.make_context('train.py', list(args))          # train.py's own parser accepts the command
        seen.add((row, method))
    assert seen == {(r, m) for r in TABLE1 for m in ('loguniform', 'edm', 'infonoise')}
    fids = _commands(text, 'fid.py')
    calcs = [a for _, a in fids if a[0] == 'calc']
    refs = [a for _, a in fids if a[0] == 'ref']
    assert len(calcs) == len(TABLE1) * 3
    for args in calcs + refs:
        getattr(fid, args[0]).make_context(args[0], list(args[1:]))
    assert {_flag(a, '--ref') for a in calcs} >= {'https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/cifar10-32x32.npz',
                                                  'https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/ffhq-64x64.npz',
                                                  os.path.join('refs', 'bmnist-32x32.npz')}
    assert all(_flag(a, '--detector') == 'sei.pt' for a in calcs if 'dna' in _flag(a, '--network'))
    # Rows whose statistics are not published get a `fid.py ref` command on their own data.
    assert {_flag(a, '--dest') for a in refs} == {os.path.join('refs', f) for f in (
        'bmnist-32x32.npz', 'bfashionmnist-32x32.npz', 'dna-sei.npz', 'mnist-32x32.npz', 'fashionmnist-32x32.npz')}


def test_plan_single_process_and_bad_input():
    result = CliRunner().invoke(reproduce.main, ['--rows', 'cpu', '--nproc', '1', '--kimg', '2', '--seeds', '0-1'])
    assert result.exit_code == 0
    trains = _commands(result.output, 'train.py')
    assert len(trains) == 2 * 3 * 2 and all(launcher == ['python'] for launcher, _ in trains)
    assert all(_flag(a, '--kimg') == '2' for _, a in trains)
    for argv, message in ((['--rows', 'cifar'], 'unknown row'), (['--methods', 'cosine'], 'unknown method'),
                          (['--seeds', '3-1'], '--seeds'), (['--launch', '--eval-only'], 'alternatives'),
                          (['--rows', 'dna', '--launch'], '--sei-detector')):
        bad = CliRunner().invoke(reproduce.main, argv)
        assert bad.exit_code == 2 and message in bad.output, (argv, bad.output)


def _stats_line(kimg, total_sec):
    stat = lambda v: dict(num=1, mean=v, std=0.0)  # noqa: E731 - training_stats' per-name record
    return {'Progress/kimg': stat(kimg), 'Timing/total_sec': stat(total_sec), 'Loss/loss': stat(1.0),
            'timestamp': 1.7e9}


def _write_run(path, kimgs, values, record_fields=None, name_kimg_offset=0.024):
    os.makedirs(path)
    with open(os.path.join(path, 'stats.jsonl'), 'w') as f:
        for i, k in enumerate(kimgs):
            f.write(json.dumps(_stats_line(k + name_kimg_offset, 10.0 * (i + 1))) + '\n')
    with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
        for k, v in zip(kimgs, values):
            rec = dict(kimg=k + name_kimg_offset, value=v, metric='FID', snapshot=f'network-snapshot-{k:06d}.pkl')
            rec.update(record_fields or {})
            f.write(json.dumps(rec) + '\n')
        f.write('{"kimg": 99, "val')                              # a line being written: ignored


def test_report_from_run_directories(tmp_path):
    runs = tmp_path / 'runs'
    kimgs = [10, 20, 30, 40]
    curves = {'loguniform': ([11, 9, 7, 5], [9, 7, 5, 3]), 'edm': ([9, 7, 5, 5], [9, 7, 5, 5]),
              'infonoise': ([9, 5, 4, 3], [7, 3, 2, 1])}
    for method, per_seed in curves.items():
        for seed, values in enumerate(per_seed):
            fields = dict(row='bmnist', title='bMNIST', section='a', method=method, seed=seed)
            if method == 'edm':
                fields = {}                                          # row / method / seed from the directory names
            _write_run(str(runs / 'bmnist' / f'{method}-seed{seed}'), kimgs, values, fields, name_kimg_offset=0)
    for name in ('network-snapshot-000010.pkl', 'network-snapshot-000020.pkl'):
        (runs / 'bmnist' / 'edm-seed0' / name).write_bytes(b'')
    assert report.snapshot_kimgs(str(runs / 'bmnist' / 'edm-seed0')) == {
        'network-snapshot-000010.pkl': 10.0, 'network-snapshot-000020.pkl': 20.0}

    out = tmp_path / 'table.json'
    plots = tmp_path / 'plots'
    result = CliRunner().invoke(report.main, [str(runs), '--json', str(out), '--plots', str(plots)])
    assert result.exit_code == 0, result.output
    # Target = the best fixed baseline's final seed-mean (log-uniform, 4); InfoNoise's mean curve 8 4 3 2 first
    # reaches it at the evaluation at 20 kEx (the paper's rule), log-uniform's at 40: 2.00x.
    ada = next(line for line in result.output.splitlines() if line.startswith('| InfoNoise'))
    edm = next(line for line in result.output.splitlines() if line.startswith('| EDM transfer'))
    assert '2.00×' in ada and '| 20 |' in ada and '>40' in edm
    assert (runs / 'report.md').read_text() in result.output
    data = json.loads(out.read_text())['bmnist']
    assert data['target'] == 4.0 and data['best_baseline'] == 'loguniform'
    assert data['methods']['infonoise']['speedup']['value'] == pytest.approx(2.0)
    assert data['methods']['infonoise']['kex_interp'] == pytest.approx(20.0)
    assert data['speed']['infonoise']['0'] == dict(kimg=40.0, sec_per_kimg=pytest.approx(1.0))
    with PIL.Image.open(plots / 'bmnist.png') as img:
        assert img.format == 'PNG' and img.size[0] > 100


def test_snapshot_kimgs_takes_exact_values_from_stats(tmp_path):
    run = tmp_path / 'run'
    _write_run(str(run), [0, 1, 2], [3.0, 2.0, 1.0], name_kimg_offset=0.152)
    for k in (0, 1, 2, 7):
        (run / f'network-snapshot-{k:06d}.pkl').write_bytes(b'')
    assert report.snapshot_kimgs(str(run)) == {'network-snapshot-000000.pkl': 0.152,
                                               'network-snapshot-000001.pkl': 1.152,
                                               'network-snapshot-000002.pkl': 2.152,
                                               'network-snapshot-000007.pkl': 7.0}


def test_end_to_end_on_cpu_digits(tmp_path):
    out = tmp_path / 'runs'
    base = [sys.executable, '-m', 'scripts.reproduce', '--rows', 'digits', '--methods',
            'loguniform,infonoise', '--nproc', '1', '--kimg', '1', '--fid-num', '64', '--fid-steps', '4',
            '--outdir', str(out), '--ref-root', str(tmp_path / 'refs'), '--device', 'cpu']
    proc = subprocess.run(base + ['--launch'], cwd=str(tmp_path), capture_output=True, text=True, env=REPO_ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'refs' / 'digit-detector.pt').is_file() and (tmp_path / 'refs' / 'digits.npz').is_file()
    for method in ('loguniform', 'infonoise'):
        run = out / 'digits' / f'{method}-seed0'
        records = report.read_jsonl(str(run / 'metrics.jsonl'))
        snapshots = report.snapshot_kimgs(str(run))
        assert [r['snapshot'] for r in records] == sorted(snapshots) and len(records) == 2
        assert [r['kimg'] for r in records] == [0.128, 1.024]       # exact kimg of the two ticks
        assert all(r['metric'] == 'digit Fréchet' and np.isfinite(r['value']) and r['value'] > 0 for r in records)
        assert records[-1]['value'] < records[0]['value']            # 1 kimg of training beats the first step
    # Evaluating again scores nothing new.
    again = subprocess.run(base + ['--eval-only'], cwd=str(tmp_path), capture_output=True, text=True, env=REPO_ENV, timeout=300)
    assert again.returncode == 0 and 'Scored 0 snapshot(s)' in again.stdout
    result = CliRunner().invoke(report.main, [str(out), '--plots', str(tmp_path / 'plots')])
    assert result.exit_code == 0, result.output
    assert '#### 8x8 digits (EDM objective) (digit Fréchet)' in result.output
    assert '×' in next(line for line in result.output.splitlines() if line.startswith('| InfoNoise'))
    assert (tmp_path / 'plots' / 'digits.png').is_file()


def test_source_commit_from_a_checkout_and_from_a_git_archive_copy(tmp_path, monkeypatch):
    """Results name the commit they were made from: in a checkout its HEAD; in a `git archive` copy (no .git) the
    hash git substitutes into scripts/archive_commit.txt; nothing when neither is known."""
    import subprocess

    from scripts import reproduce
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip('not a git checkout')
    assert reproduce.source_commit() == head.stdout.strip()
    archived = subprocess.run(['git', 'archive', 'HEAD', 'scripts/archive_commit.txt'], cwd=root, capture_output=True)
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(archived.stdout)) as tar:
        text = tar.extractfile('scripts/archive_commit.txt').read().decode().strip()
    assert text == head.stdout.strip()                      # git substituted the hash (export-subst)
    copy = tmp_path / 'copy'
    (copy / 'scripts').mkdir(parents=True)
    (copy / 'scripts' / 'archive_commit.txt').write_text(text + '\n')
    monkeypatch.setattr(reproduce, 'ROOT', str(copy))
    monkeypatch.setenv('GIT_CEILING_DIRECTORIES', str(tmp_path))   # no enclosing repository is found
    assert reproduce.source_commit() == text
    (copy / 'scripts' / 'archive_commit.txt').write_text('$Format:%H$\n')   # a plain copy: unknown
    assert reproduce.source_commit() is None


def test_profile_lines_are_copied_thinned_evenly_with_first_and_last(tmp_path):
    from scripts import reproduce
    src, dest = tmp_path / 'infonoise.jsonl', tmp_path / 'out.jsonl'
    src.write_text(''.join(f'{{"kimg": {i}}}\n' for i in range(301)))
    reproduce.copy_thinned(str(src), str(dest), keep=4)
    assert dest.read_text() == '{"kimg": 0}\n{"kimg": 100}\n{"kimg": 200}\n{"kimg": 300}\n'   # 0, 1/3, 2/3, end
    src.write_text('{"kimg": 0}\n{"kimg": 1}\n')
    reproduce.copy_thinned(str(src), str(dest), keep=4)
    assert dest.read_text() == src.read_text()            # short files are copied whole
