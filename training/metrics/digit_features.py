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

from training.metrics.classifier_features import FeatureClassifier, ImageClassifierMetric, images_to_uint8

FEATURE_DIM = 64
NUM_HELDOUT = 360
TRAIN_KWARGS = dict(seed=0, steps=150, lr=1e-2, weight_decay=1e-4)


class DigitClassifier(FeatureClassifier):
    """MLP on flattened 8x8 digits in [0, 1]: 64 -> hidden -> features -> classes, SiLU activations."""

    def __init__(self,
        hidden_dim: int = 128,              # Width of the first hidden layer.
        feature_dim: int = FEATURE_DIM,     # Width of the penultimate layer (the Fréchet features).
        num_classes: int = 10,              # Number of digit classes.
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


METRIC = ImageClassifierMetric(name='digits', side=8, load_data=_real_digits, make_net=DigitClassifier, flatten=True,
                               num_heldout=NUM_HELDOUT, split_seed=0, train_kwargs=TRAIN_KWARGS)
# The metric's methods under this module's names (docstrings in `ImageClassifierMetric`): a fixed split (the first
# 360 of a seeded permutation held out), the classifier trained deterministically (`train_classifier`) or the
# process-wide one (`get_classifier`), features [N, 64], the real digits and their statistics per reference,
# the Fréchet distance, the accuracies, the TorchScript FID detector.
split_indices = METRIC.split_indices
train_classifier = METRIC.train
get_classifier = METRIC.classifier
digit_features = METRIC.features
reference_images = METRIC.reference_images
reference_stats = METRIC.reference_stats
digit_frechet = METRIC.frechet
classifier_accuracy = METRIC.accuracy
export_detector = METRIC.export_detector


def to_uint8(images: Any) -> np.ndarray:
    """Images as uint8 [N, 64] (see `classifier_features.images_to_uint8` for dtypes, ranges and shapes)."""
    x = images_to_uint8(images, 8)
    return x.reshape(x.shape[0], 64)
