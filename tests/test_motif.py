"""Motif scanning and the motif-composition divergence, against hand counts and brute-force enumeration."""
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from training.metrics import motif
from training.metrics.sequences import random_sequences, to_strings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_hot_counts(consensus: str, n: int = 10) -> np.ndarray:
    """Counts [4, W] of n sites that all spell `consensus`."""
    counts = np.zeros([4, len(consensus)])
    for w, base in enumerate(consensus):
        counts['ACGT'.index(base), w] = n
    return counts


@pytest.fixture(scope='module')
def two_motifs():
    # With p = 0.1 only exact matches hit: P(exact 'AC') = 1/16 <= 0.1 < P(at most one mismatch) = 7/16;
    # P(exact 'GGT') = 1/64 <= 0.1 < 10/64.
    return motif.MotifSet.from_counts(['AC', 'GGT'], [one_hot_counts('AC'), one_hot_counts('GGT')], p_value=0.1)


def test_log_odds_hand_values():
    # FIMO's pseudocount: 0.1 x background (0.25) per base. Column (10, 0, 0, 0): total 10.1.
    scores = motif.log_odds(one_hot_counts('A'))
    assert scores.shape == (1, 4)
    assert scores[0, 0] == pytest.approx(math.log2((10.025 / 10.1) / 0.25))
    assert scores[0, 1] == pytest.approx(math.log2((0.025 / 10.1) / 0.25))
    flat = motif.log_odds(np.full([4, 3], 5.0))
    np.testing.assert_allclose(flat, 0.0, atol=1e-12)     # uniform counts score 0 bits against uniform background


def test_hits_counted_by_hand_on_both_strands(two_motifs):
    # 'ACACGTAA': AC at 0 and 2; reverse complement 'TTACGTGT': AC at 2. No GGT on either strand.
    # 'TTGGTACC': AC at 5, GGT at 2; reverse complement 'GGTACCAA': GGT at 0, AC at 3.
    per_seq = motif.motif_counts(['ACACGTAA', 'TTGGTACC'], two_motifs, per_sequence=True)
    np.testing.assert_array_equal(per_seq, [[3, 0], [2, 2]])
    np.testing.assert_array_equal(motif.motif_counts(['ACACGTAA', 'TTGGTACC'], two_motifs), [5, 2])
    # Motifs longer than the sequences never hit.
    # 'AC' hits on the + strand, 'GT' on the - strand (its reverse complement is 'AC').
    np.testing.assert_array_equal(motif.motif_counts(['AC', 'GT'], two_motifs, per_sequence=True), [[1, 0], [1, 0]])


def test_threshold_matches_exhaustive_enumeration():
    rs = np.random.RandomState(0)
    counts = rs.randint(0, 20, size=[4, 5]).astype(float)
    scores = np.rint(motif.log_odds(counts) / motif.RESOLUTION).astype(np.int64)
    windows = np.array(list(itertools.product(range(4), repeat=5)))     # all 1,024 5-mers, uniform background
    totals = scores[np.arange(5), windows].sum(axis=1)
    for p in (1e-3, 1e-2, 0.1):
        t = motif.score_threshold(scores, p)
        assert np.mean(totals >= t) <= p < np.mean(totals >= t - 1)


def test_scanner_matches_a_brute_force_scan():
    rs = np.random.RandomState(1)
    counts = [rs.randint(0, 30, size=[4, w]).astype(float) for w in (3, 4, 4, 6)]
    motifs = motif.MotifSet.from_counts(['m3', 'm4a', 'm4b', 'm6'], counts, p_value=0.02)
    seqs = random_sequences(7, 40, seed=2)
    expected = np.zeros([7, 4], dtype=np.int64)
    for n, codes in enumerate(seqs):
        reverse = 3 - codes[::-1]                                           # reverse complement in ACGT codes
        for m, s in enumerate(motifs.scores):
            w = len(s)
            for strand in (codes, reverse):
                for start in range(40 - w + 1):
                    expected[n, m] += s[np.arange(w), strand[start:start + w]].sum() >= motifs.thresholds[m]
    np.testing.assert_array_equal(motif.motif_counts(to_strings(seqs), motifs, per_sequence=True), expected)


def test_divergence_hand_values():
    # Counts (1, 0) vs (0, 1) with pseudocount 1: p = (2/3, 1/3), q = (1/3, 2/3); KL(p||q) = (1/3) ln 2.
    d = motif.motif_divergence([1, 0], [0, 1])
    assert d['kl'] == pytest.approx(math.log(2) / 3, rel=1e-12)
    m = np.array([0.5, 0.5])
    p, q = np.array([2, 1]) / 3, np.array([1, 2]) / 3
    js = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    assert d['js'] == pytest.approx(js, rel=1e-12)
    same = motif.motif_divergence([4, 0, 7], [4, 0, 7])
    assert same['kl'] == pytest.approx(0.0, abs=1e-15) and same['js'] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match='differ in length'):
        motif.motif_divergence([1, 2], [1, 2, 3])


def test_jaspar_2020_vertebrates_and_biopython_threshold():
    pytest.importorskip('pyjaspar', reason='the dna extra (pyjaspar) is not installed')
    motifs = motif.load_jaspar()
    assert len(motifs) == 746 and motifs.names[:3] == ['MA0002.2 RUNX1', 'MA0003.4 TFAP2A', 'MA0004.1 Arnt']
    assert motif.load_jaspar() is motifs                                  # cached per process
    # Our exact null distribution agrees with Biopython's ScoreDistribution for the same PSSM (to its binning).
    from pyjaspar import jaspardb
    arnt = next(m for m in jaspardb(release='JASPAR2020').fetch_motifs(collection='CORE', tax_group=['vertebrates'])
                if m.matrix_id == 'MA0004.1')
    pssm = arnt.counts.normalize(pseudocounts={b: 0.025 for b in 'ACGT'}).log_odds()
    np.testing.assert_allclose(np.array([pssm[b] for b in 'ACGT']).T, motif.log_odds(np.array(
        [arnt.counts[b] for b in 'ACGT'])), atol=1e-9)
    threshold_bits = pssm.distribution(precision=10 ** 3).threshold_fpr(motif.P_VALUE)
    assert motifs.thresholds[2] * motif.RESOLUTION == pytest.approx(threshold_bits, abs=0.05)
    # A 6-mer cannot reach p = 1e-4 (even its best word has probability 4^-6 > 1e-4): Arnt never hits.
    assert motifs.thresholds[2] > motifs.scores[2].max(axis=1).sum()
    assert motif.motif_counts(['CACGTG'], motifs)[2] == 0
    # CTCF's consensus (arg-max of every column) hits CTCF.
    ctcf = motifs.names.index('MA0139.1 CTCF')
    consensus = ''.join('ACGT'[i] for i in motifs.scores[ctcf].argmax(axis=1))
    assert motif.motif_counts([consensus], motifs)[ctcf] >= 1


def test_missing_pyjaspar_is_one_clear_line():
    code = ("import sys; sys.modules['pyjaspar'] = None\n"
            "from training.metrics import motif\n"
            "try:\n    motif.load_jaspar()\nexcept ImportError as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('MissingPackageError')
    assert 'pyjaspar' in lines[0] and 'pip install -e ".[dna]"' in lines[0]
