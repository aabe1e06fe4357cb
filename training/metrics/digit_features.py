"""A small digit classifier whose penultimate layer defines a Fréchet distance for 8x8 digits.

FID's Inception-v3 features are meaningless on scikit-learn's 8x8 digits, so the CPU-scale benchmarks
measure sample quality in the feature space of a classifier trained here, deterministically, on the
same digits:

    data        `training.dataset.load_digits_uint8()` (1,797 images, 0..255), pixels scaled to [0, 1];
                a fixed split (seed 0): 1,437 training images, 360 held out. Every training image is used
                twice, as is and binarised (pixel > 127.5 -> 1, else 0), so that the feature space is also
                meaningful for the binarised-digits setting.
    network     MLP 64 -> 128 -> 64 -> 10 with SiLU activations; the 64 SiLU outputs of the second layer
                are the features (smooth, so no dead units make the feature covariance singular).
    training    float32, one CPU thread, full-batch Adam (lr 1e-2, weight decay 1e-4) for 150 steps on the
                cross-entropy, from a fixed torch seed: the same weights on every run on a given machine
                (a couple of seconds on one core).
    accuracy    measured by `classifier_accuracy()`; at the time of writing: 97.8% on the 360 held-out
                digits and 90.8% on their binarised versions (tests/test_digit_features.py requires > 90%).

`digit_frechet(images)` = ‖μ − μ_r‖² + Tr(Σ + Σ_r − 2(ΣΣ_r)^½) between the features of `images` and of
all 1,797 real digits (`reference='digits'`) or of their binarised versions (`'digits-binary'`), using
`training.metrics.frechet.frechet_distance`. The trained weights and reference statistics are cached in memory
per process.

Image input convention (`to_uint8`): uint8 arrays/tensors are pixel values 0..255; floating-point input is
in the network range [-1, 1] (what the samplers return) and is quantised exactly as EDM saves PNGs,
x * 127.5 + 128 clipped to [0, 255] and truncated. Accepted shapes: [N, 8, 8], [N, C, 8, 8] (channels
averaged; the FID detector interface repeats grayscale to three channels) or [N, 64].

`export_detector(path)` writes the trained feature extractor as a TorchScript file that follows the FID
detector interface (`det(uint8 NCHW, return_features=True) -> [N, 64]`), so `fid.py calc/ref
--detector PATH` measure the same digit Fréchet distance.
"""
from __future__ import annotations

import contextlib
import io
import threading
from typing import Any, Iterator

import numpy as np
import torch

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

_lock = threading.Lock()
_cache: dict[str, Any] = {}


class DigitClassifier(torch.nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes]."""
        return self.head(self.features(x))


class _DetectorWrapper(torch.nn.Module):
    """FID detector interface around a DigitClassifier: uint8 [N, C, 8, 8] -> features [N, D]."""

    def __init__(self, classifier: DigitClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = images.to(torch.float32).mean(dim=1).reshape(images.shape[0], 64) / 255.0
        if return_features:
            return self.classifier.features(x)
        return self.classifier(x)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread (bitwise-stable results, no contention), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def split_indices(num_items: int = 1797, num_heldout: int = NUM_HELDOUT,
                  seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices): a fixed random permutation, the first `num_heldout` held out."""
    perm = np.random.RandomState(seed).permutation(num_items)
    return np.sort(perm[num_heldout:]), np.sort(perm[:num_heldout])


def binarize_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 {0, 255} version of uint8 images (pixel > 127.5 -> 255), as `builtin:digits-binary`."""
    return np.where(np.asarray(images) > 127.5, np.uint8(255), np.uint8(0))


def _real_digits() -> tuple[np.ndarray, np.ndarray]:
    from training.dataset import load_digits_uint8
    return load_digits_uint8()


def _pixels(images_uint8: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(images_uint8).reshape(-1, 64), dtype=torch.float32) / 255.0


def train_classifier(seed: int = TRAIN_SEED, steps: int = TRAIN_STEPS) -> DigitClassifier:
    """Train a fresh DigitClassifier deterministically (see the module docstring); returns it in eval mode."""
    images, labels = _real_digits()
    train_idx, _ = split_indices(len(images))
    x = torch.cat([_pixels(images[train_idx]), _pixels(binarize_uint8(images[train_idx]))])
    y = torch.as_tensor(np.concatenate([labels[train_idx], labels[train_idx]]), dtype=torch.int64)
    with _one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitClassifier()
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


def get_classifier() -> DigitClassifier:
    """The process-wide classifier (trained on first use, then cached in memory)."""
    with _lock:
        if 'classifier' not in _cache:
            _cache['classifier'] = train_classifier()
        return _cache['classifier']


def to_uint8(images: Any) -> np.ndarray:
    """Images as uint8 [N, 64] (see the module docstring for the accepted dtypes, ranges and shapes)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.ndim == 4:
        if x.shape[2:] != (8, 8):
            raise ValueError(f'Expected 8x8 digit images, got shape {list(x.shape)}.')
        if x.shape[1] == 1:
            x = x[:, 0]
        elif x.dtype == np.uint8:
            x = np.rint(x.mean(axis=1)).astype(np.uint8)
        else:
            x = x.mean(axis=1)
    if x.ndim == 3:
        if x.shape[1:] != (8, 8):
            raise ValueError(f'Expected 8x8 digit images, got shape {list(x.shape)}.')
        x = x.reshape(x.shape[0], 64)
    if x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f'Expected digit images of shape [N, 8, 8], [N, C, 8, 8] or [N, 64], got {list(x.shape)}.')
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f'Expected uint8 pixels or floating-point network-range images, got {x.dtype}.')
    if not np.all(np.isfinite(x)):
        raise ValueError('The images contain NaN or Inf values.')
    return np.clip(x.astype(np.float64) * 127.5 + 128, 0, 255).astype(np.uint8)


def digit_features(images: Any, classifier: DigitClassifier | None = None) -> np.ndarray:
    """Penultimate-layer features [N, 64] (float64) of digit images (any input accepted by `to_uint8`)."""
    net = get_classifier() if classifier is None else classifier
    x = _pixels(to_uint8(images))
    with _one_thread(), torch.no_grad():
        return net.features(x).to(torch.float64).numpy()


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D]) of features [N, D], N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f'Feature statistics need at least 2 feature vectors, got shape {list(f.shape)}.')
    return f.mean(axis=0), np.cov(f, rowvar=False)


def reference_images(reference: str = 'digits') -> np.ndarray:
    """All 1,797 real digits as uint8 [N, 8, 8], binarised for reference='digits-binary'."""
    if reference not in REFERENCES:
        raise ValueError(f'Unknown digit reference {reference!r}; choose one of {", ".join(REFERENCES)}.')
    images, _ = _real_digits()
    return binarize_uint8(images) if reference == 'digits-binary' else images


def reference_stats(reference: str = 'digits') -> tuple[np.ndarray, np.ndarray]:
    """(μ_r, Σ_r) of the real digits' features (cached per reference)."""
    key = f'stats:{reference}'
    images = reference_images(reference)
    with _lock:
        cached = _cache.get(key)
    if cached is None:
        cached = feature_stats(digit_features(images))
        with _lock:
            _cache[key] = cached
    return cached


def digit_frechet(images: Any, reference: str = 'digits') -> float:
    """Fréchet distance between the classifier features of `images` (N >= 2) and of the real digits."""
    from training.metrics.frechet import frechet_distance
    mu, sigma = feature_stats(digit_features(images))
    mu_ref, sigma_ref = reference_stats(reference)
    return float(frechet_distance(mu, sigma, mu_ref, sigma_ref))


def classifier_accuracy(classifier: DigitClassifier | None = None) -> dict[str, float]:
    """Accuracy on the training split and on the held-out digits, as is and binarised."""
    net = get_classifier() if classifier is None else classifier
    images, labels = _real_digits()
    train_idx, test_idx = split_indices(len(images))

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        with _one_thread(), torch.no_grad():
            pred = net(_pixels(x)).argmax(dim=1).numpy()
        return float((pred == y).mean())

    return dict(train=accuracy(images[train_idx], labels[train_idx]),
                heldout=accuracy(images[test_idx], labels[test_idx]),
                heldout_binary=accuracy(binarize_uint8(images[test_idx]), labels[test_idx]))


def export_detector(path: str | None = None, classifier: DigitClassifier | None = None) -> bytes:
    """TorchScript bytes of the feature extractor in the FID detector interface; written atomically to `path`."""
    net = get_classifier() if classifier is None else classifier
    scripted = torch.jit.script(_DetectorWrapper(net).eval())
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    data = buffer.getvalue()
    if path is not None:
        from dnnlib.util import atomic_write
        with atomic_write(path) as f:
            f.write(data)
    return data
