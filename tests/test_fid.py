"""fid.py and training.metrics.frechet / training.metrics.detector: FID maths, statistics, detector loading over HTTP, errors."""
import functools
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import torch
from helpers import assert_clean_error
from click.testing import CliRunner

import fid
import generate
from torch_utils import persistence
from training.metrics import frechet
from training.metrics.detector import DetectorError, load_detector
from training.networks import EDMPrecond

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURE_DIM = 16


pytestmark = pytest.mark.usefixtures('one_torch_thread')


class StandInDetector(torch.nn.Module):
    """Fixed random projection of 4x4-average-pooled RGB pixels to 16 features."""

    def __init__(self):
        super().__init__()
        self.register_buffer('proj', torch.randn(48, FEATURE_DIM, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.to(torch.float32) / 255, 4).flatten(1)
        return pooled @ self.proj


class FlatDetector(torch.nn.Module):
    """Wrong output shape: one flat vector for the whole batch."""

    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return x.to(torch.float32).flatten()


def features_of(images_nhwc: np.ndarray) -> np.ndarray:
    """Direct numpy reference for StandInDetector (grayscale repeated to RGB)."""
    if images_nhwc.shape[-1] == 1:
        images_nhwc = np.repeat(images_nhwc, 3, axis=-1)
    x = images_nhwc.astype(np.float64) / 255
    n, h, w, c = x.shape
    pooled = x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4))          # [n, 4, 4, c]
    pooled = pooled.transpose(0, 3, 1, 2).reshape(n, -1)                       # channel-major like flatten(1)
    proj = torch.randn(48, FEATURE_DIM, generator=torch.Generator().manual_seed(0)).double().numpy()
    return pooled @ proj


def stats_of(features: np.ndarray):
    return features.mean(0), np.cov(features, rowvar=False)


def fid_direct(a: np.ndarray, b: np.ndarray) -> float:
    (mu_a, sig_a), (mu_b, sig_b) = stats_of(a), stats_of(b)
    return float(np.real(np.sum((mu_a - mu_b) ** 2) + np.trace(sig_a + sig_b - 2 * scipy.linalg.sqrtm(sig_a @ sig_b))))


def write_images(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, im in enumerate(images):
        PIL.Image.fromarray(im).save(os.path.join(folder, f'img{i:04d}.png'))
    return str(folder)


def load_folder(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith('.png'))
    return np.stack([np.asarray(PIL.Image.open(os.path.join(folder, n))) for n in names])


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    hits: list = []

    def do_GET(self):
        CountingHandler.hits.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """Two image sets, detectors on disk, a loopback HTTP server serving them, and a private cache dir."""
    root = tmp_path_factory.mktemp('fid')
    rs = np.random.RandomState(1)
    set_a = rs.randint(0, 256, size=(48, 8, 8, 3)).astype(np.uint8)
    set_b = rs.randint(64, 256, size=(48, 8, 8, 3)).astype(np.uint8)
    serve = root / 'serve'
    serve.mkdir()
    torch.jit.save(torch.jit.script(StandInDetector()), str(serve / 'detector.pt'))
    torch.jit.save(torch.jit.script(FlatDetector()), str(serve / 'flat.pt'))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(CountingHandler, directory=str(serve)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    old_cache = os.environ.get('DNNLIB_CACHE_DIR')
    os.environ['DNNLIB_CACHE_DIR'] = str(root / 'cache')
    base = f'http://127.0.0.1:{server.server_address[1]}'
    yield dict(root=root, serve=serve, base=base, url=f'{base}/detector.pt', set_a=set_a, set_b=set_b,
               dir_a=write_images(root / 'a', set_a), dir_b=write_images(root / 'b', set_b))
    server.shutdown()
    if old_cache is None:
        os.environ.pop('DNNLIB_CACHE_DIR', None)
    else:
        os.environ['DNNLIB_CACHE_DIR'] = old_cache


def invoke(args, device='cpu'):
    """fid.py in-process, on CPU unless told otherwise."""
    return CliRunner().invoke(fid.main, [str(a) for a in args] + ['--device', device])


def last_float(result) -> float:
    return float(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# Maths.

def test_frechet_distance_matches_an_eigenvalue_computation():
    rs = np.random.RandomState(0)
    a, b = rs.randn(12, 12), rs.randn(12, 12)
    sig1, sig2 = a @ a.T + 0.1 * np.eye(12), b @ b.T + 0.1 * np.eye(12)
    mu1, mu2 = rs.randn(12), rs.randn(12)
    # Tr (Σ1 Σ2)^½ = Σ sqrt(eig(Σ1^½ Σ2 Σ1^½)), with Σ1^½ from a symmetric eigendecomposition.
    w, v = np.linalg.eigh(sig1)
    root1 = (v * np.sqrt(w)) @ v.T
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ sig2 @ root1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sig1) + np.trace(sig2) - 2 * tr_sqrt
    assert frechet.frechet_distance(mu1, sig1, mu2, sig2) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet.frechet_distance(mu1, sig1, mu1, sig1)) < 1e-8 * np.trace(sig1)


def test_feature_stats_match_numpy_and_do_not_depend_on_batching():
    features = torch.randn(101, 7, generator=torch.Generator().manual_seed(3)) * 3 + 1
    one = frechet.FeatureStats(7)
    one.append(features)
    many = frechet.FeatureStats(7)
    for chunk in torch.split(features, [1, 30, 2, 50, 18]):
        many.append(chunk)
    mu1, sig1 = one.mean_cov()
    mu2, sig2 = many.mean_cov()
    np.testing.assert_allclose(mu1, mu2, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(sig1, sig2, rtol=1e-12, atol=1e-13)
    mu_np, sig_np = stats_of(features.double().numpy())
    np.testing.assert_allclose(mu1, mu_np, rtol=1e-12)
    np.testing.assert_allclose(sig1, sig_np, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        frechet.FeatureStats(7).mean_cov()


def test_reference_file_checks(tmp_path):
    np.savez(tmp_path / 'mu_only.npz', mu=np.zeros(4))
    with open(tmp_path / 'mu_only.npz', 'rb') as f, pytest.raises(ValueError, match='no sigma'):
        frechet.load_reference_stats(f)
    (tmp_path / 'text.npz').write_text('hello')
    with open(tmp_path / 'text.npz', 'rb') as f, pytest.raises(ValueError, match='not a readable'):
        frechet.load_reference_stats(f)


# ------------------------------------------------------------------------------------------------
# Detector loading.

def test_detector_from_url_is_downloaded_once_and_validated(env):
    hits_before = sum(p == '/detector.pt' for p in CountingHandler.hits)
    det = load_detector(env['url'], 'cpu', (3, 8, 8))
    det2 = load_detector(env['url'], 'cpu', (3, 8, 8))
    assert sum(p == '/detector.pt' for p in CountingHandler.hits) - hits_before <= 1
    assert det.feature_dim == det2.feature_dim == FEATURE_DIM
    images = torch.from_numpy(env['set_a'][:5]).permute(0, 3, 1, 2).contiguous()
    np.testing.assert_allclose(det(images).double().numpy(), features_of(env['set_a'][:5]), rtol=1e-5, atol=1e-5)
    cached = os.listdir(os.path.join(os.environ['DNNLIB_CACHE_DIR'], 'downloads'))
    assert any(name.endswith('detector.pt') for name in cached)
    with pytest.raises(DetectorError, match='expected floating features of shape'):
        load_detector(str(env['serve'] / 'flat.pt'), 'cpu', (3, 8, 8))
    with pytest.raises(DetectorError, match='Cannot load detector'):
        load_detector(str(env['serve'] / 'nope.pt'), 'cpu', (3, 8, 8))


# ------------------------------------------------------------------------------------------------
# CLI round trips.

def test_ref_then_calc_round_trip(env, tmp_path):
    ref_a = tmp_path / 'a.npz'
    r = invoke(['ref', '--data', env['dir_a'], '--dest', ref_a, '--detector', env['url'], '--workers', 0, '--batch', 10])
    assert r.exit_code == 0, r.output
    with np.load(ref_a) as data:
        mu, sigma = data['mu'], data['sigma']
    feats_a = features_of(load_folder(env['dir_a']))
    mu_np, sig_np = stats_of(feats_a)
    np.testing.assert_allclose(mu, mu_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, sig_np, rtol=1e-4, atol=1e-6)

    # Same set against itself: FID ≈ 0 (reference given by URL this time).
    (env['serve'] / 'a.npz').write_bytes(ref_a.read_bytes())
    r = invoke(['calc', '--images', env['dir_a'], '--ref', f'{env["base"]}/a.npz', '--num', 48, '--detector', env['url'],
                '--workers', 0, '--batch', 7])
    assert r.exit_code == 0, r.output
    assert abs(last_float(r)) < 1e-6 * np.trace(sig_np)

    # Another set: the formula on directly computed features.
    r = invoke(['calc', '--images', env['dir_b'], '--ref', ref_a, '--num', 48, '--detector', env['url'], '--workers', 0])
    assert r.exit_code == 0, r.output
    expected = fid_direct(features_of(load_folder(env['dir_b'])), feats_a)
    assert expected > 0.01
    assert last_float(r) == pytest.approx(expected, rel=1e-4)
    assert sum(p == '/detector.pt' for p in CountingHandler.hits) == 1   # the cache served the later runs


def test_calc_uses_a_seeded_subset(env, tmp_path):
    ref_a = tmp_path / 'a.npz'
    assert invoke(['ref', '--data', env['dir_a'], '--dest', ref_a, '--detector', env['url'], '--workers', 0]).exit_code == 0
    r = invoke(['calc', '--images', env['dir_b'], '--ref', ref_a, '--num', 20, '--seed', 5, '--detector', env['url'],
                '--workers', 0])
    assert r.exit_code == 0, r.output
    idx = np.arange(48)
    np.random.RandomState(5).shuffle(idx)
    subset = load_folder(env['dir_b'])[np.sort(idx[:20])]
    expected = fid_direct(features_of(subset), features_of(load_folder(env['dir_a'])))
    assert last_float(r) == pytest.approx(expected, rel=1e-4)


def test_ref_of_grayscale_builtin_dataset(env, tmp_path):
    from training.dataset import load_digits_uint8
    r = invoke(['ref', '--data', 'builtin:digits', '--dest', tmp_path / 'digits.npz', '--detector', env['url'],
                '--workers', 0, '--batch', 512])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / 'digits.npz') as data:
        mu = data['mu']
    images, _ = load_digits_uint8()
    np.testing.assert_allclose(mu, features_of(images[..., None]).mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=pytest.mark.gpu)])
def test_calc_network_in_memory_equals_calc_of_its_pngs(env, tmp_path, device):
    torch.manual_seed(7)
    net = EDMPrecond(img_resolution=8, img_channels=3, model_type='SongUNet', model_channels=8, channel_mult=[1],
                     num_blocks=1, attn_resolutions=[], dropout=0)
    snap = tmp_path / 'net.pkl'
    persistence.dump_network_pickle(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={}), str(snap))
    ref_a = tmp_path / 'a.npz'
    assert invoke(['ref', '--data', env['dir_a'], '--dest', ref_a, '--detector', env['url'], '--workers', 0]).exit_code == 0
    gen = CliRunner().invoke(generate.main, ['--network', str(snap), '--outdir', str(tmp_path / 'png'), '--seeds', '0-23',
                                             '--steps', '2', '--batch', '24', '--device', device])
    assert gen.exit_code == 0, gen.output
    r_png = invoke(['calc', '--images', tmp_path / 'png', '--ref', ref_a, '--num', 24, '--detector', env['url'],
                    '--workers', 0], device)
    r_net = invoke(['calc', '--network', snap, '--ref', ref_a, '--seeds', '0-23', '--steps', 2, '--batch', 5,
                    '--detector', env['url']], device)
    assert r_png.exit_code == 0 and r_net.exit_code == 0, r_png.output + r_net.output
    tol = 1e-6 if device == 'cpu' else 1e-3   # cuDNN may choose batch-size-dependent kernels
    assert last_float(r_net) == pytest.approx(last_float(r_png), rel=tol)
    r_num = invoke(['calc', '--network', snap, '--ref', ref_a, '--num', 24, '--steps', 2, '--batch', 24,
                    '--detector', env['url']], device)
    assert r_num.exit_code == 0, r_num.output
    assert last_float(r_num) == pytest.approx(last_float(r_png), rel=1e-6)
    assert_clean_error(invoke(['calc', '--network', snap, '--ref', ref_a, '--seeds', '0-3', '--num', 5,
                               '--detector', env['url']]), '--num 5')


# ------------------------------------------------------------------------------------------------
# Bad input.

def test_errors_are_one_sentence(env, tmp_path):
    ref_a = tmp_path / 'a.npz'
    assert invoke(['ref', '--data', env['dir_a'], '--dest', ref_a, '--detector', env['url'], '--workers', 0]).exit_code == 0
    common = ['--detector', env['url'], '--workers', 0]
    assert_clean_error(invoke(['calc', '--images', env['dir_a'], '--ref', ref_a, '--num', 100, *common]),
                       'Found 48 images', '--num 100')
    np.savez(tmp_path / 'mu_only.npz', mu=np.zeros(FEATURE_DIM))
    assert_clean_error(invoke(['calc', '--images', env['dir_a'], '--ref', tmp_path / 'mu_only.npz', '--num', 48, *common]),
                       'no sigma')
    np.savez(tmp_path / 'small.npz', mu=np.zeros(3), sigma=np.eye(3))
    assert_clean_error(invoke(['calc', '--images', env['dir_a'], '--ref', tmp_path / 'small.npz', '--num', 48, *common]),
                       '3-D features', f'{FEATURE_DIM}-D')
    assert_clean_error(invoke(['calc', '--images', env['dir_a'], '--ref', ref_a, '--num', 48, '--workers', 0,
                               '--detector', env['serve'] / 'flat.pt']), 'expected floating features of shape')
    (tmp_path / 'junk.pt').write_bytes(b'garbage')
    assert_clean_error(invoke(['calc', '--images', env['dir_a'], '--ref', ref_a, '--num', 48, '--workers', 0,
                               '--detector', tmp_path / 'junk.pt']), 'neither a TorchScript archive nor a network pickle')
    assert_clean_error(invoke(['calc', '--network', tmp_path / 'missing.pkl', '--ref', ref_a, *common]), 'does not exist')
    (tmp_path / 'bad.pkl').write_bytes(b'\x80\x04junk')
    assert_clean_error(invoke(['calc', '--network', tmp_path / 'bad.pkl', '--ref', ref_a, *common]), 'Cannot load network')
    assert_clean_error(invoke(['calc', '--ref', ref_a, *common]), 'exactly one of --images and --network')
    assert_clean_error(invoke(['calc', '--images', tmp_path / 'nothing', '--ref', ref_a, *common]), 'does not exist')
    assert_clean_error(invoke(['calc', '--images', env['dir_a'], '--ref', f'{env["base"]}/missing.npz', *common]),
                       'HTTP status 404')


def test_two_ranks_give_the_same_reference_statistics(env, tmp_path):
    env_vars = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           os.path.join(ROOT, 'fid.py'), 'ref', '--data', env['dir_a'], '--dest', str(tmp_path / 'two.npz'),
           '--detector', f'{env["base"]}/detector.pt?copy=2', '--workers', '0', '--batch', '5', '--device', 'cpu']
    proc = subprocess.run(cmd, env=env_vars, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sum(p == '/detector.pt?copy=2' for p in CountingHandler.hits) == 1   # rank 0 downloads, rank 1 reads the cache
    r = invoke(['ref', '--data', env['dir_a'], '--dest', tmp_path / 'one.npz', '--detector', env['url'], '--workers', 0,
                '--batch', 48])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / 'one.npz') as one, np.load(tmp_path / 'two.npz') as two:
        np.testing.assert_allclose(two['mu'], one['mu'], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(two['sigma'], one['sigma'], rtol=1e-10, atol=1e-13)
