"""The genomics checks of `fid.py dna`: GC and CpG o/e, dinucleotide shuffles, memorisation identity, the motif
composition as DNA-Diffusion computed it (FPR-calibrated thresholds, top-20 hits, KL over the union), markers."""
import math

import numpy as np
import pytest

from training.metrics import motif
from training.metrics.kmer import kmer_spectrum
from training.metrics.sequences import (as_codes, best_identity, cpg_observed_expected, dinucleotide_shuffled,
                                        gc_content, random_sequences, to_strings)


def test_gc_and_cpg_observed_expected_by_hand():
    assert gc_content(['GCGC', 'AAAT', 'ACGT']).tolist() == [1.0, 0.0, 0.5]
    # CGCG: 2 CpG, L = 4, 2 C, 2 G -> 2 * 4 / 4 = 2;  ACGTTGCA: 1 CpG, 2 C, 2 G, L = 8 -> 8 / 4 = 2;  no C -> 0.
    assert cpg_observed_expected(['CGCG', 'AAGG', 'CCGG']).tolist() == [2.0, 0.0, 1.0]     # CCGG: 1 * 4 / 4
    assert cpg_observed_expected(['ACGTTGCA']).tolist() == [2.0]


def test_dinucleotide_shuffle_keeps_every_dinucleotide_count_exactly():
    codes = random_sequences(100, 200, seed=4)
    codes[:10, :100] = 0                                   # low-complexity halves are still shuffled legally
    shuffled = dinucleotide_shuffled(codes, seed=1)
    for a, b in zip(codes, shuffled):
        assert np.array_equal(kmer_spectrum(a[None], 2), kmer_spectrum(b[None], 2))
        assert a[0] == b[0] and a[-1] == b[-1]
    assert (codes != shuffled).mean() > 0.5
    assert np.array_equal(shuffled, dinucleotide_shuffled(codes, seed=1))
    assert not np.array_equal(shuffled, dinucleotide_shuffled(codes, seed=2))


def _brute_identity(q, targets, max_shift=10):
    length = len(q)
    best = 0.0
    for t in targets:
        for d in range(-max_shift, max_shift + 1):
            same = sum(q[i] == t[i + d] for i in range(length) if 0 <= i + d < length)
            best = max(best, same / length)
    return best


def test_best_identity_finds_every_pair_at_95_percent_and_names_its_value():
    rng = np.random.RandomState(0)
    targets = random_sequences(300, 200, seed=1)
    queries = []
    for k, (mismatches, shift) in enumerate([(0, 0), (9, 0), (10, 0), (4, 3), (0, -10), (2, 7), (30, 0)]):
        q = np.roll(targets[k], shift).copy()
        for pos in rng.choice(np.arange(12, 188), mismatches, replace=False):
            q[pos] = (q[pos] + 1) % 4
        queries.append(q)
    queries.append(random_sequences(1, 200, seed=99)[0])   # unrelated
    queries = np.stack(queries)
    got = best_identity(queries, targets)
    want = [_brute_identity(q, targets[:7]) for q in queries[:7]]
    # Rolling wraps |shift| bases around, which then mismatch: identity (200 - |shift| - mismatches) / 200.
    assert want[:6] == [1.0, 0.955, 0.95, 0.965, 0.95, 0.955]
    assert got[:6].tolist() == want[:6]
    assert got[6] <= want[6] < 0.95 and got[7] == 0.0        # below 95%: a lower bound; unrelated: no seed at all
    assert got.tolist() == best_identity(to_strings(queries), targets).tolist()
    with pytest.raises(ValueError):
        best_identity(queries[:, :100], targets)


def _motif_set(counts, names):
    return motif.MotifSet.from_counts(names, [np.asarray(c, dtype=float) for c in counts])


def test_fpr_thresholds_allow_one_percent_of_background_sequences():
    rng = np.random.RandomState(3)
    counts = [rng.randint(0, 20, size=(4, w)) + np.eye(4)[:, rng.randint(0, 4, w)] * 60 for w in (6, 8, 10)]
    motif_set = _motif_set(counts, ['m6', 'm8', 'm10'])
    background = random_sequences(400, 120, seed=5)
    thresholds = motif.fpr_thresholds(background, motif_set, fpr=0.01)
    best = motif.best_scores(background, motif_set)
    for m in range(3):
        carriers = (best[:, m] >= thresholds[m]).sum()
        assert carriers <= 4 and (best[:, m] >= thresholds[m] - 1).sum() > 4    # the smallest such threshold
    cal = motif.calibrated(motif_set, background)
    per_sequence = motif.motif_counts(background, cal, per_sequence=True)
    assert ((per_sequence > 0).sum(axis=0) <= 4).all() and cal.fpr == 0.01 and math.isnan(cal.p_value)
    # best_scores agrees with the hit counts: a sequence has a hit exactly when its best score reaches the cut.
    assert np.array_equal(per_sequence > 0, best >= cal.thresholds[None])


def test_hits_are_capped_per_motif_and_sequence():
    import dataclasses
    motif_set = _motif_set([np.array([[10, 0, 0, 0]] * 4).T], ['A4'])     # AAAA: no window reaches p < 1e-4 ...
    best = int(motif_set.scores[0].max(axis=1).sum())
    motif_set = dataclasses.replace(motif_set, thresholds=np.array([best]))   # ... so cut at its best score
    seqs = ['A' * 60, 'C' * 60, 'T' * 60]           # 57 windows; TTTT hits on the reverse strand
    assert motif.motif_counts(seqs, motif_set, per_sequence=True)[:, 0].tolist() == [57, 0, 57]
    assert motif.motif_counts(seqs, motif_set, per_sequence=True, max_hits=20)[:, 0].tolist() == [20, 0, 20]
    assert motif.motif_counts(seqs, motif_set, max_hits=20).tolist() == [40]


def test_composition_kl_over_the_union_by_hand():
    got = motif.composition_kl([2, 0, 0, 1], [1, 1, 0, 0])
    # Union = motifs 0, 1, 3; generated [2, 1(absent), 1], training [1, 1, 1(absent)].
    p_gen, p_train = np.array([0.5, 0.25, 0.25]), np.full(3, 1 / 3)
    assert got['kl'] == pytest.approx(float(np.sum(p_train * np.log(p_train / p_gen))))
    assert got['motifs'] == 3
    assert motif.composition_kl([3, 0, 5], [6, 0, 10])['kl'] == pytest.approx(0.0)


def test_marker_motifs_exist_in_jaspar_2020():
    pytest.importorskip('pyjaspar')
    jaspar = motif.load_jaspar()
    for cell, names in motif.MARKERS.items():
        columns = motif.marker_columns(jaspar, f'{cell}_ENCLB000XXX')
        assert sorted(jaspar.names[i] for i in columns) == sorted(names), cell
    assert motif.marker_columns(jaspar, 'Unknown') == []
    assert as_codes(['ACGT']).tolist() == [[0, 1, 2, 3]]
