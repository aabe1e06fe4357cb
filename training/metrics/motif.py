"""Motif composition of DNA sequence sets and its divergence (DNA-Diffusion's motif comparison).

DNA-Diffusion (DaSilva et al., 2024) scans generated and real sequences for the JASPAR 2020 vertebrate
motifs (with `gimme scan`), counts the hits of every motif over a whole set, normalises the counts to a
motif-occurrence distribution, and compares the distributions of two sets with the Kullback–Leibler
divergence KL(generated ‖ real). This module re-implements that comparison with its own vectorised scanner:

motifs      JASPAR 2020 CORE vertebrates (746 count matrices), shipped by the optional package `pyjaspar`
            (`pip install -e ".[dna]"`), sorted by matrix ID; or any count matrices (`MotifSet.from_counts`).
scores      log-odds in bits against a uniform background (0.25 each), with FIMO's pseudocount rule: each
            count gets 0.1 × background added before normalising (`PSEUDOCOUNT`). Scores are rounded to a
            grid of `RESOLUTION` = 0.01 bit per position, so window scores are exact integers on that grid.
threshold   a window is a hit when P(S ≥ score) ≤ `P_VALUE` = 1e-4 under i.i.d. uniform background bases (FIMO's
            default p-value threshold). The null distribution of S is computed exactly on the score grid by
            convolving the per-position score distributions (Biopython's `ScoreDistribution` does the same,
            but takes about 1.4 s per motif here, 17 minutes for the 746 motifs, against a few seconds).
            A 6-bp motif cannot reach 1e-4 (its best word has probability 4^-6): the five 6-bp JASPAR 2020
            motifs (Arnt, Ahr::Arnt, Sox5, ZNF354C, Arid3a) never hit, as in FIMO at its default.
strands     both: every window is scored with the matrix and with its reverse complement; each strand's hit
            counts (a palindromic site can count twice, as gimme scan reports it).
scanning    one convolution per motif width over one-hot sequences (torch conv1d on float32; exact because the
            scores are integers below 2^24), in chunks of sequences.
divergence  occurrence distribution p_i = (c_i + 1) / Σ_j (c_j + 1): a pseudocount of 1 per motif guards
            motifs absent from a set (DNA-Diffusion puts a count of 1 on motifs missing from one set).
            `motif_divergence` returns KL(generated ‖ reference) in nats (natural log, scipy's `rel_entr`, as
            DNA-Diffusion reports it; the `motif-dna` value) and the symmetric, bounded Jensen–Shannon
            divergence in bits as a second view.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import numpy as np
import torch
from scipy.special import rel_entr

from training.metrics.kmer import js_divergence
from training.optional import require
from training.metrics.sequences import one_hot

JASPAR_RELEASE = 'JASPAR2020'
P_VALUE = 1e-4
PSEUDOCOUNT = 0.1
BACKGROUND = (0.25, 0.25, 0.25, 0.25)
RESOLUTION = 0.01
OCCURRENCE_PSEUDOCOUNT = 1.0
SCAN_CHUNK = 128
FPR = 0.01                 # per-sequence false-positive rate of the calibrated thresholds (gimme scan -g)
MAX_HITS = 20              # hits counted per motif per sequence (gimme scan -n 20)


def log_odds(counts: Any, pseudocount: float = PSEUDOCOUNT, background: Sequence[float] = BACKGROUND) -> np.ndarray:
    """Position-specific scores [W, 4] in bits from counts [4, W] (rows A, C, G, T); see the module docstring."""
    c = np.asarray(counts, dtype=np.float64)
    bg = np.asarray(background, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != 4 or c.shape[1] < 1 or (c < 0).any():
        raise ValueError(f'Motif counts must be a non-negative [4, W] array, got shape {list(c.shape)}.')
    freq = (c + pseudocount * bg[:, None]) / (c.sum(axis=0, keepdims=True) + pseudocount)
    return np.log2(freq / bg[:, None]).T


def score_threshold(scores: np.ndarray, p_value: float = P_VALUE,
                    background: Sequence[float] = BACKGROUND) -> int:
    """Smallest integer window score t with P(S ≥ t) ≤ p_value for integer scores [W, 4] under background bases.

    The distribution of S = Σ_w scores[w, base_w] is built by convolving the positions' distributions. If even
    the best window is more probable than p_value, the best score + 1 is returned (no window can hit).
    """
    s = np.asarray(scores, dtype=np.int64)
    bg = np.asarray(background, dtype=np.float64)
    lowest = int(s.min(axis=1).sum())
    pmf = np.ones(1)
    for column in s:
        shifts = column - column.min()
        grown = np.zeros(pmf.size + int(shifts.max()))
        for b in range(4):
            grown[shifts[b]:shifts[b] + pmf.size] += bg[b] * pmf
        pmf = grown
    survival = np.cumsum(pmf[::-1])[::-1]              # survival[i] = P(S >= lowest + i)
    ok = np.flatnonzero(survival <= p_value * (1 + 1e-9))
    return lowest + int(ok[0]) if ok.size else lowest + pmf.size


@dataclasses.dataclass
class MotifSet:
    """Motifs ready for scanning: names, integer score matrices (units of `resolution` bits), thresholds."""

    names: list[str]                # One name per motif, e.g. 'MA0004.1 Arnt'.
    scores: list[np.ndarray]        # Integer scores [W, 4] per motif (log-odds bits / resolution, rounded).
    thresholds: np.ndarray          # Integer hit thresholds [M] (a window hits when its score >= threshold).
    resolution: float = RESOLUTION  # Bits per integer score unit.
    p_value: float = P_VALUE        # The p-value the thresholds were computed for (NaN for FPR-calibrated ones).
    fpr: float = float('nan')       # The per-sequence false-positive rate of FPR-calibrated thresholds.

    @classmethod
    def from_counts(cls, names: Sequence[str], counts: Sequence[Any], p_value: float = P_VALUE,
                    pseudocount: float = PSEUDOCOUNT, background: Sequence[float] = BACKGROUND,
                    resolution: float = RESOLUTION) -> 'MotifSet':
        """Build from count matrices [4, W] (rows A, C, G, T); see the module docstring for the rules."""
        if len(names) != len(counts) or not names:
            raise ValueError('Give one name per count matrix, and at least one motif.')
        scores = [np.rint(log_odds(c, pseudocount, background) / resolution).astype(np.int64) for c in counts]
        thresholds = np.array([score_threshold(s, p_value, background) for s in scores], dtype=np.int64)
        return cls(list(names), scores, thresholds, float(resolution), float(p_value))

    def __len__(self) -> int:
        return len(self.names)


@functools.cache
def load_jaspar(release: str = JASPAR_RELEASE, collection: str = 'CORE', tax_group: str = 'vertebrates',
                p_value: float = P_VALUE) -> MotifSet:
    """The JASPAR motifs of a release/collection/taxonomic group from `pyjaspar` (cached per process)."""
    pyjaspar = require('pyjaspar', 'The motif metric (JASPAR motifs)')
    motifs = pyjaspar.jaspardb(release=release).fetch_motifs(collection=collection, tax_group=[tax_group])
    if not motifs:
        raise ValueError(f'pyjaspar returned no {collection} {tax_group} motifs for {release}.')
    motifs = sorted(motifs, key=lambda m: m.matrix_id)
    names = [f'{m.matrix_id} {m.name}' for m in motifs]
    counts = [np.array([m.counts[b] for b in 'ACGT'], dtype=np.float64) for m in motifs]
    return MotifSet.from_counts(names, counts, p_value=p_value)


def _scan(sequences: Any, motif_set: MotifSet, thresholds: np.ndarray | None,
          max_hits: int | None = None) -> np.ndarray:
    """Per sequence and motif, both strands: hit counts [N, M] (windows ≥ thresholds; at most max_hits per
    sequence and motif when given), or with thresholds=None the best window score [N, M] (integer units)."""
    x = torch.from_numpy(one_hot(sequences))
    n, _, length = x.shape
    fill = np.iinfo(np.int64).min if thresholds is None else 0
    out = np.full([n, len(motif_set)], fill, dtype=np.int64)
    groups: dict[int, list[int]] = {}          # motif width -> the motifs of that width, scanned together
    for i, s in enumerate(motif_set.scores):
        groups.setdefault(s.shape[0], []).append(i)
    for width, members in groups.items():
        if width > length:
            continue
        forward = np.stack([motif_set.scores[i] for i in members])          # [G, W, 4]
        reverse = forward[:, ::-1, ::-1]                                    # reverse complement (ACGT order)
        weight = torch.from_numpy(np.concatenate([forward, reverse]).transpose(0, 2, 1).astype(np.float32).copy())
        if thresholds is not None:
            cut = torch.from_numpy(np.tile(np.asarray(thresholds)[members], 2).astype(np.float32) - 0.5)
        for start in range(0, n, SCAN_CHUNK):
            with torch.no_grad():
                window_scores = torch.nn.functional.conv1d(x[start:start + SCAN_CHUNK], weight)  # [B, 2G, L-W+1]
            rows = slice(start, start + SCAN_CHUNK)
            if thresholds is None:
                best = window_scores.amax(dim=2).round().to(torch.int64).numpy()
                out[rows, members] = np.maximum(best[:, :len(members)], best[:, len(members):])
            else:
                hits = (window_scores >= cut[None, :, None]).sum(dim=2).numpy()
                out[rows, members] = hits[:, :len(members)] + hits[:, len(members):]
    if max_hits is not None and thresholds is not None:
        np.minimum(out, int(max_hits), out=out)
    return out


def motif_counts(sequences: Any, motif_set: MotifSet, per_sequence: bool = False,
                 max_hits: int | None = None) -> np.ndarray:
    """Hits of every motif on both strands at the set's thresholds: int64 [M] summed over the set, or [N, M]
    with per_sequence=True; max_hits caps the hits of one motif in one sequence (gimme scan's -n)."""
    counts = _scan(sequences, motif_set, motif_set.thresholds, max_hits)
    return counts if per_sequence else counts.sum(axis=0)


def best_scores(sequences: Any, motif_set: MotifSet) -> np.ndarray:
    """Best window score of every motif in every sequence over both strands, int64 [N, M] (units of resolution)."""
    return _scan(sequences, motif_set, None)


def fpr_thresholds(background: Any, motif_set: MotifSet, fpr: float = FPR) -> np.ndarray:
    """Per-motif integer thresholds t with at most a share fpr of background sequences holding a window ≥ t.

    t = (the (k+1)-th largest best score) + 1 with k = floor(fpr · N): exactly the calibration "1% false
    positives per sequence" of gimme scan's `-g` (its background is genomic; ours is what the caller passes).
    """
    best = best_scores(background, motif_set)
    n = best.shape[0]
    k = int(np.floor(fpr * n))
    if not 0 < fpr < 1 or k >= n:
        raise ValueError(f'Need 0 < fpr < 1 and more than {k} background sequences, got fpr={fpr}, N={n}.')
    ranked = -np.sort(-best, axis=0)
    return ranked[k] + 1


def calibrated(motif_set: MotifSet, background: Any, fpr: float = FPR) -> MotifSet:
    """A copy of motif_set with FPR-calibrated thresholds (`fpr_thresholds`) instead of p-value ones."""
    return dataclasses.replace(motif_set, thresholds=fpr_thresholds(background, motif_set, fpr),
                               p_value=float('nan'), fpr=float(fpr))


def composition_kl(generated_counts: Any, training_counts: Any) -> dict[str, float]:
    """DNA-Diffusion's motif-composition KL between two count vectors [M] (hits summed over each set).

    Over the union of motifs hit in either set (motifs hit in neither are dropped); a motif absent from one set
    counts 1 there, so the divergence is finite. Returns {'kl': KL(training ‖ generated) in nats, the order of
    DNA-Diffusion's motif_scoring_KL_divergence(original, generated), via scipy's rel_entr; 'motifs': the size of
    the union}.
    """
    g = np.asarray(generated_counts, dtype=np.float64)
    t = np.asarray(training_counts, dtype=np.float64)
    if g.shape != t.shape or g.ndim != 1:
        raise ValueError(f'Motif count vectors differ in shape: {list(g.shape)} and {list(t.shape)}.')
    union = (g > 0) | (t > 0)
    if not union.any():
        return dict(kl=0.0, motifs=0.0)
    g, t = np.where(g[union] > 0, g[union], 1.0), np.where(t[union] > 0, t[union], 1.0)
    return dict(kl=float(rel_entr(t / t.sum(), g / g.sum()).sum()), motifs=float(union.sum()))


def occurrence_distribution(counts: Any, pseudocount: float = OCCURRENCE_PSEUDOCOUNT) -> np.ndarray:
    """(c_i + pseudocount) / Σ_j (c_j + pseudocount) for hit counts [M]."""
    c = np.asarray(counts, dtype=np.float64) + pseudocount
    if c.ndim != 1 or (c < 0).any() or c.sum() <= 0:
        raise ValueError('Motif counts must be a non-negative vector with a positive total.')
    return c / c.sum()


def motif_divergence(generated_counts: Any, reference_counts: Any,
                     pseudocount: float = OCCURRENCE_PSEUDOCOUNT) -> dict[str, float]:
    """{'kl': KL(generated ‖ reference) in nats, 'js': Jensen–Shannon in bits} of two motif-count vectors."""
    p = occurrence_distribution(generated_counts, pseudocount)
    q = occurrence_distribution(reference_counts, pseudocount)
    if p.shape != q.shape:
        raise ValueError(f'Motif count vectors differ in length: {p.size} and {q.size}.')
    return dict(kl=float(rel_entr(p, q).sum()), js=js_divergence(p, q))


# Marker motifs per cell type (JASPAR 2020 CORE vertebrates): K562 (erythroleukaemia) GATA1 and GATA1::TAL1;
# HepG2 (hepatocytes) HNF4A, FOXA2, CEBPB; GM12878 (B lymphoblastoid) SPI1 (PU.1), IRF4, EBF1; hESCT0 (embryonic
# stem cells) POU5F1::SOX2 (OCT4-SOX2), SOX2, ZIC3. A cell type matches by its name before '_'.
MARKERS = {
    'K562': ('MA0035.4 GATA1', 'MA0140.2 GATA1::TAL1'),
    'HepG2': ('MA0114.4 HNF4A', 'MA0047.3 FOXA2', 'MA0466.2 CEBPB'),
    'GM12878': ('MA0080.5 SPI1', 'MA1419.1 IRF4', 'MA0154.4 EBF1'),
    'hESCT0': ('MA0142.1 Pou5f1::Sox2', 'MA0143.4 SOX2', 'MA0697.1 ZIC3'),
}


def marker_columns(motif_set: MotifSet, cell_type: str) -> list[int]:
    """Indices in motif_set of the cell type's MARKERS (by JASPAR matrix ID); [] for an unknown cell type."""
    ids = {name.split()[0] for name in MARKERS.get(cell_type.split('_')[0], ())}
    return [i for i, name in enumerate(motif_set.names) if name.split()[0] in ids]
