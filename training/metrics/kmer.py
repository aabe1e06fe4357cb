"""k-mer spectra of DNA sequence sets and their Jensen–Shannon divergence (k = 1…6).

Spectrum: the counts of all overlapping k-mers over every sequence of a set, in 4^k bins ordered
lexicographically over A < C < G < T (bin index = Σ_j code_j · 4^(k−1−j), so 'AA…A' is bin 0 and 'TT…T' the
last). A sequence of length L contributes L − k + 1 k-mers; only the given strand is counted.

Divergence between two sets with spectra P and Q (normalised to probabilities p, q):
    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m),   m = ½ (p + q),   KL(a ‖ b) = Σ a_i log₂(a_i / b_i),
in **bits** (log base 2), so 0 ≤ JS ≤ 1: identical spectra give 0 and spectra with disjoint supports give 1
(e.g. {'AAAA'} against {'CCCC'} at any k ≤ 4). Terms with a_i = 0 contribute 0, so no pseudocount is needed.
`kmer_js` returns JS for every k and their mean over k = 1…6, the summary that `kmer-dna` reports.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
from scipy.spatial.distance import jensenshannon

from training.metrics.sequences import as_codes, kmer_codes

KS = (1, 2, 3, 4, 5, 6)


def kmer_spectrum(sequences: Any, k: int) -> np.ndarray:
    """int64 counts [4^k] of the overlapping k-mers of all sequences (see the module docstring)."""
    if not 1 <= int(k) <= 12:
        raise ValueError(f'k must lie in 1..12, got {k}.')
    k = int(k)
    codes = as_codes(sequences)
    if codes.shape[1] < k:
        return np.zeros(4 ** k, dtype=np.int64)
    return np.bincount(kmer_codes(codes, k).ravel().astype(np.int64), minlength=4 ** k)


def js_divergence(p: Any, q: Any) -> float:
    """Jensen–Shannon divergence in bits between two count or probability vectors of one length."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f'Need two vectors of one length, got shapes {list(p.shape)} and {list(q.shape)}.')
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError('Counts must be non-negative with a positive total.')
    return float(jensenshannon(p, q, base=2) ** 2)   # scipy returns the distance, the square root of JS


def kmer_js(generated: Any, reference: Any, ks: Iterable[int] = KS) -> dict[str, float]:
    """{'k1': JS, …, 'k6': JS, 'mean': mean over ks} between the k-mer spectra of two sequence sets (bits)."""
    gen, ref = as_codes(generated), as_codes(reference)
    if len(gen) == 0 or len(ref) == 0:
        raise ValueError('k-mer divergence needs at least one sequence in each set.')
    result = {f'k{k}': js_divergence(kmer_spectrum(gen, k), kmer_spectrum(ref, k)) for k in ks}
    result['mean'] = float(np.mean(list(result.values())))
    return result
