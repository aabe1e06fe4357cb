"""The digit classifier behind the CPU-scale Fréchet distance: deterministic, accurate, and discriminating."""
import numpy as np
import pytest
import torch

from training.metrics import digit_features as df
from training.metrics.classifier_features import binarize_uint8


@pytest.fixture(scope='module')
def real():
    return df.reference_images('digits')


def test_training_is_deterministic_and_cached(real):
    first = df.get_classifier()         # the cached process-wide classifier
    second = df.train_classifier()      # a fresh training
    assert first is not second and df.get_classifier() is first
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    f1 = df.digit_features(real[:50], classifier=first)
    f2 = df.digit_features(real[:50], classifier=second)
    assert f1.shape == (50, df.FEATURE_DIM)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(df.digit_features(real[:50]), f1)


def test_heldout_accuracy_above_90_percent():
    acc = df.classifier_accuracy()
    assert acc['heldout'] > 0.90
    assert acc['heldout_binary'] > 0.80
    train_idx, test_idx = df.split_indices(1797)
    assert len(test_idx) == df.NUM_HELDOUT and not set(train_idx) & set(test_idx)


def test_frechet_small_for_real_subsets_large_for_noise(real):
    rs = np.random.RandomState(0)
    full = df.digit_frechet(real)
    assert abs(full) < 1e-6                       # identical statistics
    subset = df.digit_frechet(real[rs.choice(len(real), 1000, replace=False)])
    noise = df.digit_frechet(rs.randn(1000, 1, 8, 8))
    blank = df.digit_frechet(np.full((1000, 1, 8, 8), -1.0) + 0.01 * rs.randn(1000, 1, 8, 8))
    assert 0 < subset < 2.0
    assert noise > 50 * subset and blank > 50 * subset
    # Quality degrades monotonically as real digits are corrupted with more Gaussian noise.
    x = real[:, None].astype(np.float64) / 127.5 - 1
    scores = [df.digit_frechet(x + s * rs.randn(*x.shape)) for s in (0.1, 0.3, 1.0)]
    assert scores[0] < scores[1] < scores[2]


def test_binary_reference(real):
    binary = binarize_uint8(real)
    assert set(np.unique(binary)) <= {0, 255}
    assert abs(df.digit_frechet(binary, reference='digits-binary')) < 1e-6
    assert df.digit_frechet(binary, reference='digits') > 1.0
    with pytest.raises(ValueError, match='Unknown digits reference'):
        df.digit_frechet(binary, reference='mnist')


def test_input_conventions(real):
    u8 = real[:20]
    as_float = u8.astype(np.float64) / 127.5 - 1          # network range; x*127.5+128 truncates back to u8
    np.testing.assert_array_equal(df.to_uint8(u8), u8.reshape(20, 64))
    np.testing.assert_array_equal(df.to_uint8(torch.as_tensor(as_float[:, None])), u8.reshape(20, 64))
    np.testing.assert_array_equal(df.to_uint8(np.repeat(u8[:, None], 3, axis=1)), u8.reshape(20, 64))
    np.testing.assert_array_equal(df.to_uint8(np.full((2, 8, 8), 5.0)), np.full((2, 64), 255))
    for bad in (np.zeros((3, 16, 16)), np.zeros((3, 1, 8, 9)), np.zeros((3, 8, 8), dtype=np.int64),
                np.full((3, 8, 8), np.nan)):
        with pytest.raises(ValueError):
            df.to_uint8(bad)


def test_exported_detector_matches_features(tmp_path, real):
    from training.metrics.detector import load_detector
    path = tmp_path / 'digits.pt'
    df.export_detector(str(path))
    det = load_detector(str(path), 'cpu', (1, 8, 8))
    assert det.feature_dim == df.FEATURE_DIM
    images = torch.as_tensor(real[:32, None])
    np.testing.assert_allclose(det(images).double().numpy(), df.digit_features(images), rtol=1e-5, atol=1e-5)
