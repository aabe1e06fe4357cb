"""Discrete-endpoint datasets: binarised images and one-hot DNA sequences (endpoint = 'discrete').

Binarised images hold values {0, 255}, i.e. {-1, +1} after the training loop's x / 127.5 - 1.

DNA sequences follow the same convention: an item is a uint8 one-hot array [4, L] (rows A, C, G, T;
columns = positions) with values {0, 255}, so in network units a base is +1 on its row and -1 on the
other three, DNA-Diffusion's encoding. Sequences shorter than L are padded with all-zero columns
("no base", -1 on all four rows), as DNA-Diffusion's one-hot encoder pads; longer ones are an error.
`one_hot_dna` encodes, `decode_dna` decodes (argmax over the four rows per position).

DNA tables: DNA-Diffusion's training tables, tab-separated with a header, plain (.txt, .tsv) or gzip
(.gz). The layout is the 19 columns of its per-cell tables and of its four-cell-type table
(K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt): dhs_id, chr, start, end, DHS_width, summit,
numsamples, total_signal, component, proportion, sequence, one 0/1 accessibility column per cell type
(GM12878_ENCLB441ZZZ, hESCT0_ENCLB449ZZZ, K562_ENCLB843GMH, HepG2_ENCLB029COU), TAG (the row's cell type),
addtional_rep_with_this_peak, other_samples_with_this_peak_not_considering_reps, data_label (the split:
training / validation / test; DNA-Diffusion holds out chr1 as test and chr2 as validation). Only sequence
and TAG are required; column names match case-insensitively. Without data_label the split follows the
chromosome column by the same rule (chr1 test, chr2 validation, the rest training).

Refused, with one sentence naming the file and the reason (never trained on):
- DNA-Diffusion's 7-column table for validating generated sequences (chrom, start, end, ID, CELL_TYPE,
  SEQUENCE, TAG, with TAG in training / validation / test / GENERATED / PROMOTERS / RANDOM_GENOME_REGIONS);
- a TAG that is not a cell type: a split or control name (GENERATED, PROMOTERS, ...), or, in a table with
  the per-cell accessibility columns, a TAG that names none of them;
- a data_label outside training / validation / test;
- several tables (a folder or a list) that repeat sequences, e.g. the four-cell table beside the per-cell
  tables whose rows it contains: every repeated sequence would be trained twice.
Bases may be upper or lower case; rows whose sequence contains N are skipped, as DNA-Diffusion skips
them; any other character (e.g. X) is an error naming the file and row.
"""
from __future__ import annotations

import csv
import gzip
import os
from typing import Any, Sequence

import numpy as np
import torch

from dnnlib.util import EasyDict
from training.dataset import Dataset, open_dataset

BASES = 'ACGT'
_PAD_CODE = 4       # "no base": all four rows 0 (-1 in network units)
_BAD_CODE = 5       # a character that is not A/C/G/T
_CODE_LUT = np.full(256, _BAD_CODE, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _CODE_LUT[ord(_b)] = _CODE_LUT[ord(_b.lower())] = _i
_CODE_LUT[0] = _PAD_CODE  # numpy pads shorter byte strings with NUL

_SPLIT_ALIASES = {'training': 'training', 'train': 'training', 'validation': 'validation',
                  'valid': 'validation', 'val': 'validation', 'test': 'test', 'testing': 'test'}
DATA_LABELS = ('training', 'validation', 'test')      # the data_label values of DNA-Diffusion's training tables
# TAG values of DNA-Diffusion's validation table (and its older builds) that name no cell type.
_NON_CELL_TAGS = frozenset({'generated', 'promoters', 'random_genome_regions', 'no', 'shuffled', 'random'})
# Columns of the training layout that are not per-cell accessibility flags.
_PLAIN_COLUMNS = frozenset({'dhs_id', 'chr', 'start', 'end', 'dhs_width', 'summit', 'numsamples', 'total_signal',
                            'component', 'proportion', 'sequence', 'tag', 'addtional_rep_with_this_peak',
                            'other_samples_with_this_peak_not_considering_reps', 'data_label'})
TABLE_SUFFIXES = ('.txt', '.tsv', '.txt.gz', '.tsv.gz', '.gz')


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
        self._cut = threshold * 255.0

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._base[idx]
        return np.where(image > self._cut, np.uint8(255), np.uint8(0)), label

    def __getattr__(self, attr: str) -> Any:
        """Public attributes not defined here are the base's (get_label, get_details, close, image_shape, ...);
        private ones are not forwarded (and copying or unpickling never recurses through a missing _base)."""
        if attr.startswith('_'):
            raise AttributeError(attr)
        return getattr(self._base, attr)

    @property
    def name(self) -> str:
        return f'{self._base.name}-binary'

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


def _codes_to_one_hot(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [N, L] -> uint8 one-hot [N, 4, L] in {0, 255} (padding: all zero)."""
    onehot = codes[:, np.newaxis, :] == np.arange(4, dtype=np.uint8)[np.newaxis, :, np.newaxis]
    return onehot.astype(np.uint8) * np.uint8(255)


def one_hot_dna(sequences: Sequence[str], length: int | None = None) -> np.ndarray:
    """uint8 one-hot [N, 4, length] in {0, 255} (see the module docstring); ValueError for letters other than ACGT."""
    codes = encode_dna(sequences, length)
    if (codes == _BAD_CODE).any():
        raise ValueError('DNA sequences may contain only A, C, G and T.')
    return _codes_to_one_hot(codes)


def decode_dna(x: Any) -> list[str]:
    """Sequences from one-hot-like arrays [N, 4, L] or [4, L] (uint8 or network units): argmax over the 4 rows."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[np.newaxis]
    if x.ndim != 3 or x.shape[1] != 4:
        raise ValueError(f'Expected one-hot DNA of shape [N, 4, L], got shape {list(x.shape)}.')
    letters = np.frombuffer(BASES.encode(), dtype=np.uint8)[x.argmax(axis=1)]
    return [row.tobytes().decode() for row in letters]


def _read_rows(path: str) -> list[list[str]]:
    """All tab-separated rows of a plain or gzip table."""
    try:
        with open(path, 'rb') as raw:
            gz = raw.read(2) == b'\x1f\x8b'
        opener = gzip.open(path, 'rt', newline='', encoding='utf-8') if gz else open(path, newline='', encoding='utf-8')
        with opener as f:
            return list(csv.reader(f, delimiter='\t'))
    except UnicodeDecodeError:
        raise ValueError(f'DNA table {path} is not a UTF-8 text file.') from None
    except (OSError, EOFError) as exc:
        raise ValueError(f'DNA table {path} cannot be read ({exc}).') from None


def read_dna_table(path: str) -> dict[str, list]:
    """Read one DNA-Diffusion training table -> dict(sequence=[...], cell_type=[...], split=[... or None]).

    Plain or gzip. Sequences are upper-cased; rows with N are kept (the dataset skips them). See the module
    docstring for the layout, the split rule and what is refused; every refusal is a ValueError of one
    sentence naming the file and the reason.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'DNA table {path} does not exist.')
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f'DNA table {path} is empty.')
    header = [name.strip() for name in rows[0]]
    columns = {name.lower(): i for i, name in enumerate(header)}
    if 'cell_type' in columns:
        raise ValueError(f'DNA table {path} is DNA-Diffusion\'s table for validating generated sequences (chrom, '
                         f'start, end, ID, CELL_TYPE, SEQUENCE, TAG), not a training table; train on its per-cell '
                         f'or four-cell-type table (dhs_id, ..., sequence, ..., TAG, ..., data_label).')
    numbered = [(n, r) for n, r in enumerate(rows[1:], start=2) if any(cell.strip() for cell in r)]
    short = next((n for n, r in numbered if len(r) < len(header)), None)
    if short is not None:
        raise ValueError(f'DNA table {path} has fewer columns in line {short} than in its header.')
    body = [r for _, r in numbered]

    def column(name: str) -> list[str] | None:
        i = columns.get(name)
        return None if i is None else [r[i].strip() for r in body]

    sequences = column('sequence')
    if sequences is None:
        raise ValueError(f'DNA table {path} has no sequence column (expected "sequence"; '
                         f'it has {", ".join(header[:8])}{", ..." if len(header) > 8 else ""}).')
    cell_types = column('tag')
    if cell_types is None:
        raise ValueError(f'DNA table {path} has no cell-type column (expected "TAG").')
    flags = {name for name in header if name.lower() not in _PLAIN_COLUMNS}
    for (line, _), tag in zip(numbered, cell_types):
        if tag.lower() in _NON_CELL_TAGS or tag.lower() in _SPLIT_ALIASES or not tag:
            raise ValueError(f'DNA table {path}, line {line}: TAG {tag!r} is not a cell type (DNA-Diffusion\'s '
                             f'training tables tag each row with its cell type, such as K562_ENCLB843GMH).')
        if flags and tag not in flags:
            raise ValueError(f'DNA table {path}, line {line}: TAG {tag!r} is not a cell type of this table (its '
                             f'cell-type columns are {", ".join(sorted(flags))}).')
    sequences = [s.upper() for s in sequences]
    for (line, _), s in zip(numbered, sequences):
        bad = set(s) - set('ACGTN')
        if bad:
            raise ValueError(f'DNA table {path}, line {line}: the sequence contains {sorted(bad)[0]!r}; '
                             f'only A, C, G, T (and N, whose rows are skipped) are allowed.')
    labels = column('data_label')
    if labels is not None:
        for (line, _), label in zip(numbered, labels):
            if label not in DATA_LABELS:
                raise ValueError(f'DNA table {path}, line {line}: data_label {label!r} is not one of training, '
                                 f'validation, test.')
        splits: list = labels
    else:
        chrom = column('chr') or column('chrom')
        by_chrom = {'chr1': 'test', 'chr2': 'validation'}   # DNA-Diffusion's held-out chromosomes; the rest trains
        splits = [by_chrom.get(c, 'training') for c in chrom] if chrom is not None else [None] * len(sequences)
    return dict(sequence=sequences, cell_type=cell_types, split=splits)


def dna_table_paths(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The table files of a DNA spec: one file, every .txt / .tsv / .gz file in a folder (sorted), or a list."""
    if isinstance(path, (str, os.PathLike)):
        path = os.fspath(path)
        if os.path.isdir(path):
            tables = sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.lower().endswith(TABLE_SUFFIXES) and os.path.isfile(os.path.join(path, f)))
            if not tables:
                raise ValueError(f'Folder {path} holds no DNA tables (.txt, .tsv or .gz files).')
            return tables
        return [path]
    paths = [os.fspath(p) for p in path]
    if not paths:
        raise ValueError('DNADataset needs at least one table or folder.')
    return [t for p in paths for t in dna_table_paths(p)]


def read_dna_tables(tables: Sequence[str]) -> dict[str, list]:
    """Read and concatenate tables; ValueError (one sentence) when two of them share a sequence."""
    table: dict[str, list] = dict(sequence=[], cell_type=[], split=[])
    seen: dict[str, str] = {}
    for t in tables:
        part = read_dna_table(t)
        own = set(part['sequence'])
        clash = next((s for s in own if s in seen), None)
        if clash is not None:
            shared = sum(s in seen for s in own)
            raise ValueError(f'DNA tables {seen[clash]} and {t} share {shared} sequences (as the four-cell-type '
                             f'table does beside the per-cell tables it contains), so they would be trained twice; '
                             f'use one or the other.')
        seen.update((s, t) for s in own)
        for key, values in part.items():
            table[key] += values
    return table


class DNADataset(Dataset):
    """DNA-Diffusion sequences as one-hot uint8 arrays [4, seq_len] in {0, 255} (see the module docstring).

    Labels (use_labels=True): index of the item's cell type in `cell_types` (label_dim = len(cell_types)).
    `cell_types` defaults to the sorted names of every cell type in the table(s), before any split or
    cell-type filter, so that all splits of the same tables share one mapping; it is stored in
    `dataset_kwargs`, which therefore names the classes of a network trained on this dataset.
    """

    endpoint = 'discrete'

    def __init__(self,
        path: str | Sequence[str],      # A DNA table (.txt, .tsv, .gz), a folder of them, or a list.
        cell_type: str | Sequence[str] | None = None,  # Cell types to keep ('K562' ~ 'K562_ENCLB843GMH'); None = all.
        split: str | None = 'training',  # 'training' | 'validation' | 'test' (aliases train/val) | None or 'all'.
        seq_len: int = 200,             # Length L of an item; shorter sequences are padded with "no base".
        cell_types: Sequence[str] | None = None,  # Class order (label k = cell_types[k]); None = sorted names found.
        resolution: int | None = None,  # Must be None or seq_len (train.py passes the data's resolution).
        use_labels: bool = False,       # Cell-type labels.
        max_size: int | None = None,    # See Dataset.
        xflip: bool = False,            # Must be False: flipping would reverse the sequences.
        random_seed: int = 0,           # See Dataset.
        cache: bool = False,            # Accepted for uniformity; the data is always in memory.
        name: str | None = None,        # Dataset name; None = the first table's (or the folder's) name.
    ) -> None:
        seq_len = int(seq_len)
        if seq_len < 1:
            raise ValueError(f'seq_len must be a positive integer, got {seq_len}.')
        if resolution is not None and int(resolution) != seq_len:
            raise ValueError(f'DNA items are {seq_len} bases long (seq_len), not the requested resolution '
                             f'{resolution}.')
        if xflip:
            raise ValueError('xflip is not meaningful for DNA: flipping would reverse the sequences.')
        want_split = None if split in (None, 'all') else _SPLIT_ALIASES.get(str(split).strip().lower())
        if split not in (None, 'all') and want_split is None:
            raise ValueError(f'Unknown split {split!r}; use training, validation, test or None.')
        tables = dna_table_paths(path)

        table = read_dna_tables(tables)
        found = sorted(set(table['cell_type']))
        self.cell_types = list(found) if cell_types is None else [str(c) for c in cell_types]
        unknown = [c for c in found if c not in self.cell_types]
        if unknown:
            raise ValueError(f'Cell type {unknown[0]!r} in {tables[0]} is not among cell_types '
                             f'({", ".join(self.cell_types)}).')
        keep = np.ones(len(table['sequence']), dtype=bool)
        if cell_type is not None:
            wanted = [cell_type] if isinstance(cell_type, str) else list(cell_type)
            keep &= np.array([c in wanted or c.split('_')[0] in wanted for c in table['cell_type']], dtype=bool)
            if not keep.any():
                raise ValueError(f'No sequences of cell type {cell_type!r}; available: {", ".join(found)}.')
        if want_split is not None:
            if all(s is None for s in table['split']):
                raise ValueError(f'{tables[0]} has no split information (no data_label or chromosome '
                                 f'column); pass split=None to use every row.')
            keep &= np.array([s == want_split for s in table['split']], dtype=bool)

        index = np.flatnonzero(keep)
        try:
            codes = encode_dna([table['sequence'][i] for i in index], seq_len)
        except ValueError as exc:
            raise ValueError(f'{tables[0] if len(tables) == 1 else "A table"}: {exc} Pass a larger seq_len.') from None
        valid = ~(codes == _BAD_CODE).any(axis=1)   # only N is left at this point (read_dna_table refuses the rest)
        self.num_skipped = int((~valid).sum())
        self._codes = codes[valid]
        type_index = {c: k for k, c in enumerate(self.cell_types)}
        self._labels = np.array([type_index[table['cell_type'][i]] for i in index[valid]], dtype=np.int64)
        if self._codes.shape[0] == 0:
            raise ValueError(f'No usable DNA sequences in {", ".join(tables)} for the given filters.')
        self._seq_len = seq_len
        self._init_kwargs = dict(path=path, cell_type=cell_type, split=split, seq_len=seq_len,
                                 cell_types=list(self.cell_types), resolution=resolution, use_labels=use_labels,
                                 max_size=max_size, xflip=xflip, random_seed=random_seed, cache=cache, name=name)
        if name is None:
            first = os.fspath(path) if isinstance(path, (str, os.PathLike)) else tables[0]
            base = os.path.basename(os.path.normpath(first))
            name = os.path.splitext(base[:-3] if base.lower().endswith('.gz') else base)[0]
        super().__init__(name=name, raw_shape=[self._codes.shape[0], 4, seq_len], max_size=max_size,
                         use_labels=use_labels, xflip=False, random_seed=random_seed, cache=False)
        if use_labels:
            self._label_shape = [len(self.cell_types)]

    @property
    def resolution(self) -> int:
        """Sequence length L (what the networks call img_resolution)."""
        return self._seq_len

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        return _codes_to_one_hot(self._codes[raw_idx:raw_idx + 1])[0]

    def _load_raw_labels(self) -> np.ndarray:
        return self._labels

    def sequences(self) -> list[str]:
        """The sequences of items 0..len-1 (upper case, padding dropped)."""
        letters = np.frombuffer((BASES + '--').encode(), dtype=np.uint8)[self._codes[self._raw_idx]]
        return [row.tobytes().decode().rstrip('-') for row in letters]

    def item_cell_types(self) -> list[str]:
        """The cell type of items 0..len-1 (also without use_labels)."""
        return [self.cell_types[k] for k in self._labels[self._raw_idx]]
