"""A small digit classifier whose penultimate layer defines a Fréchet distance for 8x8 digits.

FID's Inception-v3 features are meaningless on scikit-learn's 8x8 digits, so the CPU-scale benchmarks
measure sample quality in the feature space of a classifier trained here, deterministically, on the
same digits (the shared machinery is `training.metrics.classifier_features.ImageClassifierMetric`):

    data        `training.dataset.load_digits_uint8()` (1,797 images, 0..255), pixels scaled to [0, 1];
                a fixed split (seed 0): 1,437 training images, 360 held out. Every training image is used
                twice, as is and binarised (pixel > 127.5 -> 1, else 0), so that the feature space is also
                meaningful for the binarised-digits setting.
    network     MLP 64 -> 128 -> 64 -> 10 with SiLU activations; the 64 SiLU outputs of the second layer
                are the features (smooth, so no dead units make the feature covariance singular).
    training    float32, one CPU thread, full-batch Adam (lr 1e-2, weight decay 1e-4) for 150 steps on the
                cross-entropy, from a fixed torch seed: the same weights on every run on a given machine
                (a couple of seconds on one core). Cached in memory per process.
    accuracy    measured by `classifier_accuracy()`; at the time of writing: 97.8% on the 360 held-out
                digits and 90.8% on their binarised versions (tests/test_digit_features.py requires > 90%).

`digit_frechet(images)` = ‖μ − μ_r‖² + Tr(Σ + Σ_r − 2(ΣΣ_r)^½) between the features of `images` and of
all 1,797 real digits (`reference='digits'`) or of their binarised versions (`'digits-binary'`), using
`training.metrics.frechet.frechet_distance`. Image input convention: see `classifier_features.images_to_uint8`.

`export_detector(path)` writes the trained feature extractor as a TorchScript file that follows the FID
detector interface (`det(uint8 NCHW, return_features=True) -> [N, 64]`), so `fid.py calc/ref
--detector PATH` measure the same digit Fréchet distance.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from training.metrics.classifier_features import (FeatureClassifier, ImageClassifierMetric, binarize_uint8,
                                                  feature_stats, images_to_uint8)

FEATURE_DIM = 64
HIDDEN_DIM = 128
NUM_CLASSES = 10
NUM_HELDOUT = 360
SPLIT_SEED = 0
TRAIN_SEED = 0
TRAIN_STEPS = 150
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-4
REFERENCES = ('digits', 'digits-binary')

__all__ = ['DigitClassifier', 'binarize_uint8', 'classifier_accuracy', 'digit_features', 'digit_frechet',
           'export_detector', 'feature_stats', 'get_classifier', 'reference_images', 'reference_stats',
           'split_indices', 'to_uint8', 'train_classifier']


class DigitClassifier(FeatureClassifier):
    """MLP on flattened 8x8 digits in [0, 1]: 64 -> hidden -> features -> classes, SiLU activations."""

    def __init__(self,
        hidden_dim: int = HIDDEN_DIM,       # Width of the first hidden layer.
        feature_dim: int = FEATURE_DIM,     # Width of the penultimate layer (the Fréchet features).
        num_classes: int = NUM_CLASSES,     # Number of digit classes.
    ) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, hidden_dim)
        self.fc2 = torch.nn.Linear(hidden_dim, feature_dim)
        self.head = torch.nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [N, feature_dim] of pixels x [N, 64] in [0, 1]."""
        h = torch.nn.functional.silu(self.fc1(x))
        return torch.nn.functional.silu(self.fc2(h))


def _real_digits() -> tuple[np.ndarray, np.ndarray]:
    from training.dataset import load_digits_uint8
    return load_digits_uint8()


TRAIN_KWARGS = dict(seed=TRAIN_SEED, steps=TRAIN_STEPS, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
METRIC_KWARGS = dict(name='digits', side=8, load_data=_real_digits, make_net=DigitClassifier, flatten=True,
                     num_heldout=NUM_HELDOUT, split_seed=SPLIT_SEED)
METRIC = ImageClassifierMetric(**METRIC_KWARGS, train_kwargs=TRAIN_KWARGS)


def split_indices(num_items: int = 1797) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices): a fixed random permutation, the first 360 held out."""
    return METRIC.split_indices(num_items)


def train_classifier(seed: int = TRAIN_SEED, steps: int = TRAIN_STEPS) -> DigitClassifier:
    """Train a fresh DigitClassifier deterministically (see the module docstring); returns it in eval mode."""
    train_kwargs = dict(TRAIN_KWARGS, seed=seed, steps=steps)
    return ImageClassifierMetric(**METRIC_KWARGS, train_kwargs=train_kwargs).train()


def get_classifier() -> DigitClassifier:
    """The process-wide classifier (trained on first use, then cached in memory)."""
    return METRIC.classifier()


def to_uint8(images: Any) -> np.ndarray:
    """Images as uint8 [N, 64] (see `classifier_features.images_to_uint8` for dtypes, ranges and shapes)."""
    x = images_to_uint8(images, 8)
    return x.reshape(x.shape[0], 64)


def digit_features(images: Any, classifier: DigitClassifier | None = None) -> np.ndarray:
    """Penultimate-layer features [N, 64] (float64) of digit images (any input accepted by `to_uint8`)."""
    return METRIC.features(images, classifier)


def reference_images(reference: str = 'digits') -> np.ndarray:
    """All 1,797 real digits as uint8 [N, 8, 8], binarised for reference='digits-binary'."""
    if reference not in REFERENCES:
        raise ValueError(f'Unknown digit reference {reference!r}; choose one of {", ".join(REFERENCES)}.')
    return METRIC.reference_images(reference)


def reference_stats(reference: str = 'digits') -> tuple[np.ndarray, np.ndarray]:
    """(μ_r, Σ_r) of the real digits' features (cached per reference)."""
    reference_images(reference)
    return METRIC.reference_stats(reference)


def digit_frechet(images: Any, reference: str = 'digits') -> float:
    """Fréchet distance between the classifier features of `images` (N >= 2) and of the real digits."""
    reference_images(reference)
    return METRIC.frechet(images, reference)


def classifier_accuracy(classifier: DigitClassifier | None = None) -> dict[str, float]:
    """Accuracy on the training split and on the held-out digits, as is and binarised."""
    return METRIC.accuracy(classifier)


def export_detector(path: str | None = None, classifier: DigitClassifier | None = None) -> bytes:
    """TorchScript bytes of the feature extractor in the FID detector interface; written atomically to `path`."""
    return METRIC.export_detector(path, classifier)
