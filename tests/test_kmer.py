"""k-mer spectra and their Jensen–Shannon divergence (bits) against values computed by hand."""
import math

import numpy as np
import pytest

from training.metrics import kmer
from training.metrics.sequences import as_codes, one_hot, random_sequences, shuffled_sequences, to_strings


def test_spectrum_counts_overlapping_kmers_in_lexicographic_bins():
    # 'AACGT': 2-mers AA, AC, CG, GT -> bins 0, 1, 6, 11 (index = 4*first + second, A<C<G<T).
    spectrum = kmer.kmer_spectrum(['AACGT'], 2)
    expected = np.zeros(16, dtype=np.int64)
    expected[[0, 1, 6, 11]] = 1
    np.testing.assert_array_equal(spectrum, expected)
    # Two sequences add up; 'TTT' is the last 3-mer bin, 'AAA' the first; L - k + 1 k-mers per sequence.
    spectrum = kmer.kmer_spectrum(['AAAA', 'TTTT'], 3)
    assert spectrum.shape == (64,) and spectrum[0] == 2 and spectrum[63] == 2 and spectrum.sum() == 4
    assert kmer.kmer_spectrum(['ACGT'], 1).tolist() == [1, 1, 1, 1]
    assert kmer.kmer_spectrum(['AC'], 3).sum() == 0            # shorter than k: nothing to count


def test_js_disjoint_is_one_bit_and_identical_is_zero():
    for k in (1, 2, 3, 4):
        js = kmer.js_divergence(kmer.kmer_spectrum(['AAAA'], k), kmer.kmer_spectrum(['CCCC'], k))
        assert js == pytest.approx(1.0)
    result = kmer.kmer_js(['ACGTTGCA', 'GGGCCCAT'], ['GGGCCCAT', 'ACGTTGCA'])
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in result.values())
    assert set(result) == {'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'mean'}


def test_js_matches_hand_computation():
    # p = (1/2, 1/2, 0, 0) from 'AC', q = (1, 0, 0, 0) from 'AA' at k = 1; m = (3/4, 1/4, 0, 0).
    # KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2); KL(q||m) = log2(4/3).
    expected = 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * math.log2(2)) + 0.5 * math.log2(4 / 3)
    assert kmer.kmer_js(['AC'], ['AA'], ks=[1])['k1'] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.311278, abs=1e-6)
    # k = 2 on the same sets: {AC} vs {AA} are disjoint -> 1 bit; the mean over k = 1, 2 averages the two.
    both = kmer.kmer_js(['AC'], ['AA'], ks=[1, 2])
    assert both['k2'] == pytest.approx(1.0) and both['mean'] == pytest.approx((expected + 1.0) / 2)


def test_inputs_strings_codes_and_one_hot_agree():
    codes = random_sequences(20, 30, seed=3)
    strings = to_strings(codes)
    np.testing.assert_array_equal(as_codes(strings), codes)
    np.testing.assert_array_equal(as_codes(one_hot(codes) * 255), codes)       # uint8-style 0/255
    np.testing.assert_array_equal(as_codes(one_hot(codes) * 2 - 1), codes)     # network range ±1
    np.testing.assert_array_equal(as_codes([s.lower() for s in strings]), codes)
    for k in (1, 3, 6):
        np.testing.assert_array_equal(kmer.kmer_spectrum(strings, k), kmer.kmer_spectrum(one_hot(codes), k))


def test_shuffle_keeps_composition_and_random_is_far_from_poly_a():
    codes = random_sequences(50, 40, seed=1)
    shuffled = shuffled_sequences(codes, seed=2)
    np.testing.assert_array_equal(np.sort(shuffled, axis=1), np.sort(codes, axis=1))
    assert kmer.kmer_js(codes, shuffled, ks=[1])['k1'] == pytest.approx(0.0, abs=1e-12)
    assert kmer.kmer_js(codes, ['A' * 40], ks=[1])['k1'] > 0.5


def test_bad_input_is_one_sentence():
    with pytest.raises(ValueError, match="contains 'N'"):
        kmer.kmer_spectrum(['ACGN'], 1)
    with pytest.raises(ValueError, match='one length'):
        kmer.kmer_spectrum(['ACG', 'AC'], 1)
    with pytest.raises(ValueError, match='0..3'):
        kmer.kmer_spectrum(np.array([[0, 4]]), 1)
    with pytest.raises(ValueError, match='k must'):
        kmer.kmer_spectrum(['ACGT'], 0)
    with pytest.raises(ValueError, match='at least one sequence'):
        kmer.kmer_js([], ['ACGT'])
