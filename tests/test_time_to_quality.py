"""Compute-to-target arithmetic (scripts/report.py) on curves with known answers, and the CPU benchmark CLI."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from scripts import report
from helpers import REPO_ENV



def test_first_reach_interpolates_linearly():
    k = [0, 10, 20]
    assert report.first_reach(k, [10, 6, 2], 4) == pytest.approx(15.0)
    assert report.first_reach(k, [10, 6, 2], 6) == 10.0            # met exactly at an evaluation
    assert report.first_reach(k, [3, 6, 2], 4) == 0.0              # the first evaluation already meets it
    assert report.first_reach(k, [10, 6, 5], 4) is None            # never
    assert report.first_reach([0, 10, 20, 30], [5, 3, 6, 1], 3) == 10.0   # the first crossing counts
    assert report.first_reach([0, 10, 20], [math.nan, 9, 1], 5) == pytest.approx(15.0)
    assert report.first_reach([0, 10], [math.nan, 1], 5) == 10.0  # no finite point before the crossing
    with pytest.raises(ValueError):
        report.first_reach([0, 1], [1], 0)


def test_mean_curve_uses_common_evaluations():
    k, mean, std = report.mean_curve([[(10, 1.0), (20, 3.0), (30, 5.0)], [(10, 3.0), (20, 5.0)]])
    np.testing.assert_array_equal(k, [10, 20])
    np.testing.assert_allclose(mean, [2.0, 4.0])
    np.testing.assert_allclose(std, [math.sqrt(2), math.sqrt(2)])   # sample std (ddof = 1)
    _, _, std1 = report.mean_curve([[(1, 2.0), (2, 1.0)]])
    np.testing.assert_array_equal(std1, [0, 0])


def _synthetic():
    kimg = [10, 20, 30, 40]
    return {
        'loguniform': {0: list(zip(kimg, [11, 9, 7, 5])), 1: list(zip(kimg, [9, 7, 5, 3]))},     # mean 10 8 6 4
        'edm': {0: list(zip(kimg, [9, 7, 5, 5])), 1: list(zip(kimg, [9, 7, 5, 5]))},            # mean 9 7 5 5
        'infonoise': {0: list(zip(kimg, [9, 5, 4, 3])), 1: list(zip(kimg, [7, 3, 2, 1]))},      # mean 8 4 3 2
    }


def test_compute_to_target_known_answers():
    s = report.compute_to_target(_synthetic())
    assert s['target'] == 4.0 and s['best_baseline'] == 'loguniform'
    lu, edm, ada = (s['methods'][m] for m in ('loguniform', 'edm', 'infonoise'))
    assert lu['kex'] == 40.0 and lu['reached']
    assert edm['kex'] == 40.0 and not edm['reached']                 # never reaches 4: reported at its budget
    assert ada['kex'] == pytest.approx(20.0) and ada['reached']
    assert lu['final_mean'] == 4.0 and lu['final_std'] == pytest.approx(math.sqrt(2))
    assert ada['final_mean'] == 2.0
    # Per seed: loguniform seed 0 never reaches 4 (budget 40), seed 1 at 30 + (5-4)/(5-3)*10 = 35;
    # InfoNoise seed 0 exactly at 30, seed 1 at 10 + (7-4)/(7-3)*10 = 17.5.
    assert lu['seeds']['0'] == dict(kex=40.0, reached=False, final=5.0, budget_kimg=40.0)
    assert lu['seeds']['1']['kex'] == pytest.approx(35.0)
    assert ada['seeds']['0']['kex'] == pytest.approx(30.0)
    assert ada['seeds']['1']['kex'] == pytest.approx(17.5)
    sp = s['speedup']
    assert sp['value'] == pytest.approx(2.0) and sp['reached'] and sp['baseline'] == 'loguniform'
    ratios = [40 / 30, 35 / 17.5]
    assert sp['per_seed']['0'] == pytest.approx(ratios[0]) and sp['per_seed']['1'] == pytest.approx(ratios[1])
    assert sp['seed_mean'] == pytest.approx(np.mean(ratios))
    assert sp['seed_std'] == pytest.approx(np.std(ratios, ddof=1))
    assert sp['censored_seeds'] == ['0']
    json.dumps(report.jsonable(s), allow_nan=False)


def test_compute_to_target_when_infonoise_misses_the_target():
    curves = {'edm': {0: [(10, 5.0), (20, 2.0)]}, 'infonoise': {0: [(10, 6.0), (20, 3.0), (40, 2.5)]}}
    s = report.compute_to_target(curves)
    assert s['target'] == 2.0
    assert not s['methods']['infonoise']['reached'] and s['methods']['infonoise']['kex'] == 40.0
    assert s['speedup']['value'] == pytest.approx(0.5) and not s['speedup']['reached']
    text = report.markdown_table({'r': dict(title='R', metric='FID', section='a', curves=curves)}, {'r': s})
    assert '≤0.50×' in text and '>40' in text
    with pytest.raises(ValueError, match='baseline'):
        report.compute_to_target({'infonoise': curves['infonoise']})


def test_markdown_table_reports_speedup_and_spread():
    s = report.compute_to_target(_synthetic())
    text = report.markdown_table({'bmnist': dict(title='bMNIST', metric='FID', section='a', curves=_synthetic())},
                                 {'bmnist': s})
    assert 'Table 1(a)' in text
    row = next(line for line in text.splitlines() if line.startswith('| bMNIST'))
    assert '2.00×' in row and 'seeds 1.67 ± 0.47' in row and '4 ± 1.4' in row and '| 20 |' in row


def test_bench_cli_tiny_run(tmp_path):
    out = tmp_path / 'ttq.json'
    cmd = [sys.executable, '-m', 'scripts.bench_time_to_quality', '--settings', 'binary',
           '--methods', 'loguniform,infonoise', '--seeds', '1', '--kimg', '1', '--eval-every', '1',
           '--num-images', '16', '--steps', '3', '--device', 'cpu', '--workdir', str(tmp_path / 'runs'),
           '--json', str(out)]
    proc = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, env=REPO_ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'binarised 8x8 digits' in proc.stdout and 'kEx@target' in proc.stdout
    data = json.loads(out.read_text())
    setting = data['settings']['binary']
    runs = setting['runs']
    assert set(runs) == {'loguniform', 'infonoise'}
    curve = runs['loguniform']['0']['curve']
    assert [round(k, 3) for k, _ in curve] == [1.024]            # one evaluation after the first tick
    assert all(np.isfinite(v) and v > 0 for _, v in curve)
    # Target = the only baseline's best score; the speed-up is the ratio of the kEx entries.
    assert setting['target'] == pytest.approx(min(v for _, v in curve))
    assert setting['best_baseline'] == 'loguniform'
    # The runs are reusable: metrics.jsonl in report.py's format.
    _rows, summaries = report.build_report(str(tmp_path / 'runs'))
    assert summaries['binary']['target'] == pytest.approx(setting['target'])
    # Bad input: one sentence and a usage exit code.
    bad = subprocess.run(cmd[:3] + ['--settings', 'cifar'], capture_output=True, text=True, env=REPO_ENV, timeout=120)
    assert bad.returncode == 2 and 'unknown setting' in bad.stderr and 'Traceback' not in bad.stderr


def test_report_reads_train_py_metrics_files_with_several_metrics(tmp_path):
    # train.py --metrics writes {"kimg", "kex", "metric", "value", "seconds"} lines into RUNS/ROW/METHOD-seedS/.
    def write(row, method, seed, rows):
        d = tmp_path / row / f'{method}-seed{seed}'
        d.mkdir(parents=True)
        with open(d / 'metrics.jsonl', 'w') as f:
            for kimg, metric, value in rows:
                f.write(json.dumps(dict(kimg=kimg, kex=kimg, metric=metric, value=value, seconds=1.0)) + '\n')
    write('dna', 'loguniform', 0, [(2, 'fd-dna', 10.0), (2, 'kmer-dna', 0.04), (4, 'fd-dna', 6.0), (4, 'kmer-dna', 0.03)])
    write('dna', 'infonoise', 0, [(2, 'fd-dna', 6.0), (2, 'kmer-dna', 0.05), (4, 'fd-dna', 5.0), (4, 'kmer-dna', 0.02)])
    write('bmnist', 'infonoise', 0, [(2, 'fd-mnist', 5.0)])      # no baseline yet: left out, not an error
    rows, summaries = report.build_report(str(tmp_path))
    assert sorted(rows) == ['dna:fd-dna', 'dna:kmer-dna']
    # fd-dna: target 6 (log-uniform's best), InfoNoise reaches it at 2 kEx; kmer-dna: target 0.03, reached
    # between 2 (0.05) and 4 (0.02) kEx, linearly at 2 + 2 * (0.05 - 0.03) / (0.05 - 0.02).
    assert summaries['dna:fd-dna']['methods']['infonoise']['kex'] == pytest.approx(2.0)
    assert summaries['dna:kmer-dna']['methods']['infonoise']['kex'] == pytest.approx(2 + 2 * 0.02 / 0.03)
