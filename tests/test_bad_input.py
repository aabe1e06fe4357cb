"""The bad-input sweep: every input below ends with one sentence and a non-zero exit, never a traceback or a
silent garbage result; and no message passes on a library's advice to load a file unsafely."""
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import fid
import generate
import train
from helpers import assert_clean_error
from torch_utils import persistence
from training import checkpoint
from training.networks import EDMPrecond

pytestmark = pytest.mark.usefixtures('one_torch_thread')

UNSAFE_ADVICE = ('weights_only', 'allow_pickle', 'trust the source')


def assert_one_sentence(result, *phrases):
    assert_clean_error(result, *phrases)
    for advice in UNSAFE_ADVICE:
        assert advice not in result.output, result.output


def tiny_net() -> EDMPrecond:
    torch.manual_seed(0)
    return EDMPrecond(img_resolution=8, img_channels=3, label_dim=0, model_type='SongUNet', model_channels=8,
                      channel_mult=[1], num_blocks=1, attn_resolutions=[], dropout=0).eval()


def write_snapshot(path, net, infonoise=None) -> str:
    persistence.dump_network_pickle(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={},
                                         infonoise=infonoise), str(path))
    return str(path)


@pytest.fixture(scope='module')
def snap(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp('snap') / 'net.pkl', tiny_net())


@pytest.fixture(scope='module')
def blocker(tmp_path_factory):
    """A regular file: any folder 'inside' it cannot be created or written (works as root, unlike chmod)."""
    path = tmp_path_factory.mktemp('block') / 'a-file'
    path.write_text('x')
    return path


def gen(*args):
    return CliRunner().invoke(generate.main, [str(a) for a in args] + ['--device', 'cpu'])


def fid_cli(*args):
    return CliRunner().invoke(fid.main, [str(a) for a in args])


def trn(*args):
    return CliRunner().invoke(train.main, [str(a) for a in args])


# ------------------------------------------------------------------------------------------------------------
# generate.py

def test_generate_into_an_unwritable_folder(snap, blocker):
    assert_one_sentence(gen('--network', snap, '--outdir', blocker / 'out', '--seeds', '0-1', '--steps', 2),
                        'Cannot write', str(blocker))


def test_generate_with_a_path_component_over_255_bytes(snap, tmp_path):
    assert_one_sentence(gen('--network', snap, '--outdir', tmp_path / ('x' * 300), '--seeds', '0', '--steps', 2),
                        'Cannot write', 'name too long')


def test_generate_grid_out_into_an_unwritable_folder(snap, blocker, tmp_path):
    assert_one_sentence(gen('--network', snap, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 2,
                            '--grid-out', blocker / 'grid.json'), 'Cannot write', str(blocker))


@pytest.mark.parametrize('args, phrase', [
    (['--seeds', '0-99999999999'], 'more than 10,000,000 seeds'),
    (['--seeds', '99999999999999999999'], 'at most'),
    (['--rho', '0.001'], 'degenerate σ grid'),
    (['--rho', 'inf'], 'not a finite number'),
    (['--rho', 'nan'], 'not a finite number'),
    (['--guidance', 'nan'], 'not a finite number'),
    (['--guidance', 'inf'], 'not a finite number'),
    (['--S_noise', 'nan'], 'not a finite number'),
    (['--S_max', 'nan'], 'not a finite number'),
    (['--sigma_max', '1e39'], 'range'),
    (['--sigmas', '1e39,1,0.002'], 'too large'),
    (['--sigmas', 'nan,1,0.002'], 'σ'),
])
def test_generate_refuses_non_finite_and_overflowing_numbers(snap, tmp_path, args, phrase):
    out = tmp_path / 'out'
    assert_one_sentence(gen('--network', snap, '--outdir', out, '--steps', 4, *args), phrase)
    assert not out.exists() or not os.listdir(out)


def test_generate_legal_extremes_still_work(snap, tmp_path):
    # S_max = inf is EDM's default (no upper bound), and a large but legal rho gives a decreasing grid.
    result = gen('--network', snap, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 3, '--rho', 50,
                 '--S_max', 'inf', '--verbose')
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'o' / '000000.png').is_file()


def test_a_snapshot_with_non_finite_weights_is_refused(tmp_path):
    net = tiny_net()
    with torch.no_grad():
        next(net.parameters()).fill_(float('nan'))     # what --lr inf used to save
    bad = write_snapshot(tmp_path / 'nan.pkl', net)
    assert_one_sentence(gen('--network', bad, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 2),
                        'non-finite weights')


@pytest.mark.parametrize('entry', [5, 'text', {'rate': 'x'}, {'rate': [1, 2], 'sigma': None}])
def test_a_snapshot_whose_infonoise_entry_is_not_a_profile(tmp_path, entry):
    bad = write_snapshot(tmp_path / 'p.pkl', tiny_net(), infonoise=entry)
    result = gen('--network', bad, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 4, '--infogrid')
    assert_one_sentence(result, 'profile')


# ------------------------------------------------------------------------------------------------------------
# fid.py

class MeanDetector(torch.nn.Module):
    def forward(self, x, return_features: bool = True):
        return x.float().mean(dim=(2, 3))


@pytest.fixture(scope='module')
def fid_env(tmp_path_factory):
    root = tmp_path_factory.mktemp('fid')
    detector = root / 'det.pt'
    torch.jit.save(torch.jit.script(MeanDetector()), str(detector))
    images = root / 'images'
    images.mkdir()
    rs = np.random.RandomState(0)
    for i in range(6):
        PIL.Image.fromarray(rs.randint(0, 256, (8, 8, 3)).astype(np.uint8)).save(images / f'{i}.png')
    ref = root / 'ref.npz'
    np.savez(ref, mu=np.zeros(3), sigma=np.eye(3))
    return dict(root=root, detector=detector, images=images, ref=ref)


def test_fid_ref_dest_into_an_unwritable_folder(fid_env, blocker):
    result = fid_cli('ref', '--data', fid_env['images'], '--dest', blocker / 'ref.npz', '--detector',
                     fid_env['detector'], '--workers', 0, '--device', 'cpu')
    assert_one_sentence(result, 'Cannot write', str(blocker))


def test_fid_dna_json_into_an_unwritable_folder(blocker):
    from helpers import ROOT
    table = os.path.join(ROOT, 'tests', 'data', 'dna_excerpt.tsv')
    samples = blocker.parent / 'samples.fa'
    from training.metrics.dna_eval import DNAReference
    seq_len = DNAReference(f'dna:{table}', 'test').seq_len
    samples.write_text(''.join(f'>s{i}\n{"ACGT" * (seq_len // 4)}{"A" * (seq_len % 4)}\n' for i in range(4)))
    result = fid_cli('dna', '--samples', samples, '--data', f'dna:{table}', '--metrics', 'kmer',
                     '--json', blocker / 'sub' / 'report.json')
    assert_one_sentence(result, 'Cannot write', str(blocker))


def test_fid_calc_num_too_large(fid_env, snap):
    result = fid_cli('calc', '--network', snap, '--ref', fid_env['ref'], '--num', '99999999999',
                     '--detector', fid_env['detector'], '--device', 'cpu')
    assert_one_sentence(result, '--num')


def test_fid_calc_nan_reference(fid_env, tmp_path):
    ref = tmp_path / 'nan.npz'
    np.savez(ref, mu=np.array([np.nan, 0, 0]), sigma=np.eye(3))
    result = fid_cli('calc', '--images', fid_env['images'], '--ref', ref, '--num', 4, '--detector',
                     fid_env['detector'], '--workers', 0, '--device', 'cpu')
    assert_one_sentence(result, 'non-finite statistics')


def test_fid_calc_of_a_network_with_nan_weights(fid_env, tmp_path):
    net = tiny_net()
    with torch.no_grad():
        next(net.parameters()).fill_(float('nan'))
    bad = write_snapshot(tmp_path / 'nan.pkl', net)
    result = fid_cli('calc', '--network', bad, '--ref', fid_env['ref'], '--num', 4, '--steps', 2, '--detector',
                     fid_env['detector'], '--device', 'cpu')
    assert_one_sentence(result, 'non-finite weights')


def test_fid_calc_reference_with_python_objects_gives_no_unsafe_advice(fid_env, tmp_path):
    ref = tmp_path / 'obj.npz'
    np.savez(ref, mu=np.array([object(), 1], dtype=object), sigma=np.eye(2))
    result = fid_cli('calc', '--images', fid_env['images'], '--ref', ref, '--num', 4, '--detector',
                     fid_env['detector'], '--device', 'cpu')
    assert_one_sentence(result, 'refused')


def test_fid_ref_of_a_decompression_bomb(fid_env, tmp_path, monkeypatch):
    folder = tmp_path / 'bomb'
    folder.mkdir()
    for i in range(3):
        PIL.Image.new('RGB', (64, 64)).save(folder / f'{i}.png')
    monkeypatch.setattr(PIL.Image, 'MAX_IMAGE_PIXELS', 1000)   # 4096 pixels is then over twice the limit
    result = fid_cli('ref', '--data', folder, '--dest', tmp_path / 'r.npz', '--detector', fid_env['detector'],
                     '--workers', 0, '--device', 'cpu')
    assert_one_sentence(result, 'decompression bomb')
    assert not (tmp_path / 'r.npz').exists()


# ------------------------------------------------------------------------------------------------------------
# train.py

BASE = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 32, '--kimg', 0.032, '--workers', 0,
        '--grid', 0, '--plot', 0, '--tick', 0.032, '--snap', 1, '--dump', 1, '--augment', 0]


@pytest.mark.parametrize('args, phrase', [
    (['--lr', 'inf'], '--lr'),
    (['--lr', 'nan'], '--lr'),
    (['--ema', 'inf'], '--ema'),
    (['--p-mean', 'nan'], '--p-mean'),
    (['--desc', 'exp/v2'], 'path separator'),
])
def test_train_refuses_bad_options_before_any_run_folder(tmp_path, args, phrase):
    out = tmp_path / 'runs'
    assert_one_sentence(trn('--outdir', out, *BASE, *args), phrase)
    assert not out.exists()


@pytest.mark.parametrize('kwargs, phrase', [
    ({'model_channels': 'wide'}, 'model_channels'),
    ({'num_blocks': 1.5}, 'num_blocks'),
    ({'attn_resolutions': 'all'}, 'attn_resolutions'),
    ({'dropout': 'NaN'}, 'dropout'),
    ({'no_such_parameter': 1}, 'no_such_parameter'),
    ({'model_type': 'os.system'}, 'model_type'),
    ([1, 2], 'network_kwargs'),
])
def test_preset_network_kwargs_of_the_wrong_type(tmp_path, kwargs, phrase):
    recipe = tmp_path / 'recipe.json'
    recipe.write_text(json.dumps({'options': {}, 'network_kwargs': kwargs}))
    out = tmp_path / 'runs'
    assert_one_sentence(trn('--outdir', out, *BASE[2:], '--preset', recipe), phrase)
    assert not out.exists()


@pytest.fixture(scope='module')
def state_file(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp('state') / 'run'
    result = trn('--outdir', run_dir, '--nosubdir', *BASE, '--kimg', 0.064)   # a state at the second tick
    assert result.exit_code == 0, result.output
    return run_dir / 'training-state-000000.pt'


def _mangle(state_file, tmp_path, change):
    state = torch.load(state_file, weights_only=True)
    change(state)
    path = tmp_path / 'training-state-000000.pt'
    torch.save(state, path)
    return path


class NotPlainData:
    pass


@pytest.mark.parametrize('name, change, phrase', [
    ('no config', lambda s: s.pop('config'), 'malformed training state'),
    ('cur_nimg text', lambda s: s.update(cur_nimg='many'), 'cur_nimg'),
    ('bad rng', lambda s: s['ranks'][0]['rng'].update(torch=torch.zeros(3, dtype=torch.uint8)), 'RNG state'),
    ('rng missing', lambda s: s['ranks'][0].pop('rng'), 'RNG state'),
    ('bad data state', lambda s: s['data'].update(position=-4), 'data-stream'),
    ('missing network key', lambda s: s['net'].pop(next(iter(s['net']))), 'does not fit this network'),
    ('options not a dict', lambda s: s.update(options=[1]), 'options'),
    ('python object', lambda s: s.update(extra=NotPlainData()), 'could run code'),
])
def test_malformed_training_states_give_one_sentence(state_file, tmp_path, name, change, phrase):
    path = _mangle(state_file, tmp_path, change)
    result = trn('--outdir', tmp_path / 'out', '--nosubdir', '--resume', path, '--kimg', 0.128)
    assert_one_sentence(result, phrase)


def test_state_reasons_never_quote_unsafe_advice(state_file, tmp_path):
    path = _mangle(state_file, tmp_path, lambda s: s.update(extra=NotPlainData()))
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load_training_state(str(path))
    for advice in UNSAFE_ADVICE:
        assert advice not in str(info.value)


def test_a_metric_failing_during_training_logs_one_line_and_training_goes_on(tmp_path, monkeypatch):
    # --metrics fid on a machine without the detector: a planted, wrong file sits where the pinned detector is
    # cached, so the evaluation fails at once (no download is attempted).
    from dnnlib import util
    from training.metrics.detector import INCEPTION_URL
    cache = tmp_path / 'cache'
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(cache))
    path = util.cache_file_path(INCEPTION_URL, str(cache / 'downloads'))
    os.makedirs(os.path.dirname(path))
    with open(path, 'wb') as f:
        f.write(b'not the detector')
    run_dir = tmp_path / 'run'
    result = trn('--outdir', run_dir, '--nosubdir', *BASE, '--kimg', 0.064, '--metrics', 'fid',
                 '--metrics-every', 0.032, '--metrics-num', 4, '--metrics-steps', 2)
    assert result.exit_code == 0, result.output
    failures = [ln for ln in result.output.splitlines() if '--metrics evaluation' in ln]
    assert len(failures) >= 1 and 'training goes on' in failures[0] and str(path) in failures[0], result.output
    assert (run_dir / 'training-state-000000.pt').is_file()
    assert checkpoint.load_training_state(str(run_dir / 'training-state-000000.pt'))['cur_nimg'] >= 32


class _RunsCode:
    def __reduce__(self):
        return print, ('this would run',)


class _StorageRecord:
    """A snapshot entry whose storage bytes hold a pickle that is not plain tensor data."""

    def __init__(self, data):
        self.data = data

    def __reduce__(self):
        import torch.storage
        return torch.storage._load_from_bytes, (self.data,)


def test_snapshot_messages_never_quote_unsafe_advice(tmp_path):
    import io
    import pickle
    inner = io.BytesIO()
    torch.save({'x': _RunsCode()}, inner, _use_new_zipfile_serialization=False)
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(pickle.dumps({'ema': _StorageRecord(inner.getvalue())}, protocol=4))
    result = gen('--network', bad, '--outdir', tmp_path / 'o', '--seeds', '0')
    assert_one_sentence(result, 'bad.pkl', 'storage')
