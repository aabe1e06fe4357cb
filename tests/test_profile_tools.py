"""scripts.infonoise_profile: measure (network and exact empirical-Bayes profiles), replay and plot; the plotting
library."""
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import infonoise
from scripts import infonoise_profile as profile_cli
from torch_utils import persistence
from training import generation
from training.metrics import plotting
from training.dataset import open_dataset
from training.networks import EDMPrecond

BINS, PER_BIN, MAX_SIZE = 10, 48, 100


pytestmark = pytest.mark.usefixtures('one_torch_thread')


def zero_net() -> EDMPrecond:
    """An EDMPrecond whose inner model outputs exactly 0, so D(x; σ) = c_skip(σ)·x."""
    net = EDMPrecond(img_resolution=8, img_channels=1, model_type='SongUNet', model_channels=8, channel_mult=[1],
                     num_blocks=1, attn_resolutions=[], dropout=0)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net.eval()


def digits_subset(seed: int = 0) -> np.ndarray:
    """The seeded random subset profile.py uses (--max-size, subset seed = --seed)."""
    ds = open_dataset('builtin:digits', max_size=MAX_SIZE, random_seed=seed)
    return np.stack([ds[i][0] for i in range(len(ds))]).astype(np.float64) / 127.5 - 1


def assert_png(path):
    assert os.path.getsize(path) > 0
    with PIL.Image.open(path) as im:
        im.load()
        assert im.format == 'PNG' and im.size[0] > 100 and im.size[1] > 100
        assert len(im.convert('RGB').getcolors(maxcolors=1 << 20)) > 10   # something was drawn


def test_network_profile_matches_closed_form_of_a_skip_only_denoiser(tmp_path):
    snap = tmp_path / 'zero.pkl'
    persistence.dump_network_pickle(dict(ema=zero_net(), loss_fn=None, augment_pipe=None, dataset_kwargs={}), str(snap))
    out = tmp_path / 'net-profile.json'
    r = CliRunner().invoke(profile_cli.main, ['measure', '--network', str(snap), '--data', 'builtin:digits',
                                              '--max-size', MAX_SIZE,
                                              '--bins', BINS, '--per-bin', PER_BIN, '--batch', 128, '--out', str(out),
                                              '--device', 'cpu'])
    assert r.exit_code == 0, r.output
    prof = infonoise.profile_from_json(json.loads(out.read_text()))
    grid = infonoise.SigmaGrid(0.002, 80, BINS)
    np.testing.assert_allclose(prof['edges'], grid.edges.numpy())
    np.testing.assert_array_equal(prof['counts'], np.full(BINS, PER_BIN))
    np.testing.assert_allclose(prof['rate'], prof['mse'] / prof['sigma'] ** 3, rtol=1e-12)

    # Closed form: D = c_skip x with c_skip = sd²/(σ² + sd²), so per element
    # mse(σ) = (σ²/(σ² + sd²))² E[y²] + c_skip² σ², averaged over log σ inside each bin.
    m2 = np.mean(digits_subset() ** 2)
    sd2 = 0.25
    expected = []
    for lo, hi in zip(grid.edges.numpy()[:-1], grid.edges.numpy()[1:]):
        s = np.exp(np.linspace(np.log(lo), np.log(hi), 2001))
        mse = (s ** 2 / (s ** 2 + sd2)) ** 2 * m2 + (sd2 / (s ** 2 + sd2)) ** 2 * s ** 2
        expected.append(np.trapezoid(mse, np.log(s)) / np.log(hi / lo))
    np.testing.assert_allclose(prof["mse"], expected, rtol=0.1)
    widths = grid.widths.numpy()
    assert np.sum(prof['pi'] * widths) == pytest.approx(1.0, rel=1e-9)
    assert prof['u'][0] == 0 and prof['u'][-1] == pytest.approx(1.0)


def test_oracle_profile_is_the_empirical_bayes_rate_on_the_grid(tmp_path):
    out = tmp_path / 'oracle.json'
    r = CliRunner().invoke(profile_cli.main, ['measure', '--oracle', '--data', 'builtin:digits', '--max-size', MAX_SIZE,
                                              '--bins', BINS, '--per-bin', PER_BIN, '--seed', 3, '--out', str(out)])
    assert r.exit_code == 0, r.output
    prof = infonoise.profile_from_json(json.loads(out.read_text()))
    data = digits_subset(3)
    grid = infonoise.SigmaGrid(0.002, 80, BINS)
    oracle = infonoise.EmpiricalBayes(torch.from_numpy(data))
    rate = oracle.rate(grid.sigma.numpy(), num_samples=PER_BIN, generator=torch.Generator().manual_seed(3))
    expected = rate / data[0].size          # per-element convention of the training estimator
    np.testing.assert_allclose(prof['sigma'], grid.sigma.numpy())
    np.testing.assert_allclose(prof['rate'], expected, rtol=1e-6, atol=1e-9 * expected.max())
    assert expected[-1] > 0 and prof['source'] == 'oracle'

    # The file is a valid --infogrid-profile.
    loaded = generation.load_profile_file(str(out))
    steps = infonoise.infogrid_sigma_steps(loaded, 8, 0.002, 80)
    assert steps.shape == (9,) and steps[0] == 80 and steps[-1] == 0


def test_profile_cli_errors(tmp_path):
    r = CliRunner().invoke(profile_cli.main, ['measure', '--data', 'builtin:digits', '--out', str(tmp_path / 'x.json')])
    assert r.exit_code != 0 and 'Traceback' not in r.output and '--network or --oracle' in r.output
    snap = tmp_path / 'rgb.pkl'
    net = EDMPrecond(img_resolution=8, img_channels=3, model_type='SongUNet', model_channels=8, channel_mult=[1],
                     num_blocks=1, attn_resolutions=[], dropout=0)
    persistence.dump_network_pickle(dict(ema=net), str(snap))
    r = CliRunner().invoke(profile_cli.main, ['measure', '--network', str(snap), '--data', 'builtin:digits',
                                              '--out', str(tmp_path / 'x.json')])
    assert r.exit_code != 0 and 'Traceback' not in r.output and 'shape' in r.output
    assert not (tmp_path / 'x.json').exists()


def synthetic_profile(step: int, shift: float) -> dict:
    grid = infonoise.SigmaGrid(0.002, 80, 16)
    sigma, widths = grid.sigma.numpy(), grid.widths.numpy()
    rate = np.exp(-(np.log(sigma) - shift) ** 2)
    rho = rate / np.sum(rate * widths)
    pi = 0.9 * rho + 0.1 / (sigma * np.log(80 / 0.002))
    return dict(sigma=sigma, edges=grid.edges.numpy(), rate=rate, gated_rate=rate, rho=rho, pi=pi,
                phi=pi * infonoise.edm_weight(sigma), u=np.concatenate([[0], np.cumsum(rho * widths)]),
                pivot=0.01, step=step)


def test_plot_profile_cli_writes_pngs(tmp_path):
    rows = [infonoise.profile_to_json(synthetic_profile(step, shift)) for step, shift in ((200, -1), (400, 0), (600, 1))]
    (tmp_path / 'infonoise.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (tmp_path / 'grid.json').write_text(json.dumps({'sigma_steps': [80, 10, 1, 0.1, 0.002, 0]}))
    r = CliRunner().invoke(profile_cli.main, ['plot', str(tmp_path / 'infonoise.jsonl'),
                                              '--outdir', str(tmp_path / 'plots'),
                                           '--steps', 12, '--grid', str(tmp_path / 'grid.json')])
    assert r.exit_code == 0, r.output
    for name in ('profile.png', 'grids.png', 'emergence.png'):
        assert_png(tmp_path / 'plots' / name)

    (tmp_path / 'single.json').write_text(json.dumps(rows[0]))
    r = CliRunner().invoke(profile_cli.main, ['plot', str(tmp_path / 'single.json'),
                                              '--outdir', str(tmp_path / 'single')])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / 'single')) == ['grids.png', 'profile.png']

    (tmp_path / 'bad.json').write_text('{"foo": 1}')
    r = CliRunner().invoke(profile_cli.main, ['plot', str(tmp_path / 'bad.json')])
    assert r.exit_code != 0 and 'Traceback' not in r.output and 'no InfoNoise profile' in r.output


def test_plotting_library_functions(tmp_path):
    prof = synthetic_profile(100, 0.5)
    assert [key for key, _ in plotting.profile_panels(dict(prof, counts=np.ones(16)))] == ['rho', 'pi', 'phi', 'u']
    plotting.plot_profile(prof, str(tmp_path / 'p.png'))
    plotting.plot_emergence([infonoise.profile_to_json(prof)], str(tmp_path / 'e.png'))
    plotting.plot_grids({'a': [80, 1, 0.002, 0], 'b': np.geomspace(80, 0.002, 7)}, str(tmp_path / 'g.png'))
    for name in ('p.png', 'e.png', 'g.png'):
        assert_png(tmp_path / name)
    with pytest.raises(ValueError):
        plotting.plot_emergence([], str(tmp_path / 'none.png'))


def test_profile_densities_are_plotted_per_unit_log_sigma():
    # A log-uniform π is flat per unit ln σ (1 / ln R) although per unit σ it falls as 1/σ over 4.6 decades.
    grid = infonoise.SigmaGrid(0.002, 80.0, 64)
    prof = infonoise.LogUniformSampler(0.002, 80.0).profile(grid)
    flat = plotting.per_log_sigma(prof['pi'], prof['sigma'])
    np.testing.assert_allclose(flat, 1 / np.log(80 / 0.002), rtol=2e-3)   # bin-averaged 1/σ times σ_k
    assert prof['pi'][0] / prof['pi'][-1] > 1e4
    assert all('per unit ln σ' in label for key, label in plotting._PROFILE_PANELS if key != 'u')


RECORDED_RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            'docs', 'results', 'table1a', 'bmnist', 'infonoise-seed0')


def test_replay_gives_back_a_runs_recorded_tables_and_holds_or_changes_the_rule(tmp_path):
    # A real run's log (bMNIST, seed 0, 100 recorded refreshes, written by the training code of c256f0e).
    out = tmp_path / 'replay.json'
    r = CliRunner().invoke(profile_cli.main, ['replay', RECORDED_RUN, '--rows', '4', '--variants',
                                              'first-pivot,floor-0.25', '--json', str(out)])
    assert r.exit_code == 0, r.output
    assert 'largest |Δπ| / max π = 0.0e+00' in r.output                 # the recorded π, to the last bit
    result = json.loads(out.read_text())
    assert list(result['variants']) == ['as-run', 'first-pivot', 'floor-0.25'] and result['refreshes'] == 100
    lines = [json.loads(ln) for ln in open(os.path.join(RECORDED_RUN, 'infonoise.jsonl'))]
    as_run, held, floor = (result['variants'][v]['table'] for v in ('as-run', 'first-pivot', 'floor-0.25'))
    assert [row['kimg'] for row in as_run] == [lines[i]['kimg'] for i in (0, 33, 66, 99)]
    assert [row['pivot'] for row in as_run] == [lines[i]['pivot'] for i in (0, 33, 66, 99)]
    assert {row['pivot'] for row in held} == {lines[0]['pivot']}
    for row in as_run + held + floor:
        assert sum(row['shares']) == pytest.approx(1) and len(row['shares']) == 4
    # A floor of 0.25 puts at least a quarter of log-uniform's share above σ = 5 (log 16 / log 40,000).
    assert all(row['shares'][3] >= 0.25 * np.log(16) / np.log(4e4) for row in floor)


def test_replay_refuses_a_run_without_infonoise_in_one_sentence(tmp_path):
    fixed = os.path.join(os.path.dirname(RECORDED_RUN), 'loguniform-seed0')       # no infonoise.jsonl
    r = CliRunner().invoke(profile_cli.main, ['replay', fixed])
    assert r.exit_code == 1 and 'has no infonoise.jsonl' in r.output and 'Traceback' not in r.output
    rival = tmp_path / 'rival'                                  # a rival's run also logs profiles
    rival.mkdir()
    options = json.load(open(os.path.join(RECORDED_RUN, 'training_options.json')))
    options['sigma_sampler_kwargs']['class_name'] = 'infonoise.KingmaGaoSampler'
    (rival / 'training_options.json').write_text(json.dumps(options))
    (rival / 'infonoise.jsonl').write_text(open(os.path.join(RECORDED_RUN, 'infonoise.jsonl')).read())
    r = CliRunner().invoke(profile_cli.main, ['replay', str(rival)])
    assert r.exit_code == 1 and 'is not an InfoNoise run' in r.output and 'Traceback' not in r.output
    r = CliRunner().invoke(profile_cli.main, ['replay', RECORDED_RUN, '--variants', 'as-run,lower-pivot'])
    assert r.exit_code == 2 and 'unknown name(s) lower-pivot' in r.output
    r = CliRunner().invoke(profile_cli.main, ['replay', str(tmp_path)])
    assert r.exit_code == 1 and 'training_options.json' in r.output and 'Traceback' not in r.output


@pytest.mark.parametrize('row', ['bmnist', 'dna'])
def test_committed_replays_equal_the_commands_output(row, monkeypatch):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    committed = open(os.path.join(root, 'docs', 'results', 'table1a-replay', f'{row}-infonoise-seed0.md')).read()
    rows = committed.split('\n\n')[2].count('\n') - 1          # the as-run table: header, rule, then one line per row
    monkeypatch.chdir(root)                                      # the committed file names the run relative to the root
    r = CliRunner().invoke(profile_cli.main, ['replay', f'docs/results/table1a/{row}/infonoise-seed0',
                                              '--rows', str(rows)])
    assert r.exit_code == 0, r.output
    assert r.output == committed
