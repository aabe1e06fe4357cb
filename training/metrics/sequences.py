"""DNA sequence inputs of the sequence metrics, and the null sequences that give them a scale.

Every sequence metric accepts any of
    list[str]                     sequences over A/C/G/T (either case), all of one length;
    integer codes [N, L]          0..3 for A, C, G, T (what `as_codes` returns);
    one-hot arrays [N, 4, L]      channels A, C, G, T: uint8 0/255 as the DNA dataset stores them, or floating
                                  network-range samples (about ±1); each position's base is the channel argmax.
A sequence with any other character, or a code outside 0..3, is refused with one ValueError sentence.

Null sets for calibration (`random_sequences`, `shuffled_sequences`): uniform i.i.d. bases, and each real
sequence with its own bases permuted (a mononucleotide shuffle: composition kept, order destroyed).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

BASES = 'ACGT'
_LUT = np.full(256, 255, dtype=np.uint8)
for _i, _b in enumerate(BASES):
    _LUT[ord(_b)] = _LUT[ord(_b.lower())] = _i


def as_codes(x: Any) -> np.ndarray:
    """uint8 codes [N, L] in 0..3 from strings, codes or one-hot arrays (see the module docstring)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)) and (not x or isinstance(x[0], str)):
        return _strings_to_codes(x)
    x = np.asarray(x)
    if x.ndim == 3:
        if x.shape[1] != 4:
            raise ValueError(f'Expected one-hot sequences [N, 4, L], got shape {list(x.shape)}.')
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise ValueError('The one-hot sequences contain NaN or Inf values.')
        return x.argmax(axis=1).astype(np.uint8)
    if x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 3):
            raise ValueError('Sequence codes must lie in 0..3 (A, C, G, T).')
        return x.astype(np.uint8)
    raise ValueError(f'Expected sequences as strings, codes [N, L] or one-hot [N, 4, L], got {x.dtype} '
                     f'{list(x.shape)}.')


def _strings_to_codes(sequences: Sequence[str]) -> np.ndarray:
    if not sequences:
        return np.zeros([0, 0], dtype=np.uint8)
    lengths = {len(s) for s in sequences}
    if len(lengths) != 1:
        raise ValueError(f'All sequences must have one length; got lengths {min(lengths)} to {max(lengths)}.')
    length = lengths.pop()
    try:
        raw = np.frombuffer(''.join(sequences).encode('ascii'), dtype=np.uint8)
    except UnicodeEncodeError:
        raise ValueError('Sequences may contain only the letters A, C, G and T.') from None
    codes = _LUT[raw].reshape(len(sequences), length)
    if (codes == 255).any():
        row = int(np.flatnonzero((codes == 255).any(axis=1))[0])
        bad = sequences[row][int(np.flatnonzero(codes[row] == 255)[0])]
        raise ValueError(f'Sequence {row} contains {bad!r}; only A, C, G and T are allowed.')
    return codes


def to_strings(codes: Any) -> list[str]:
    """Sequences as strings over ACGT from anything `as_codes` accepts."""
    letters = np.frombuffer(BASES.encode(), dtype=np.uint8)[as_codes(codes)]
    return [row.tobytes().decode() for row in letters]


def one_hot(codes: Any) -> np.ndarray:
    """float32 one-hot [N, 4, L] (0/1) from anything `as_codes` accepts."""
    c = as_codes(codes)
    return (c[:, np.newaxis, :] == np.arange(4, dtype=np.uint8)[np.newaxis, :, np.newaxis]).astype(np.float32)


def random_sequences(num: int, length: int, seed: int = 0) -> np.ndarray:
    """Codes [num, length] of i.i.d. uniform bases."""
    return np.random.RandomState(seed).randint(0, 4, size=[num, length]).astype(np.uint8)


def shuffled_sequences(codes: Any, seed: int = 0) -> np.ndarray:
    """Each sequence with its own bases randomly permuted (composition kept); codes [N, L]."""
    c = as_codes(codes)
    order = np.random.RandomState(seed).rand(*c.shape).argsort(axis=1)
    return np.take_along_axis(c, order, axis=1)
