"""Discrete-endpoint datasets: binarised images and one-hot DNA sequences (endpoint = 'discrete').

Binarised images hold values {0, 255}, i.e. {-1, +1} after the usual x / 127.5 - 1.

DNA layout ("folding"). A sequence of length L <= seq_len is one-hot encoded over A, C, G, T (channels
0..3) and padded with all-zero columns ("no base") to fold * fold positions; position i then goes to
row i // fold, column i % fold of a [4, fold, fold] uint8 image with values {0, 255}. In network units a
base is +1 on its channel and -1 on the other three; padding is -1 on all four. With the default
fold = 16, 256 >= 200 positions fit the 200 bp DNA-Diffusion sequences, so the square 2-D U-Nets apply
unchanged. `unfold_dna` inverts this (channel argmax per position, padding dropped).

DNA tables (tab-separated, with a header; both DNA-Diffusion layouts are read):
  per cell type: ... sequence ... TAG (cell type) ... data_label (training/validation/test)
  four cell types: chrom, start, end, ID, CELL_TYPE, SEQUENCE, TAG
Column names match case-insensitively. The cell type is CELL_TYPE when present, else TAG. The split is
data_label, else TAG when CELL_TYPE is present, provided its values are split names; otherwise it
follows DNA-Diffusion's chromosome rule (chr1 = validation, chr2 = test, the rest = training).
Rows whose sequence holds anything but A/C/G/T (either case) are skipped, as DNA-Diffusion does.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Sequence

import numpy as np
import torch

from dnnlib.util import EasyDict
from training.dataset import Dataset, open_dataset

BASES = 'ACGT'
_PAD_CODE = 4       # "no base": all four channels 0 (-1 in network units)
_BAD_CODE = 5       # a character that is not A/C/G/T
_CODE_LUT = np.full(256, _BAD_CODE, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE_LUT[ord(_b)] = _CODE_LUT[ord(_b.lower())] = _i
_CODE_LUT[0] = _PAD_CODE  # numpy pads shorter byte strings with NUL

_SPLIT_ALIASES = {'training': 'training', 'train': 'training', 'validation': 'validation',
                  'valid': 'validation', 'val': 'validation', 'test': 'test', 'testing': 'test'}


class BinarizedDataset(torch.utils.data.Dataset):
    """Any image dataset thresholded to {0, 255}: pixel -> 255 if pixel / 255 > threshold else 0.

    Items, labels, length and shapes are the base dataset's (same max_size subset, x-flips and labels).
    """

    endpoint = 'discrete'

    def __init__(self,
        base: Any,                # Dataset instance, dataset spec string, or dict with class_name (dataset_kwargs).
        threshold: float = 0.5,   # Fraction of full range in [0, 1); 0.5 keeps pixels > 127.5.
        **base_kwargs: Any,       # Dataset kwargs (resolution, use_labels, max_size, ...) for a non-instance base.
    ) -> None:
        threshold = float(threshold)
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f'threshold must lie in [0, 1), got {threshold}.')
        if hasattr(base, 'dataset_kwargs'):
            if base_kwargs:
                raise ValueError('Pass dataset kwargs to the base dataset, not to BinarizedDataset, '
                                 'when base is already a dataset.')
            self._base = base
            base_spec = dict(base.dataset_kwargs)
        else:
            self._base = open_dataset(base, **base_kwargs)
            base_spec = base
        self._init_kwargs = dict(base=base_spec, threshold=threshold, **base_kwargs)
        self._threshold = threshold
        self._cut = threshold * 255.0

    def binarize(self, image: np.ndarray) -> np.ndarray:
        """uint8 {0, 255} version of a uint8 image."""
        return np.where(image > self._cut, np.uint8(255), np.uint8(0))

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._base[idx]
        return self.binarize(image), label

    def get_label(self, idx: int) -> np.ndarray:
        return self._base.get_label(idx)

    def get_details(self, idx: int) -> EasyDict:
        return self._base.get_details(idx)

    def close(self) -> None:
        self._base.close()

    @property
    def base(self) -> Any:
        return self._base

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def name(self) -> str:
        return f'{self._base.name}-binary'

    image_shape = property(lambda self: self._base.image_shape)
    num_channels = property(lambda self: self._base.num_channels)
    resolution = property(lambda self: self._base.resolution)
    label_shape = property(lambda self: self._base.label_shape)
    label_dim = property(lambda self: self._base.label_dim)
    has_labels = property(lambda self: self._base.has_labels)
    has_onehot_labels = property(lambda self: self._base.has_onehot_labels)

    @property
    def dataset_kwargs(self) -> EasyDict:
        return EasyDict(class_name='training.dataset_discrete.BinarizedDataset', **self._init_kwargs)


def encode_dna(sequences: Sequence[str], length: int | None = None) -> np.ndarray:
    """uint8 codes [N, length]: 0..3 for A/C/G/T (either case), 4 = padding, 5 = any other character.

    `length` defaults to the longest sequence; longer sequences raise ValueError.
    """
    sequences = list(sequences)
    longest = max((len(s) for s in sequences), default=0)
    length = longest if length is None else int(length)
    if longest > length:
        raise ValueError(f'A sequence has {longest} bases, more than the allowed {length}.')
    if not sequences:
        return np.zeros([0, length], dtype=np.uint8)
    raw = np.array([s.encode('ascii', 'replace') for s in sequences], dtype=f'S{max(length, 1)}')
    return _CODE_LUT[raw.view(np.uint8).reshape(len(sequences), max(length, 1))][:, :length]


def fold_dna(sequences: Sequence[str], fold: int = 16) -> np.ndarray:
    """One-hot fold of sequences (see module docstring) -> uint8 [N, 4, fold, fold] in {0, 255}."""
    codes = encode_dna(sequences, fold * fold)
    if (codes == _BAD_CODE).any():
        raise ValueError('DNA sequences may contain only A, C, G and T.')
    return _codes_to_images(codes, fold)


def _codes_to_images(codes: np.ndarray, fold: int) -> np.ndarray:
    n, length = codes.shape
    padded = np.full([n, fold * fold], _PAD_CODE, dtype=np.uint8)
    padded[:, :length] = codes
    onehot = padded[:, np.newaxis, :] == np.arange(4, dtype=np.uint8)[np.newaxis, :, np.newaxis]
    return (onehot.astype(np.uint8) * 255).reshape(n, 4, fold, fold)


def unfold_dna(images: Any, seq_len: int | None = None) -> list[str]:
    """Sequences from folded images [N, 4, H, W] or [4, H, W] (uint8 0..255, or float in network units).

    Each position's base is the argmax over the four channels. A position counts as "no base" when
    every channel is below the midpoint (127.5 for uint8, 0 for floats); with seq_len=None each
    sequence ends after its last position that has a base (trailing padding dropped), otherwise the
    first seq_len positions are returned.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[np.newaxis]
    if images.ndim != 4 or images.shape[1] != 4:
        raise ValueError(f'Expected folded DNA images [N, 4, H, W], got shape {list(images.shape)}.')
    mid = 127.5 if images.dtype == np.uint8 else 0.0
    flat = images.reshape(images.shape[0], 4, -1).astype(np.float32)
    letters = np.frombuffer(BASES.encode(), dtype=np.uint8)[flat.argmax(axis=1)]
    if seq_len is not None:
        return [row[:seq_len].tobytes().decode() for row in letters]
    present = flat.max(axis=1) > mid
    ends = np.where(present.any(axis=1), present.shape[1] - np.argmax(present[:, ::-1], axis=1), 0)
    return [row[:end].tobytes().decode() for row, end in zip(letters, ends)]


def _normalize_split(value: str | None) -> str | None:
    if value is None:
        return None
    return _SPLIT_ALIASES.get(str(value).strip().lower())


def read_dna_table(path: str) -> dict[str, list[str]]:
    """Read one DNA-Diffusion TSV -> dict(sequence=[...], cell_type=[...], split=[... or None]).

    See the module docstring for the recognised layouts and the split rule.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'DNA table {path} does not exist.')
    with open(path, newline='', encoding='utf-8', errors='replace') as f:
        rows = list(csv.reader(f, delimiter='\t'))
    if not rows:
        raise ValueError(f'DNA table {path} is empty.')
    columns = {name.strip().lower(): i for i, name in enumerate(rows[0])}
    body = [r for r in rows[1:] if r]

    def column(name: str) -> list[str] | None:
        i = columns.get(name)
        if i is None:
            return None
        if any(len(r) <= i for r in body):
            raise ValueError(f'DNA table {path} has rows with fewer columns than its header.')
        return [r[i].strip() for r in body]

    sequences = column('sequence')
    if sequences is None:
        raise ValueError(f'DNA table {path} has no sequence column (expected "sequence" or "SEQUENCE").')
    four_cell = 'cell_type' in columns
    cell_types = column('cell_type' if four_cell else 'tag')
    if cell_types is None:
        cell_types = [os.path.splitext(os.path.basename(path))[0]] * len(sequences)
    splits = None
    for name in ('data_label', 'tag') if four_cell else ('data_label',):
        values = column(name)
        if values is not None and all(_normalize_split(v) is not None for v in values):
            splits = [_normalize_split(v) for v in values]
            break
    if splits is None:
        chrom = column('chrom') or column('chr')
        if chrom is not None:
            splits = [{'chr1': 'validation', 'chr2': 'test'}.get(c, 'training') for c in chrom]
    return dict(sequence=sequences, cell_type=cell_types, split=splits or [None] * len(sequences))


def _matches(cell_type: str, wanted: Sequence[str]) -> bool:
    return any(cell_type == w or cell_type.split('_')[0] == w for w in wanted)


class DNADataset(Dataset):
    """DNA-Diffusion sequences as folded one-hot images [4, fold, fold] (see module docstring).

    Labels (use_labels=True): index of the cell type in the sorted list `cell_types` of all cell types
    found in the file(s) before filtering; label_dim = len(cell_types).
    """

    endpoint = 'discrete'

    def __init__(self,
        path: str | Sequence[str],      # One TSV file or a list of them (e.g. one per cell type).
        cell_type: str | Sequence[str] | None = None,  # Cell types to keep ('K562' ~ 'K562_ENCLB8...'); None = all.
        split: str | None = 'training',  # 'training' | 'validation' | 'test' (aliases train/val) | None or 'all'.
        seq_len: int = 200,             # Longest allowed sequence; shorter ones are padded with "no base".
        fold: int = 16,                 # Side of the square image; fold * fold >= seq_len.
        resolution: int | None = None,  # Must be None or equal to fold.
        use_labels: bool = False,       # Cell-type labels.
        max_size: int | None = None,    # See Dataset.
        xflip: bool = False,            # Must be False: flipping scrambles the folded sequence.
        random_seed: int = 0,           # See Dataset.
        cache: bool = False,            # Accepted for uniformity; the data is always in memory.
        name: str | None = None,        # Dataset name; None = the first file's name without extension.
    ) -> None:
        self._init_kwargs = dict(path=path, cell_type=cell_type, split=split, seq_len=seq_len, fold=fold,
                                 resolution=resolution, use_labels=use_labels, max_size=max_size, xflip=xflip,
                                 random_seed=random_seed, cache=cache, name=name)
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise ValueError('DNADataset needs at least one file path.')
        if fold < 1 or fold * fold < seq_len:
            raise ValueError(f'fold={fold} gives {fold * fold} positions, fewer than seq_len={seq_len}.')
        if resolution is not None and resolution != fold:
            raise ValueError(f'DNA images are {fold}x{fold} (fold={fold}), not the requested resolution {resolution}.')
        if xflip:
            raise ValueError('xflip is not meaningful for DNA: flipping would scramble the folded sequence.')
        want_split = None if split in (None, 'all') else _normalize_split(split)
        if split not in (None, 'all') and want_split is None:
            raise ValueError(f'Unknown split {split!r}; use training, validation, test or None.')

        table: dict[str, list] = dict(sequence=[], cell_type=[], split=[])
        for p in paths:
            for key, values in read_dna_table(os.fspath(p)).items():
                table[key] += values
        self.cell_types = sorted(set(table['cell_type']))
        keep = np.ones(len(table['sequence']), dtype=bool)
        if cell_type is not None:
            wanted = [cell_type] if isinstance(cell_type, str) else list(cell_type)
            keep &= np.array([_matches(c, wanted) for c in table['cell_type']], dtype=bool)
            if not keep.any():
                raise ValueError(f'No sequences of cell type {cell_type!r}; available: {", ".join(self.cell_types)}.')
        if want_split is not None:
            if all(s is None for s in table['split']):
                raise ValueError(f'{paths[0]} has no split information; pass split=None to use every row.')
            keep &= np.array([s == want_split for s in table['split']], dtype=bool)

        index = np.flatnonzero(keep)
        codes = encode_dna([table['sequence'][i] for i in index], seq_len)
        valid = ~(codes == _BAD_CODE).any(axis=1)
        self.num_skipped = int((~valid).sum())
        self._codes = codes[valid]
        type_index = {c: k for k, c in enumerate(self.cell_types)}
        self._labels = np.array([type_index[table['cell_type'][i]] for i in index[valid]], dtype=np.int64)
        if self._codes.shape[0] == 0:
            raise ValueError(f'No usable DNA sequences in {", ".join(map(str, paths))} for the given filters.')
        self._fold = int(fold)
        if name is None:
            name = os.path.splitext(os.path.basename(os.fspath(paths[0])))[0]
        super().__init__(name=name, raw_shape=[self._codes.shape[0], 4, fold, fold], max_size=max_size,
                         use_labels=use_labels, xflip=False, random_seed=random_seed, cache=False)
        if use_labels:
            self._label_shape = [len(self.cell_types)]

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        return _codes_to_images(self._codes[raw_idx:raw_idx + 1], self._fold)[0]

    def _load_raw_labels(self) -> np.ndarray:
        return self._labels

    def sequences(self) -> list[str]:
        """The sequences of this dataset's raw items (no padding), in raw order."""
        letters = np.frombuffer((BASES + '--').encode(), dtype=np.uint8)[self._codes]
        return [row.tobytes().decode().rstrip('-') for row in letters]
