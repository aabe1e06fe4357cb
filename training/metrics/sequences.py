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


def dinucleotide_shuffled(codes: Any, seed: int = 0) -> np.ndarray:
    """Each sequence shuffled with its dinucleotide counts kept exactly (Altschul & Erickson 1985); codes [N, L].

    A sequence is a walk through the de Bruijn multigraph whose edges are its L − 1 dinucleotides. A random
    Eulerian walk with the same first base is drawn: every letter except the last base picks one of its outgoing
    edges as its final exit, redrawn until those exits form a tree leading to the last base (then the walk can
    never get stuck); the other exits of each letter are used in random order, the chosen one last.
    """
    c = as_codes(codes)
    rng = np.random.RandomState(seed)
    out = np.empty_like(c)
    for row, seq in enumerate(c):
        out[row] = _shuffle_one(seq, rng) if len(seq) > 2 else seq
    return out


def _shuffle_one(seq: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    first, last = int(seq[0]), int(seq[-1])
    exits: list[list[int]] = [[] for _ in range(4)]
    for a, b in zip(seq[:-1].tolist(), seq[1:].tolist()):
        exits[a].append(b)
    letters = [v for v in range(4) if exits[v] and v != last]
    while True:
        final = {v: exits[v][rng.randint(len(exits[v]))] for v in letters}
        ends = dict(final)
        for _ in range(3):    # following final exits, a letter reaches `last` within 3 more steps unless they cycle
            ends = {v: final.get(u, u) for v, u in ends.items()}
        if all(u == last for u in ends.values()):
            break
    order: list[list[int]] = []
    for v in range(4):
        rest = list(exits[v])
        if v in final:
            rest.remove(final[v])
        rng.shuffle(rest)
        order.append(rest + ([final[v]] if v in final else []))
    walk, u = [first], first
    position = [0, 0, 0, 0]
    for _ in range(len(seq) - 1):
        nxt = order[u][position[u]]
        position[u] += 1
        walk.append(nxt)
        u = nxt
    return np.array(walk, dtype=np.uint8)


def gc_content(sequences: Any) -> np.ndarray:
    """Share of G and C per sequence (float64 [N])."""
    c = as_codes(sequences)
    return ((c == 1) | (c == 2)).mean(axis=1)


def cpg_observed_expected(sequences: Any) -> np.ndarray:
    """CpG observed/expected per sequence, n_CG · L / (n_C · n_G) (Gardiner-Garden & Frommer 1987); 0 when a
    sequence has no C or no G (float64 [N])."""
    c = as_codes(sequences)
    length = c.shape[1]
    n_c, n_g = (c == 1).sum(axis=1), (c == 2).sum(axis=1)
    n_cg = ((c[:, :-1] == 1) & (c[:, 1:] == 2)).sum(axis=1)
    expected = n_c.astype(np.float64) * n_g
    return np.divide(n_cg * float(length), expected, out=np.zeros(len(c)), where=expected > 0)


SEED_K = 16          # exact seed length of the memorisation search (see `best_identity`)


def kmer_codes(c: np.ndarray, k: int) -> np.ndarray:
    """uint64 codes [N, L − k + 1] of every overlapping k-mer of codes [N, L] (k ≤ L): Σ_j c[i + j] · 4^(k−1−j)."""
    out = np.zeros([c.shape[0], c.shape[1] - k + 1], dtype=np.uint64)
    for j in range(k):
        out = out * np.uint64(4) + c[:, j:c.shape[1] - k + 1 + j].astype(np.uint64)
    return out


def best_identity(queries: Any, targets: Any, max_shift: int = 10) -> np.ndarray:
    """For each query, the best ungapped identity to any target: max over targets t and shifts |d| ≤ max_shift of
    (number of positions i with q[i] = t[i + d]) / L, on the given strand (float64 [N]; sequences of one length L).

    Only identities ≥ 1 − max_shift / L are exact (the default finds every pair ≥ 95% at L = 200): such a pair has
    at most max_shift mismatches in an overlap of at least L − max_shift, so it shares an exact run of at least
    (L − 2·max_shift) / (max_shift + 1) ≥ SEED_K bases; candidates are the pairs sharing a 16-mer, verified
    exactly.
    Lower identities are reported as found among the candidates (0 when there is none).
    """
    q, t = as_codes(queries), as_codes(targets)
    length = q.shape[1]
    if t.shape[1] != length:
        raise ValueError(f'Queries have {length} bases, targets {t.shape[1]}.')
    best = np.zeros(len(q))
    if length < SEED_K or not len(t) or not len(q):
        return best
    tk = kmer_codes(t, SEED_K)
    flat = tk.ravel()
    order = np.argsort(flat, kind='stable')
    sorted_codes, owner = flat[order], order // tk.shape[1]
    qk = kmer_codes(q, SEED_K)
    lo = np.searchsorted(sorted_codes, qk.ravel(), side='left')
    hi = np.searchsorted(sorted_codes, qk.ravel(), side='right')
    query_of = np.repeat(np.arange(len(q)), qk.shape[1])
    pairs = set()
    for i in np.flatnonzero(hi > lo):
        for j in owner[lo[i]:hi[i]]:
            pairs.add((int(query_of[i]), int(j)))
    for a, b in pairs:
        qa, tb = q[a], t[b]
        for d in range(-max_shift, max_shift + 1):      # qa[i] against tb[i + d] over their overlap
            same = int((qa[max(-d, 0):length - max(d, 0)] == tb[max(d, 0):length + min(d, 0)]).sum())
            best[a] = max(best[a], same / length)
    return best
