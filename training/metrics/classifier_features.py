"""Shared machinery of the small classifiers whose penultimate features define the domain Fréchet distances.

FID's Inception-v3 features mean little on 8x8 digits, 32x32 MNIST digits or DNA, so those settings measure
sample quality in the feature space of a small classifier trained here, deterministically, on the real data
(`digit_features`, `mnist_features`, `dna_features`). This module holds what they share: deterministic training
(`fit`), a disk cache of the trained weights under `dnnlib.util.make_cache_dir_path('metrics')` keyed by a SHA-256
fingerprint of the training data and every hyper-parameter (`load_or_train`), feature statistics and their Fréchet
distance, and `ImageClassifierMetric`, the whole metric around one grayscale-image classifier (`digit_features` and
`mnist_features` are instances of it).

Image input convention (`images_to_uint8`): uint8 arrays/tensors are pixel values 0..255; floating-point input
is in the network range [-1, 1] (what the samplers return) and is quantised exactly as EDM saves PNGs,
x * 127.5 + 128 clipped to [0, 255] and truncated. Accepted shapes: [N, S, S], [N, C, S, S] (channels averaged;
the FID detector interface repeats grayscale to three channels) or [N, S*S].
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
from typing import Any, Callable, Iterator

import numpy as np
import torch

logger = logging.getLogger(__name__)

CACHE_SUBDIR = 'metrics'


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one intra-op thread (bitwise-stable results, no contention), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit(make_net: Callable[[], torch.nn.Module], x: torch.Tensor, y: torch.Tensor, seed: int, steps: int,
        lr: float, weight_decay: float, batch_size: int | None = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> torch.nn.Module:
    """Train `make_net()` (built after seeding torch with `seed`) for `steps` Adam steps on the cross-entropy.

    batch_size=None uses the full batch every step; otherwise mini-batches run through consecutive random
    permutations drawn from a generator seeded with `seed`, which also drives `augment(batch, generator)`.
    Runs on one thread inside `torch.random.fork_rng`, so the caller's random state is untouched.
    """
    with one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_net()
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        order = torch.zeros(0, dtype=torch.int64)
        for _ in range(steps):
            if batch_size is None:
                xb, yb = x, y
            else:
                if order.numel() < batch_size:
                    order = torch.cat([order, torch.randperm(x.shape[0], generator=gen)])
                idx, order = order[:batch_size], order[batch_size:]
                xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, gen)
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(xb), yb)
            loss.backward()
            optimizer.step()
    return net.eval().requires_grad_(False)


def apply_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """fn over x in batches on one thread without gradients, concatenated."""
    with one_thread(), torch.no_grad():
        return torch.cat([fn(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]) if len(x) else fn(x)


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: Any) -> float:
    """Fraction of items whose arg-max logit is the label."""
    pred = apply_batched(net, x).argmax(dim=1).numpy()
    return float((pred == np.asarray(y)).mean())


def fingerprint(*arrays: Any, **params: Any) -> str:
    """SHA-256 (first 16 hex digits) of arrays' dtypes, shapes and bytes plus the JSON of params."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f'{a.dtype.str}{a.shape}'.encode())
        h.update(a.tobytes())
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def cache_path(tag: str, key: str) -> str:
    """Where `load_or_train` keeps the weights of classifier `tag` with fingerprint `key`."""
    from dnnlib.util import make_cache_dir_path
    return make_cache_dir_path(CACHE_SUBDIR, f'{tag}-{key}.pt')


def _load_cached(path: str, make_net: Callable[[], torch.nn.Module]) -> tuple[torch.nn.Module, dict] | str:
    """(network, metadata) from a cache file, or the reason it cannot be used, in our own words: the underlying
    libraries' messages can advise loading the file unsafely, which a refused cache file never deserves."""
    try:
        record = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:
        return 'it is not a plain-data PyTorch file (only tensors and plain containers are read)'
    if not isinstance(record, dict) or not isinstance(record.get('state_dict'), dict) \
            or not isinstance(record.get('meta'), dict):
        return 'it does not hold a state_dict and its metadata'
    net = make_net()
    try:
        net.load_state_dict(record['state_dict'])
    except Exception:
        return 'its weights do not fit the classifier'
    return net.eval().requires_grad_(False), dict(record['meta'])


def load_or_train(tag: str, key: str, make_net: Callable[[], torch.nn.Module],
                  train: Callable[[], tuple[torch.nn.Module, dict]]) -> tuple[torch.nn.Module, dict]:
    """(network, metadata) from the disk cache, else from `train()` (then saved atomically with its metadata).

    An unreadable or mismatching cache file is retrained over, with a warning.
    """
    path = cache_path(tag, key)
    if os.path.isfile(path):
        loaded = _load_cached(path, make_net)
        if isinstance(loaded, str):   # a corrupt, stale or foreign file is retrained over, never trusted
            logger.warning('Ignoring the cache file %s: %s; retraining.', path, loaded)
        else:
            logger.info('Loaded the cached %s classifier from %s', tag, path)
            return loaded
    net, meta = train()
    try:
        from dnnlib.util import atomic_write
        os.makedirs(os.path.dirname(path), exist_ok=True)
        buffer = io.BytesIO()
        torch.save(dict(state_dict=net.state_dict(), meta=meta), buffer)
        with atomic_write(path) as f:
            f.write(buffer.getvalue())
    except OSError as exc:  # a read-only cache only costs the retraining next time
        logger.warning('Could not cache the %s classifier at %s (%s).', tag, path, exc)
    return net, meta


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D]) of features [N, D], N >= 2."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f'Feature statistics need at least 2 feature vectors, got shape {list(f.shape)}.')
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_to_stats(features: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """Fréchet distance between the Gaussian statistics of `features` [N, D] and reference (μ_r, Σ_r)."""
    from training.metrics.frechet import frechet_distance
    mu, sigma = feature_stats(features)
    return float(frechet_distance(mu, sigma, *reference))


def binarize_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 {0, 255} version of uint8 images (pixel > 127.5 -> 255), as the builtin '-binary' datasets."""
    return np.where(np.asarray(images) > 127.5, np.uint8(255), np.uint8(0))


def images_to_uint8(images: Any, side: int) -> np.ndarray:
    """Grayscale images as uint8 [N, side, side] (see the module docstring for dtypes, ranges and shapes)."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    expected = f'[N, {side}, {side}], [N, C, {side}, {side}] or [N, {side * side}]'
    if x.ndim == 4:
        if x.shape[2:] != (side, side):
            raise ValueError(f'Expected {side}x{side} images, got shape {list(x.shape)}.')
        if x.shape[1] == 1:
            x = x[:, 0]
        elif x.dtype == np.uint8:
            x = np.rint(x.mean(axis=1)).astype(np.uint8)
        else:
            x = x.mean(axis=1)
    if x.ndim == 2 and x.shape[1] == side * side:
        x = x.reshape(x.shape[0], side, side)
    if x.ndim != 3 or x.shape[1:] != (side, side):
        raise ValueError(f'Expected images of shape {expected}, got {list(x.shape)}.')
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f'Expected uint8 pixels or floating-point network-range images, got {x.dtype}.')
    if not np.all(np.isfinite(x)):
        raise ValueError('The images contain NaN or Inf values.')
    return np.clip(x.astype(np.float64) * 127.5 + 128, 0, 255).astype(np.uint8)


class FeatureClassifier(torch.nn.Module):
    """Base of the feature classifiers: subclasses define `features(x)` and a linear `head`; forward = logits."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes]."""
        return self.head(self.features(x))


class _DetectorWrapper(torch.nn.Module):
    """FID detector interface around a classifier: uint8 [N, C, S, S] -> features [N, D]."""

    def __init__(self, classifier: torch.nn.Module, flatten: bool) -> None:
        super().__init__()
        self.classifier = classifier
        self.flatten = flatten

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = images.to(torch.float32).mean(dim=1, keepdim=True) / 255.0
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        if return_features:
            return self.classifier.features(x)
        return self.classifier(x)


class ImageClassifierMetric:
    """A Fréchet distance in the penultimate features of a grayscale-image classifier trained on real images.

    Training data: the real images minus a fixed held-out subset (a seeded permutation, the first `num_heldout`
    held out), every training image used twice, as is and binarised, so that the feature space also serves
    the binarised setting. References `name` (all real images) and `name + '-binary'` (all, binarised).
    """

    def __init__(self,
        name: str,                      # Reference name of the real data, e.g. 'digits' or 'mnist5k'.
        side: int,                      # Image side S (images are [S, S] grayscale).
        load_data: Callable[[], tuple[np.ndarray, np.ndarray]],  # -> (uint8 [N, S, S], int64 labels [N]).
        make_net: Callable[[], torch.nn.Module],  # Builds the untrained classifier (features() and forward()).
        flatten: bool,                  # The classifier takes [N, S*S] (True) or [N, 1, S, S] (False) in [0, 1].
        num_heldout: int,               # Images held out from training, for the accuracy.
        train_kwargs: dict,             # `fit` kwargs: seed, steps, lr, weight_decay, batch_size.
        split_seed: int = 0,            # Seed of the held-out permutation.
        disk_cache: bool = False,       # Also cache the trained weights on disk (`load_or_train`).
    ) -> None:
        self.name = name
        self.side = int(side)
        self.references = (name, f'{name}-binary')
        self._load_data = load_data
        self._make_net = make_net
        self._flatten = bool(flatten)
        self.num_heldout = int(num_heldout)
        self.train_kwargs = dict(train_kwargs)
        self.split_seed = int(split_seed)
        self._disk_cache = bool(disk_cache)

    @functools.cache
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [N, S, S], int64 labels [N]) of the real data (loaded once)."""
        return self._load_data()

    def split_indices(self, num_items: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(training indices, held-out indices), each sorted."""
        n = len(self.data()[0]) if num_items is None else int(num_items)
        perm = np.random.RandomState(self.split_seed).permutation(n)
        return np.sort(perm[self.num_heldout:]), np.sort(perm[:self.num_heldout])

    def pixels(self, images_uint8: np.ndarray) -> torch.Tensor:
        """Classifier input in [0, 1]: [N, S*S] or [N, 1, S, S]."""
        x = torch.as_tensor(np.asarray(images_uint8), dtype=torch.float32) / 255.0
        return x.reshape(-1, self.side * self.side) if self._flatten else x.reshape(-1, 1, self.side, self.side)

    def train(self) -> torch.nn.Module:
        """A freshly trained classifier (deterministic: the same weights on every run on a given machine)."""
        images, labels = self.data()
        train_idx, _ = self.split_indices()
        x = torch.cat([self.pixels(images[train_idx]), self.pixels(binarize_uint8(images[train_idx]))])
        y = torch.as_tensor(np.concatenate([labels[train_idx], labels[train_idx]]), dtype=torch.int64)
        return fit(self._make_net, x, y, **self.train_kwargs)

    @functools.cache
    def classifier(self) -> torch.nn.Module:
        """The process-wide classifier: trained on first use (or loaded from the disk cache), then kept."""
        if not self._disk_cache:
            return self.train()
        images, labels = self.data()
        with torch.random.fork_rng(devices=[]):
            arch = repr(self._make_net())
        key = fingerprint(images, labels, self.split_indices()[0], arch=arch, **self.train_kwargs)

        def train() -> tuple[torch.nn.Module, dict]:
            net = self.train()
            return net, dict(accuracy=self.accuracy(net))

        net, meta = load_or_train(self.name, key, self._make_net, train)
        logger.info('%s classifier accuracy: %s', self.name, meta.get('accuracy'))
        return net

    def features(self, images: Any, classifier: torch.nn.Module | None = None) -> np.ndarray:
        """Penultimate-layer features [N, D] (float64) of images (any input accepted by `images_to_uint8`)."""
        net = self.classifier() if classifier is None else classifier
        x = self.pixels(images_to_uint8(images, self.side))
        return apply_batched(net.features, x).to(torch.float64).numpy()

    def reference_images(self, reference: str | None = None) -> np.ndarray:
        """All real images as uint8 [N, S, S], binarised for the '-binary' reference."""
        reference = self.name if reference is None else reference
        if reference not in self.references:
            raise ValueError(f'Unknown {self.name} reference {reference!r}; choose one of '
                             f'{", ".join(self.references)}.')
        images = self.data()[0]
        return binarize_uint8(images) if reference.endswith('-binary') else images

    @functools.cache
    def reference_stats(self, reference: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(μ_r, Σ_r) of the real images' features (cached per reference)."""
        return feature_stats(self.features(self.reference_images(reference)))

    def frechet(self, images: Any, reference: str | None = None) -> float:
        """Fréchet distance between the features of `images` (N >= 2) and of the real images."""
        return frechet_to_stats(self.features(images), self.reference_stats(reference))

    def accuracy(self, classifier: torch.nn.Module | None = None) -> dict[str, float]:
        """Accuracy on the training split and on the held-out images, as is and binarised."""
        net = self.classifier() if classifier is None else classifier
        images, labels = self.data()
        train_idx, test_idx = self.split_indices()
        return dict(train=accuracy(net, self.pixels(images[train_idx]), labels[train_idx]),
                    heldout=accuracy(net, self.pixels(images[test_idx]), labels[test_idx]),
                    heldout_binary=accuracy(net, self.pixels(binarize_uint8(images[test_idx])), labels[test_idx]))

    def export_detector(self, path: str | None = None, classifier: torch.nn.Module | None = None) -> bytes:
        """TorchScript bytes of the feature extractor in the FID detector interface; written atomically to `path`."""
        net = self.classifier() if classifier is None else classifier
        scripted = torch.jit.script(_DetectorWrapper(net, self._flatten).eval())
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        data = buffer.getvalue()
        if path is not None:
            from dnnlib.util import atomic_write
            with atomic_write(path) as f:
                f.write(data)
        return data
