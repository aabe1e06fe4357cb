"""FD (cell-type CNN; stand-in for Sei-FID): a Fréchet distance in the features of a DNA cell-type classifier.

The paper reports Sei-FID for DNA: a Fréchet distance in the features of Sei (Chen et al., 2022), a large
sequence model of chromatin profiles that this project does not ship. As a **stand-in for Sei-FID** the
project trains its own small 1-D CNN to tell the cell types of a DNA-Diffusion table apart and measures the
Fréchet distance in its penultimate features. Values are not comparable with published Sei-FID numbers.

    data        the table(s)' training split (uint8 codes [N, L], labels = cell-type index), plus one extra
                "background" class: N / (number of cell types) randomly chosen training sequences, each with its
                own bases shuffled (composition kept, order destroyed). Without it the features only span the
                K562-vs-HepG2 axis and barely move for unrealistic sequences (measured: uniform random sequences
                scored FD 0.05 against K562 and 3.0 against HepG2, real ones 0.002-0.006; with it, 34 and 43
                against real 0.007 and 0.04). The test split gives the reported cell-type accuracy
                (`DNAClassifierInfo.test_accuracy`, arg-max over the cell-type logits) and `background_accuracy`
                (shuffled test sequences recognised as background). Needs >= 2 cell types.
    network     `DNAClassifier`: conv 4 -> C (width 9), max-pool 4, conv C -> C (width 5), max-pool 4,
                conv C -> C (width 5), global average and max pooling, linear 2C -> 64 (the features, SiLU),
                linear 64 -> classes; SiLU activations; C = 32. The trunk runs on the sequence and on its reverse
                complement and the two pooled vectors are averaged, so features do not depend on the strand.
    training    float32, one CPU thread, Adam (lr 2e-3, weight decay 1e-4), mini-batches of 128 from a seeded
                permutation for 5 epochs (at least 150 steps), fixed torch seed: deterministic on a given machine
                (170 s for the 19,602 K562 + HepG2 training sequences on a busy shared 2-core CPU; once per
                machine). Measured on the real tables: 81.4% cell-type accuracy on the test split (K562 vs
                HepG2), 96.7% of shuffled test sequences recognised as background.
                Trained once and cached on disk under `dnnlib.util.make_cache_dir_path('metrics')`, keyed by
                a SHA-256 of the training codes, labels, cell-type names and every hyper-parameter; also cached
                in memory. The test accuracy is logged and stored with the weights.
    distance    `dna_frechet(generated, reference)` = ‖μ − μ_r‖² + Tr(Σ + Σ_r − 2(ΣΣ_r)^½) between the
                features of two sequence sets (`training.metrics.frechet.frechet_distance`); `reference` may be
                sequences or precomputed (μ_r, Σ_r) from `feature_stats`.
Sequence inputs: anything `training.metrics.sequences.as_codes` accepts (strings, codes, one-hot).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np
import torch

from training.metrics.classifier_features import (FeatureClassifier, apply_batched, feature_stats, fingerprint, fit,
                                                  frechet_to_stats, load_or_train)
from training.metrics.sequences import as_codes, one_hot, shuffled_sequences

METRIC_NAME = 'FD (cell-type CNN; stand-in for Sei-FID)'
FEATURE_DIM = 64
logger = logging.getLogger(__name__)
_memory: dict[str, 'DNAClassifierInfo'] = {}   # fingerprint -> classifier, built once per process


@dataclasses.dataclass(frozen=True)
class DNAClassifierConfig:
    """Hyper-parameters of the cell-type classifier (all part of the cache key)."""

    channels: int = 32          # Convolution width C.
    feature_dim: int = FEATURE_DIM  # Width of the penultimate (feature) layer.
    epochs: int = 5             # Passes over the training data.
    min_steps: int = 150        # At least this many optimizer steps (small tables get more passes).
    batch_size: int = 128       # Mini-batch size.
    lr: float = 2e-3            # Adam learning rate.
    weight_decay: float = 1e-4  # Adam weight decay.
    seed: int = 0               # Torch seed of the initialisation and the batch order.
    background: bool = True     # Add a class of shuffled training sequences (gives the features a realism axis).


class DNAClassifier(FeatureClassifier):
    """Strand-symmetric 1-D CNN on one-hot sequences [N, 4, L] (0/1): features() -> [N, feature_dim]."""

    def __init__(self,
        num_classes: int,                   # Number of cell types.
        channels: int = 32,                 # Convolution width C.
        feature_dim: int = FEATURE_DIM,     # Width of the penultimate layer (the Fréchet features).
    ) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv1d(4, channels, 9, padding=4)
        self.conv2 = torch.nn.Conv1d(channels, channels, 5, padding=2)
        self.conv3 = torch.nn.Conv1d(channels, channels, 5, padding=2)
        self.fc = torch.nn.Linear(2 * channels, feature_dim)
        self.head = torch.nn.Linear(feature_dim, num_classes)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        silu, pool = torch.nn.functional.silu, torch.nn.functional.max_pool1d
        h = pool(silu(self.conv1(x)), 4)
        h = pool(silu(self.conv2(h)), 4)
        h = silu(self.conv3(h))
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations [N, feature_dim], averaged over both strands before the layer."""
        both = 0.5 * (self._trunk(x) + self._trunk(x.flip(1, 2)))  # flip rows and positions = reverse complement
        return torch.nn.functional.silu(self.fc(both))


@dataclasses.dataclass
class DNAClassifierInfo:
    """A trained cell-type classifier and what it was trained on."""

    net: DNAClassifier          # The classifier (eval mode, no gradients).
    cell_types: list[str]       # Class k = cell_types[k].
    test_accuracy: float | None  # Cell-type accuracy on the test split (None when no test split was given).
    train_accuracy: float       # Cell-type accuracy on the training split.
    key: str                    # Cache key (fingerprint of data and hyper-parameters).
    background_accuracy: float | None = None  # Shuffled test sequences recognised as background (if any).


def _with_background(codes: np.ndarray, labels: np.ndarray, num_cell_types: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Append N / num_cell_types shuffled copies of randomly chosen sequences, labelled num_cell_types."""
    picked = np.sort(np.random.RandomState(seed).choice(len(codes), len(codes) // num_cell_types, replace=False))
    shuffled = shuffled_sequences(codes[picked], seed=seed)
    return (np.concatenate([codes, shuffled]),
            np.concatenate([labels, np.full(len(picked), num_cell_types, dtype=np.int64)]))


def train_dna_classifier(codes: Any, labels: Any, num_cell_types: int,
                         config: DNAClassifierConfig = DNAClassifierConfig()) -> DNAClassifier:
    """A freshly trained classifier (deterministic; see the module docstring); bypasses the caches."""
    codes, labels = as_codes(codes), np.asarray(labels, dtype=np.int64)
    if config.background:
        codes, labels = _with_background(codes, labels, num_cell_types, config.seed)
    x = torch.from_numpy(one_hot(codes))
    y = torch.as_tensor(labels, dtype=torch.int64)
    steps = max(config.epochs * -(-x.shape[0] // config.batch_size), config.min_steps)
    num_classes = num_cell_types + int(config.background)
    return fit(lambda: DNAClassifier(num_classes, config.channels, config.feature_dim), x, y, seed=config.seed,
               steps=steps, lr=config.lr, weight_decay=config.weight_decay, batch_size=config.batch_size)


def _predict(net: DNAClassifier, codes: np.ndarray, num_classes: int) -> np.ndarray:
    """Arg-max over the first num_classes logits."""
    return apply_batched(net, torch.from_numpy(one_hot(codes)), 512)[:, :num_classes].argmax(dim=1).numpy()


def get_dna_classifier(train_codes: Any, train_labels: Any, cell_types: Sequence[str],
                       test: tuple[Any, Any] | None = None,
                       config: DNAClassifierConfig = DNAClassifierConfig()) -> DNAClassifierInfo:
    """The classifier for this training data and config: from memory, the disk cache, or trained now."""
    codes = as_codes(train_codes)
    labels = np.asarray(train_labels, dtype=np.int64)
    cell_types = [str(c) for c in cell_types]
    if len(cell_types) < 2 or len(np.unique(labels)) < 2:
        raise ValueError(f'{METRIC_NAME} needs sequences of at least two cell types to train its classifier; '
                         f'got {", ".join(cell_types) or "none"}.')

    num_types = len(cell_types)

    def make_net() -> DNAClassifier:
        return DNAClassifier(num_types + int(config.background), config.channels, config.feature_dim)

    with torch.random.fork_rng(devices=[]):
        arch = repr(make_net())
    key = fingerprint(codes, labels, cell_types=cell_types, arch=arch, **dataclasses.asdict(config))
    if key in _memory:
        return _memory[key]

    def train() -> tuple[DNAClassifier, dict]:
        net = train_dna_classifier(codes, labels, num_types, config)
        meta = dict(train_accuracy=float((_predict(net, codes, num_types) == labels).mean()), test_accuracy=None,
                    background_accuracy=None)
        if test is not None:
            test_codes, test_labels = as_codes(test[0]), np.asarray(test[1], dtype=np.int64)
            meta['test_accuracy'] = float((_predict(net, test_codes, num_types) == test_labels).mean())
            if config.background:
                shuffled = shuffled_sequences(test_codes, seed=config.seed + 1)
                meta['background_accuracy'] = float((_predict(net, shuffled, num_types + 1) == num_types).mean())
        return net, meta

    net, meta = load_or_train('dna-celltype', key, make_net, train)
    info = DNAClassifierInfo(net, cell_types, meta.get('test_accuracy'), float(meta['train_accuracy']), key,
                             meta.get('background_accuracy'))
    logger.info('DNA cell-type classifier (%s): train accuracy %.3f, test accuracy %s', ', '.join(cell_types),
                info.train_accuracy, 'n/a' if info.test_accuracy is None else f'{info.test_accuracy:.3f}')
    return _memory.setdefault(key, info)


def dna_features(sequences: Any, classifier: DNAClassifier) -> np.ndarray:
    """Penultimate-layer features [N, D] (float64) of sequences."""
    return apply_batched(classifier.features, torch.from_numpy(one_hot(sequences)), 512).to(torch.float64).numpy()


def dna_frechet(generated: Any, reference: Any, classifier: DNAClassifier) -> float:
    """FD (cell-type CNN; stand-in for Sei-FID) between generated sequences and reference sequences or stats."""
    if isinstance(reference, tuple) and len(reference) == 2 and isinstance(reference[0], np.ndarray) \
            and reference[0].ndim == 1:
        ref_stats = reference
    else:
        ref_stats = feature_stats(dna_features(reference, classifier))
    return frechet_to_stats(dna_features(generated, classifier), ref_stats)
