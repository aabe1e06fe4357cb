"""FD (cell-type CNN; stand-in for Sei-FID), the per-cell-type sequence report, and `fid.py dna` end to end.

Data: tests/data/dna_metrics_excerpt.tsv, real DNA-Diffusion rows (K562 and HepG2: the first 150 training
and the first 50 test rows of each table, columns dhs_id, sequence, TAG, data_label).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from click.testing import CliRunner

import fid
from training.fasta import format_header, write_fasta
from training.metrics import dna_eval
from training.metrics import dna_features as dfm
from training.metrics.classifier_features import cache_path, feature_stats, load_or_train
from training.metrics.sequences import random_sequences, to_strings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCERPT = os.path.join(ROOT, 'tests', 'data', 'dna_metrics_excerpt.tsv')
SPEC = f'dna:{EXCERPT}'
REAL_TABLES = os.environ.get('INFONOISE_DNA_TABLES', '')   # DNA-Diffusion's K562 + HepG2 tables (folder), if given
TINY = dfm.DNAClassifierConfig(channels=8, feature_dim=16, epochs=1, min_steps=10)


@pytest.fixture(scope='module', autouse=True)
def cache_dir(tmp_path_factory, one_torch_thread):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp('dnnlib-cache')
        mp.setenv('DNNLIB_CACHE_DIR', str(path))
        yield path


@pytest.fixture(scope='module')
def splits():
    return dna_eval.load_dna_split(SPEC, 'training'), dna_eval.load_dna_split(SPEC, 'test')


def test_excerpt_splits(splits):
    train, test = splits
    assert train.cell_types == ['HepG2_ENCLB029COU', 'K562_ENCLB843GMH']
    assert train.codes.shape == (300, 200) and test.codes.shape == (100, 200)
    assert np.bincount(train.labels).tolist() == [150, 150] and np.bincount(test.labels).tolist() == [50, 50]


def test_classifier_deterministic_cached_and_strand_symmetric(splits):
    train, test = splits
    a = dfm.train_dna_classifier(train.codes, train.labels, 2, TINY)
    b = dfm.train_dna_classifier(train.codes, train.labels, 2, TINY)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    info = dfm.get_dna_classifier(train.codes, train.labels, train.cell_types, test=(test.codes, test.labels),
                                  config=TINY)
    assert dfm.get_dna_classifier(train.codes, train.labels, train.cell_types, config=TINY) is info
    for x, y in zip(info.net.state_dict().values(), a.state_dict().values()):
        assert torch.equal(x, y)
    assert 0 <= info.test_accuracy <= 1 and 0 <= info.background_accuracy <= 1
    # The weights and accuracies are on disk under the key: loading them never calls train().
    assert os.path.isfile(cache_path('dna-celltype', info.key))

    def must_not_train():
        raise AssertionError('the cached classifier was retrained')
    net, meta = load_or_train('dna-celltype', info.key, lambda: dfm.DNAClassifier(3, 8, 16), must_not_train)
    assert meta['test_accuracy'] == info.test_accuracy
    for x, y in zip(net.state_dict().values(), a.state_dict().values()):
        assert torch.equal(x, y)
    # Features do not depend on the strand: a sequence and its reverse complement map to the same point.
    codes = test.codes[:8]
    np.testing.assert_allclose(dfm.dna_features(codes, a), dfm.dna_features(3 - codes[:, ::-1], a), atol=1e-5)


def test_frechet_is_the_closed_form(splits):
    train, test = splits
    net = dfm.train_dna_classifier(train.codes, train.labels, 2, TINY)
    fa, fb = dfm.dna_features(train.codes, net), dfm.dna_features(test.codes, net)
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    cov_a, cov_b = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(scipy.linalg.sqrtm(cov_a @ cov_b)))
    assert dfm.dna_frechet(train.codes, test.codes, net) == pytest.approx(expected, rel=1e-6)
    assert dfm.dna_frechet(train.codes, feature_stats(fb), net) == pytest.approx(expected, rel=1e-6)
    assert dfm.dna_frechet(to_strings(test.codes), test.codes, net) == pytest.approx(0.0, abs=1e-6)


def test_one_cell_type_is_refused(splits):
    train, _ = splits
    keep = train.labels == 0
    with pytest.raises(ValueError, match='at least two cell types'):
        dfm.get_dna_classifier(train.codes[keep], train.labels[keep], train.cell_types[:1], config=TINY)


def fasta(path, codes, cell_types):
    write_fasta(path, [(format_header(i, c), s) for i, (s, c) in enumerate(zip(to_strings(codes), cell_types))])
    return str(path)


def invoke(*args):
    return CliRunner().invoke(fid.main, ['dna', *[str(a) for a in args]])


def test_fid_dna_end_to_end_real_small_random_large(tmp_path, splits):
    """Real held-out sequences score far better than random ones against the training split, on every metric."""
    _, test = splits
    names = [test.cell_types[k] for k in test.labels]
    real = fasta(tmp_path / 'real.fa', test.codes, [n.split('_')[0] for n in names])   # short names resolve too
    rand = fasta(tmp_path / 'random.fa', random_sequences(len(test.codes), 200, seed=3), names)
    reports = {}
    for kind, path in (('real', real), ('random', rand)):
        out = tmp_path / f'{kind}.json'
        r = invoke('--samples', path, '--data', SPEC, '--split', 'training', '--json', out)
        assert r.exit_code == 0, r.output
        assert 'stand-in for Sei-FID' in r.output and 'HepG2_ENCLB029COU' in r.output
        reports[kind] = json.loads(out.read_text())
    real_r, rand_r = reports['real'], reports['random']
    assert real_r['num_generated'] == {'HepG2_ENCLB029COU': 50, 'K562_ENCLB843GMH': 50}
    assert real_r['num_reference'] == {'HepG2_ENCLB029COU': 150, 'K562_ENCLB843GMH': 150}
    assert real_r['classifier']['test_accuracy'] > 0.6
    # 50 sequences per cell type: DNA-Diffusion's motif composition separates by a smaller factor at this size.
    for metric, factor in (('fd-dna', 2), ('kmer-dna', 2), ('motifp-dna', 2), ('motif-dna', 1.5), ('gc-dna', 2)):
        values = real_r['values'][metric]
        assert values['mean'] == pytest.approx(np.mean([values['HepG2_ENCLB029COU'], values['K562_ENCLB843GMH']]))
        assert rand_r['values'][metric]['mean'] > factor * values['mean'], metric
    # Every metric carries its real-data floor per cell type; nothing of the test split is in training.
    for metric in dna_eval.REPORT_METRICS:
        floors = real_r['floors'][metric]
        assert set(floors) == {'HepG2_ENCLB029COU', 'K562_ENCLB843GMH', 'mean'} and np.isfinite(floors['mean'])
    assert real_r['values']['memo-dna']['mean'] == 0 and real_r['num_floor']['K562_ENCLB843GMH'] == 50
    assert rand_r['values']['fd-dna']['mean'] > 10 * real_r['values']['fd-dna']['mean']
    assert set(real_r['details']['kmer-dna']['K562_ENCLB843GMH']) == {f'k{k}' for k in range(1, 7)}
    # Without class fields the sequences are compared with the whole reference split as one group.
    plain = tmp_path / 'plain.fa'
    write_fasta(plain, [(f'seq{i}', s) for i, s in enumerate(to_strings(test.codes))])
    r = invoke('--samples', plain, '--data', SPEC, '--metrics', 'kmer', '--split', 'training')
    assert r.exit_code == 0, r.output
    assert 'all' in r.output.splitlines()[0] and 'Sei' not in r.output


def test_fid_dna_bad_input_is_one_line(tmp_path, splits):
    from helpers import assert_clean_error
    _, test = splits
    names = [test.cell_types[k] for k in test.labels]
    short = fasta(tmp_path / 'short.fa', test.codes[:, :150], names)
    assert_clean_error(invoke('--samples', short, '--data', SPEC, '--metrics', 'kmer'), 'has 150 letters, not 200')
    bad = tmp_path / 'bad.fa'
    bad.write_text('>seed0 class=K562\n' + 'ACGX' * 50 + '\n')
    assert_clean_error(invoke('--samples', bad, '--data', SPEC, '--metrics', 'kmer'), "contains 'X'")
    unknown = fasta(tmp_path / 'unknown.fa', test.codes[:4], ['GM12878'] * 4)
    assert_clean_error(invoke('--samples', unknown, '--data', SPEC, '--metrics', 'kmer'), "Cell type 'GM12878'")
    good = fasta(tmp_path / 'good.fa', test.codes[:4], names[:4])
    assert_clean_error(invoke('--samples', good, '--data', SPEC, '--metrics', 'fd,sei'), "'sei'")
    assert_clean_error(invoke('--samples', tmp_path / 'none.fa', '--data', SPEC), 'does not exist')
    assert_clean_error(invoke('--samples', good, '--data', 'dna:' + str(tmp_path / 'no.tsv')), 'does not exist')


def test_fid_dna_without_pyjaspar_is_one_line(tmp_path, splits):
    _, test = splits
    good = fasta(tmp_path / 'good.fa', test.codes[:4], [test.cell_types[k] for k in test.labels[:4]])
    code = ("import sys; sys.modules['pyjaspar'] = None\n"
            "from click.testing import CliRunner\nimport fid\n"
            f"args = ['dna', '--samples', {good!r}, '--data', {SPEC!r}, '--metrics', 'motif']\n"
            "r = CliRunner().invoke(fid.main, args)\n"
            "print(r.exit_code, type(r.exception).__name__)\nprint(r.output, end='')\n")
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    status, *lines = out.stdout.splitlines()
    assert status == '1 SystemExit' and len(lines) == 1, out.stdout
    assert lines[0].startswith('Error:') and 'pyjaspar' in lines[0] and '.[dna]' in lines[0]


def test_shipped_classifier_configuration_learns_on_the_excerpt(splits, tmp_path, monkeypatch):
    """Fast counterpart of the real-table accuracy test: the shipped configuration on the 300 + 100 excerpt rows
    (about 12 s) tells the cell types and the shuffled background apart well above chance (0.5)."""
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    train, test = splits
    info = dfm.get_dna_classifier(train.codes, train.labels, train.cell_types, test=(test.codes, test.labels))
    assert info.test_accuracy > 0.7 and info.background_accuracy > 0.85


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(REAL_TABLES), reason='INFONOISE_DNA_TABLES names no folder of the real tables')
def test_classifier_accuracy_on_the_real_tables():
    """The shipped configuration on all K562 + HepG2 training rows (minutes on 2 busy cores; cached after).
    Fast counterpart: test_shipped_classifier_configuration_learns_on_the_excerpt."""
    reference = dna_eval.DNAReference(f'dna:{REAL_TABLES}', 'test')
    info = reference.classifier()
    assert info.test_accuracy > 0.78 and info.background_accuracy > 0.9
