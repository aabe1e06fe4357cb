"""train.py --metrics: metrics.jsonl rows at the scheduled kEx, the value equal to an offline evaluation of the
saved EMA network, training unchanged by evaluation, and clear errors for metrics that do not fit the data."""
import json

import pytest
import torch
from click.testing import CliRunner

import train
from torch_utils import persistence
from training.metrics import registry
from training.metrics.tracking import MetricsTracker

TINY = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 32, '--workers', 0, '--grid', 0,
        '--plot', 0, '--seed', 1, '--sigma-dist', 'lognormal']

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def run_cli(outdir, *args):
    return CliRunner().invoke(train.main, [str(a) for a in ['--outdir', outdir, '--nosubdir', *TINY, *args]])


def read_jsonl(path):
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def test_schedule_counts_from_zero_and_survives_a_resume():
    t = MetricsTracker(['fd-digits'], every_kimg=0.5, num_samples=4, dataset_kwargs=None)
    t.start(0)
    assert [n for n in range(0, 2001, 32) if t.due(n, False)][:1] == [512]
    t.start(512)
    assert not t.due(992, False) and t.due(1024, False) and t.due(100, True)
    t.start(1300)                       # a resumed run at 1.3 kimg: the next point is 1.5 kimg
    assert not t.due(1499, False) and t.due(1500, False)
    with pytest.raises(ValueError, match='positive'):
        MetricsTracker(['fd-digits'], every_kimg=0, num_samples=4, dataset_kwargs=None)


def test_metrics_jsonl_rows_match_an_offline_evaluation_and_leave_training_unchanged(tmp_path):
    with_m, without = tmp_path / 'with', tmp_path / 'without'
    r = run_cli(with_m, '--kimg', 0.64, '--tick', 0.64, '--snap', 1, '--metrics', 'fd-digits',
                '--metrics-every', 0.32, '--metrics-num', 50)
    assert r.exit_code == 0, r.output
    assert run_cli(without, '--kimg', 0.64, '--tick', 0.64, '--snap', 1).exit_code == 0
    rows = read_jsonl(with_m / 'metrics.jsonl')
    assert [(row['kimg'], row['kex'], row['metric']) for row in rows] == [(0.32, 0.32, 'fd-digits'),
                                                                       (0.64, 0.64, 'fd-digits')]
    assert all(row['value'] > 0 and row['seconds'] > 0 for row in rows)
    assert not (without / 'metrics.jsonl').exists()
    snaps = {}
    for name, d in (('with', with_m), ('without', without)):
        with open(d / 'network-snapshot-000000.pkl', 'rb') as f:
            snaps[name] = persistence.load_network_pickle(f)
    # Evaluation forks the random state: the trained networks are bitwise equal with and without metrics.
    for a, b in zip(snaps['with']['ema'].state_dict().values(), snaps['without']['ema'].state_dict().values()):
        assert torch.equal(a, b)
    # The last row is the metric of the final EMA network, recomputed offline from the snapshot.
    offline = registry.evaluate_metrics(['fd-digits'], snaps['with']['ema'], snaps['with']['dataset_kwargs'], 50,
                                        seed=1)['fd-digits']
    assert rows[-1]['value'] == pytest.approx(offline, rel=1e-6)


@pytest.mark.parametrize('metric', ['fd-dna', 'kmer-dna', 'fd-mnist'])
def test_a_metric_that_does_not_fit_the_data_is_one_clear_error(tmp_path, metric):
    r = run_cli(tmp_path / 'o', '--kimg', 0.1, '--metrics', metric)
    assert r.exit_code != 0 and 'Traceback' not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith('Error: ')]
    assert len(errors) == 1 and '--metrics' in errors[0], r.output
    assert not (tmp_path / 'o').exists()
