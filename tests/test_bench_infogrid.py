"""scripts/bench_infogrid.py: the grid × NFE × solver harness on a tiny snapshot, its outputs and bad input."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import assert_clean_error

import infonoise
from scripts import bench_infogrid as bench
from torch_utils import persistence
from training import sampler as samplers
from training.networks import EDMPrecond

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def profile():
    grid = infonoise.SigmaGrid(0.002, 80, 24)
    sigma = grid.sigma.numpy()
    return dict(sigma=sigma, edges=grid.edges.numpy(), rate=infonoise.GaussianMixture(64, s=0.3).rate(sigma))


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    torch.manual_seed(0)
    net = EDMPrecond(img_resolution=8, img_channels=1, label_dim=0, model_type='SongUNet', model_channels=8,
                     channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0).eval()
    path = tmp_path_factory.mktemp('snap') / 'net.pkl'
    persistence.dump_network_pickle(dict(ema=net, loss_fn=None, augment_pipe=None,
                                         dataset_kwargs={'name': 'digits'},
                                         infonoise=infonoise.profile_to_json(profile())), str(path))
    return str(path)


def test_steps_for_each_solver():
    assert [bench.steps_for('heun', n) for n in (5, 7, 35, 6)] == [3, 4, 18, None]
    assert bench.steps_for('sde', 9) == 5 and bench.steps_for('euler', 6) == 6


def test_unreachable_nfe_is_named():
    assert bench.unreachable_note(['heun', 'euler', 'sde'], [4, 5, 6]) == \
        'Skipped: heun cannot reach NFE 4, 6 (its NFE is 2N − 1); sde cannot reach NFE 4, 6 (its NFE is 2N − 1).'
    assert bench.unreachable_note(['euler'], [4, 5]) is None


def test_auto_metric_reads_the_dataset():
    assert bench.auto_metric({'name': 'digits'}) == 'fd-digits'
    assert bench.auto_metric({'class_name': 'training.dataset.DigitsDataset', 'name': 'digits-binary'}) == \
        'fd-digits-binary'
    assert bench.auto_metric({'name': 'mnist5k'}) == 'fd-mnist'
    with pytest.raises(ValueError, match='--metric'):
        bench.auto_metric({'name': 'cifar10'})


def run_small(snapshot, out, grids, solvers, nfe, *extra):
    args = ['--network', snapshot, '--outdir', out, '--grids', grids, '--solvers', solvers, '--nfe', nfe,
            '--sets', 2, '--num', 12, '--traj-num', 4, '--ref-steps', 16, '--calibrate', 2, '--calib-ref-steps', 8,
            *extra]
    r = CliRunner().invoke(bench.main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / 'bench_infogrid.json').read_text())['snapshots'][snapshot]
    run_small.output = r.output   # the last run's console output
    return rec


def test_small_run_writes_table_json_and_png(snapshot, tmp_path):
    out = tmp_path / 'out'
    rec = run_small(snapshot, out, 'edm,infogrid-solver,infogrid-calibrated', 'heun,euler', '5,6')
    assert rec['metric'] == 'fd-digits'                                # auto: the snapshot's dataset is digits
    # Heun reaches NFE 5 only (odd NFE), Euler both.
    assert set(rec['results']['heun']['edm']) == {'5'} and set(rec['results']['euler']['edm']) == {'5', '6'}
    assert 'Skipped: heun cannot reach NFE 6 (its NFE is 2N − 1).' in run_small.output.splitlines()
    cell = rec['results']['heun']['edm']['5']
    assert cell['num_steps'] == 3 and len(cell['metric']) == 2 and len(cell['traj']) == 2
    np.testing.assert_allclose(cell['sigma_steps'], samplers.edm_sigma_steps(3, 0.002, 80).numpy(), rtol=1e-12)
    assert cell['metric'][0] != cell['metric'][1]                      # two different latent sets
    assert set(rec['calibration']) == {'heun', 'euler'}
    calib = rec['calibration']['heun']['3']
    np.testing.assert_allclose(rec['results']['heun']['infogrid-calibrated']['5']['sigma_steps'], calib['sigma_steps'])
    assert (out / 'bench_infogrid.png').read_bytes()[:4] == b'\x89PNG'
    table = (out / 'bench_infogrid.md').read_text()
    assert '### heun: fd-digits' in table and '### euler: trajectory error' in table
    assert '| infogrid-solver |' in table and 'Best or tied' in table


def test_calibrate_zero_leaves_the_calibrated_grid_out(snapshot, tmp_path):
    rec = run_small(snapshot, tmp_path / 'out', 'edm,infogrid-calibrated', 'heun', '5', '--calibrate', '0')
    assert set(rec['results']['heun']) == {'edm'} and not rec['calibration']
    assert '--calibrate 0: infogrid-calibrated is skipped.' in run_small.output.splitlines()
    alone = CliRunner().invoke(bench.main, ['--network', snapshot, '--outdir', str(tmp_path), '--nfe', '5',
                                            '--grids', 'infogrid-calibrated', '--calibrate', '0'])
    assert_clean_error(alone, 'only grid named')


@pytest.mark.slow
def test_every_grid_and_the_stochastic_sampler(snapshot, tmp_path):
    rec = run_small(snapshot, tmp_path / 'out', ','.join(bench.GRID_NAMES), 'heun,sde', '5')
    assert set(rec['results']['sde']) == set(bench.GRID_NAMES)
    assert rec['results']['sde']['edm']['5']['traj'] == [] and rec['results']['sde']['edm']['5']['traj_mean'] is None
    assert all(np.isfinite(c['5']['metric_mean']) for c in rec['results']['heun'].values())


def test_trajectory_error_is_zero_for_the_reference_grid(snapshot, tmp_path):
    """Sampling on the reference grid itself reproduces the reference: trajectory error 0 (same latents)."""
    net = bench.network_io.load_network(snapshot)['ema']
    latents, labels = bench.make_latents(net, 6, 3)
    ref = bench.reference_samples(net, latents, labels, 0.002, 80, 12)
    x = bench.run_sampler(net, latents, labels, samplers.edm_sigma_steps(12, 0.002, 80), 'heun', 0, batch=4)
    assert bench.trajectory_error(x, ref) < 1e-12


def test_best_or_tied_uses_the_set_spread():
    per_grid = {'a': {'5': {'m': 10.0, 's': [9.0, 11.0]}}, 'b': {'5': {'m': 11.5, 's': [11.0, 12.0]}},
                'c': {'5': {'m': 13.0, 's': [12.9, 13.1]}}}
    assert bench.best_or_tied(per_grid, ['5'], 'm', 's') == {'5': ['a', 'b']}


@pytest.mark.parametrize('args,phrase', [
    (['--grids', 'edm,nope'], 'unknown name'),
    (['--nfe', 'a,b'], 'comma-separated'),
    (['--nfe', '1'], 'at least 2'),
    (['--metric', 'fd-nothing'], 'unknown metric'),
])
def test_bad_input_is_one_clear_error(snapshot, tmp_path, args, phrase):
    r = CliRunner().invoke(bench.main, ['--network', snapshot, '--outdir', str(tmp_path), '--nfe', '5', '--num', '4',
                                        '--grids', 'edm', *args])
    assert_clean_error(r, phrase)


def test_network_is_required_without_quick(tmp_path):
    assert_clean_error(CliRunner().invoke(bench.main, ['--outdir', str(tmp_path)]), '--network')


def _cells(means_by_nfe, spread=0.0):
    return {nfe: {'metric_mean': m, 'metric': [m - spread / 2, m + spread / 2]} for nfe, m in means_by_nfe.items()}


def test_decision_needs_best_or_tied_at_every_nfe_on_every_snapshot():
    """Two snapshots: 'b' wins the first everywhere but loses NFE 35 of the second by 10 % (> 2 %, > spread)."""
    first = {'results': {'heun': {'a': _cells({'5': 12.0, '35': 9.0}), 'b': _cells({'5': 10.0, '35': 8.9})}},
             'metric': 'fd-x'}
    second = {'results': {'heun': {'a': _cells({'5': 20.0, '35': 5.0}), 'b': _cells({'5': 18.0, '35': 5.5})},
                          'euler': {'a': _cells({'5': 30.0}), 'b': _cells({'5': 30.3})}}, 'metric': 'fd-x'}
    d = bench.decision({'one': first, 'two': second})
    assert d['heun']['everywhere'] == [] and d['heun']['snapshots'] == 2
    assert d['heun']['cells'] == {'a': [2, 4], 'b': [3, 4]}       # a ties b at NFE 35 of 'one' (9.0 vs 8.9: 1.1 %)
    assert d['euler'] == {'everywhere': ['a', 'b'], 'cells': {'a': [1, 1], 'b': [1, 1]}, 'snapshots': 1}
    assert bench.decision({'one': first})['heun']['everywhere'] == ['b']


def test_merge_rerenders_earlier_runs_without_sampling(snapshot, tmp_path):
    first = run_small(snapshot, tmp_path / 'one', 'edm,infogrid-solver', 'heun', '5')
    r = CliRunner().invoke(bench.main, ['--merge', str(tmp_path / 'one'), '--outdir', str(tmp_path / 'all')])
    assert r.exit_code == 0, r.output
    merged = json.loads((tmp_path / 'all' / 'bench_infogrid.json').read_text())
    assert merged['snapshots'][snapshot] == first                     # the values, untouched
    assert list(merged['settings']['merged']) == [str(tmp_path / 'one' / 'bench_infogrid.json')]
    assert '## Decision over 1 snapshot(s)' in (tmp_path / 'all' / 'bench_infogrid.md').read_text()


@pytest.mark.parametrize('content,phrase', [(None, 'cannot read'), ('{', 'not JSON'), ('[]', 'no "snapshots"')])
def test_merge_bad_input_is_one_clear_error(tmp_path, content, phrase):
    path = tmp_path / 'b.json'
    if content is not None:
        path.write_text(content)
    r = CliRunner().invoke(bench.main, ['--merge', str(path), '--outdir', str(tmp_path / 'o')])
    assert_clean_error(r, phrase)


def test_merge_records_replaces_cells_per_solver_grid_and_nfe():
    one = {'p': {'metric': 'fd-x', 'seconds': 1.0, 'calibration': {'heun': {'3': 'a'}},
                 'results': {'heun': {'edm': {'5': 1}, 'infogrid-solver': {'5': 2}}}}}
    two = {'p': {'metric': 'fd-x', 'seconds': 2.0, 'calibration': {'heun': {'4': 'b'}},
                 'results': {'heun': {'infogrid-solver': {'5': 3, '7': 9}}, 'euler': {'edm': {'5': 4}}}},
           'q': {'metric': 'fd-y', 'results': {}}}
    merged = bench.merge_records([one, two])
    assert merged['p']['results'] == {'heun': {'edm': {'5': 1}, 'infogrid-solver': {'5': 3, '7': 9}},
                                      'euler': {'edm': {'5': 4}}}
    assert merged['p']['calibration'] == {'heun': {'3': 'a', '4': 'b'}} and merged['p']['seconds'] == 3.0
    assert set(merged) == {'p', 'q'} and one['p']['results']['heun']['infogrid-solver'] == {'5': 2}   # inputs intact
    with pytest.raises(ValueError, match='merge runs of one metric'):
        bench.merge_records([one, {'p': {'metric': 'fd-z', 'results': {}}}])


def test_converged_metric_is_the_fine_edm_run_on_the_same_sets(snapshot, tmp_path):
    """--converged-steps 3 is EDM's 3-level Heun grid on the same latent sets: the NFE 5 edm cell, value for value."""
    rec = run_small(snapshot, tmp_path / 'out', 'edm', 'heun', '5', '--converged-steps', 3)
    assert rec['converged']['num_steps'] == 3
    np.testing.assert_allclose(rec['converged']['metric'], rec['results']['heun']['edm']['5']['metric'], rtol=1e-12)
    assert 'Converged fd-digits (3-level EDM Heun' in (tmp_path / 'out' / 'bench_infogrid.md').read_text()
    assert run_small(snapshot, tmp_path / 'no', 'edm', 'heun', '5')['converged'] is None


def test_decision_among_candidates_and_by_trajectory_error():
    rec = {'metric': 'fd-x', 'results': {'heun': {
        'edm': {'5': {'metric_mean': 5.0, 'metric': [5.0, 5.0], 'traj_mean': 3.0, 'traj': [3.0, 3.0]}},
        'infogrid-a': {'5': {'metric_mean': 6.0, 'metric': [6.0, 6.0], 'traj_mean': 1.0, 'traj': [1.0, 1.0]}},
        'infogrid-b': {'5': {'metric_mean': 7.0, 'metric': [7.0, 7.0], 'traj_mean': 2.0, 'traj': [2.0, 2.0]}}}}}
    assert bench.decision({'s': rec})['heun']['everywhere'] == ['edm']
    assert bench.decision({'s': rec}, bench.is_infogrid)['heun']['everywhere'] == ['infogrid-a']
    assert bench.decision({'s': rec}, key='traj_mean', spread_key='traj')['heun']['everywhere'] == ['infogrid-a']
    assert bench.decision({'s': rec}, lambda g: g == 'nope') == {}
    sde = {'metric': 'fd-x', 'results': {'sde': {'edm': {'5': {'metric_mean': 1.0, 'metric': [1.0], 'traj_mean': None}}}}}
    assert bench.decision({'s': sde}, key='traj_mean', spread_key='traj') == {}     # no trajectory error for sde
    other = {'metric': 'fd-x', 'results': {'heun': {'edm': {'5': {'metric_mean': 1.0, 'metric': [1.0, 1.0]}}}}}
    d = bench.decision({'s': rec, 't': other})['heun']             # the InfoGrid rows are missing from 't'
    assert d['everywhere'] == ['edm'] and d['cells'] == {'edm': [2, 2], 'infogrid-a': [0, 1], 'infogrid-b': [0, 1]}
    lines = '\n'.join(bench.decision_markdown({'s': rec}))
    assert 'InfoGrid constructions only, heun (1 snapshot(s)): best or tied everywhere: infogrid-a.' in lines


def test_versus_counts_wins_ties_and_losses_against_edm():
    def cell(m, spread=0.0):
        return {'metric_mean': m, 'metric': [m - spread / 2, m + spread / 2], 'traj_mean': None}
    rec = {'metric': 'fd-x', 'results': {'heun': {
        'edm': {'5': cell(10.0), '7': cell(10.0), '9': cell(10.0)},
        'infogrid-a': {'5': cell(8.0), '7': cell(10.1), '9': cell(12.0), '11': cell(1.0)}}}}   # 1 % at NFE 7: a tie
    assert bench.versus({'s': rec}) == {'heun': {'infogrid-a': [1, 1, 1]}}                    # NFE 11: no EDM cell
    assert bench.versus({'s': rec}, key='traj_mean', spread_key='traj') == {}
    assert "infogrid-a 1/1/1" in '\n'.join(bench.decision_markdown({'s': rec}))
