"""training.fasta (writer, strict reader, headers) and generate.py's FASTA output on a tiny trained DNA snapshot."""
import glob
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import assert_clean_error

import generate
import train
from torch_utils import persistence
from training import fasta, generation
from training.network_io import load_network
from training.networks import EDMPrecond

pytestmark = pytest.mark.usefixtures('one_torch_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCERPT = os.path.join(ROOT, 'tests', 'data', 'dna_excerpt.tsv')


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    records = [(fasta.format_header(s, c), ''.join(rng.choice(list('ACGT'), size=200)))
               for s, c in ((0, 'K562_ENCLB843GMH'), (7, 'HepG2_ENCLB029COU'), (12, None))]
    path = tmp_path / 'x.fa'
    fasta.write_fasta(path, records)
    text = path.read_text()
    assert text.startswith('>seed0 class=K562_ENCLB843GMH\n') and text.count('\n') == 6 and '>seed12\n' in text
    assert fasta.read_fasta(path, length=200) == records
    assert [fasta.parse_header(h) for h, _ in records] == [(0, 'K562_ENCLB843GMH'), (7, 'HepG2_ENCLB029COU'),
                                                           (12, None)]
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]   # atomic: no temporary file left


def test_reader_accepts_wrapped_lower_case_and_crlf(tmp_path):
    path = tmp_path / 'wrapped.fa'
    path.write_bytes(b'>a first\r\nacgt\r\nAC\r\n\r\n>b\nTTTTTT\n')
    assert fasta.read_fasta(path, length=6) == [('a first', 'ACGTAC'), ('b', 'TTTTTT')]
    assert fasta.read_fasta(path, alphabet='ACGTN') == [('a first', 'ACGTAC'), ('b', 'TTTTTT')]


@pytest.mark.parametrize('content, phrase', [
    (b'>s1\nACGT\n>s2\nACG\n', "'s2'"),                       # wrong length
    (b'>s1\nACGN\n', "'N'"),                                  # outside the alphabet
    (b'ACGT\n>s1\nACGT\n', 'before the first'),               # text before the first header
    (b'>s1\n>s2\nACGT\n', 'no sequence'),                     # empty record
    (b'\n\n', 'no FASTA records'),                            # nothing at all
    (b'\x89PNG\r\n\x1a\n\x00\x00', 'not plain ASCII'),        # a binary file
])
def test_reader_refuses_bad_files_with_one_sentence(tmp_path, content, phrase):
    path = tmp_path / 'bad.fa'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=phrase) as info:
        fasta.read_fasta(path, length=4)
    message = str(info.value)
    assert str(path) in message and message.count('. ') == 0 and '\n' not in message
    with pytest.raises(FileNotFoundError):
        fasta.read_fasta(tmp_path / 'missing.fa')


def test_writer_and_header_errors(tmp_path):
    for records in ([('two\nlines', 'ACGT')], [('', 'ACGT')], [('ok', '')], [('ok', 'AC GT')]):
        with pytest.raises(ValueError):
            fasta.write_fasta(tmp_path / 'x.fa', records)
    assert not os.path.exists(tmp_path / 'x.fa')
    for header in ('seed', 'seedX class=a', 'seed1 class=a b', 'sample1'):
        with pytest.raises(ValueError):
            fasta.parse_header(header)
    with pytest.raises(ValueError):
        fasta.format_header(1, 'has space')


def test_sample_records_decode_by_argmax():
    samples = torch.full([2, 4, 5], -1.0)
    samples[0, [0, 1, 2, 3, 0], range(5)] = 0.9      # ACGTA
    samples[1, [3, 3, 2, 1, 0], range(5)] = 0.2      # TTGCA
    assert fasta.sample_records([4, 9], samples, [1, 0], ['H', 'K']) == [('seed4 class=K', 'ACGTA'),
                                                                         ('seed9 class=H', 'TTGCA')]
    assert fasta.sample_records([4], samples[:1]) == [('seed4', 'ACGTA')]
    assert fasta.sample_records([4], samples[:1], [3], ['H', 'K']) == [('seed4 class=3', 'ACGTA')]


@pytest.fixture(scope='module')
def dna_snapshot(tmp_path_factory):
    """A DNA snapshot trained for two steps with the dna preset at width 8 on the committed excerpt."""
    out = tmp_path_factory.mktemp('dna-run')
    result = CliRunner().invoke(train.main, [str(a) for a in [
        '--outdir', out, '--nosubdir', '--preset', 'dna', '--data', 'dna:' + EXCERPT, '--cbase', 8,
        '--batch', 8, '--kimg', 0.016, '--tick', 0.008, '--snap', 1, '--dump', 1, '--workers', 0,
        '--threads', 1, '--device', 'cpu', '--seed', 0]])
    assert result.exit_code == 0, result.output
    return sorted(glob.glob(str(out / 'network-snapshot-*.pkl')))[-1]


def run_generate(args):
    return CliRunner().invoke(generate.main, [str(a) for a in args] + ['--device', 'cpu'])


def test_generate_writes_fasta_for_a_dna_snapshot(dna_snapshot, tmp_path):
    out = tmp_path / 'random'
    result = run_generate(['--network', dna_snapshot, '--outdir', out, '--seeds', '3-6', '--steps', 2])
    assert result.exit_code == 0, result.output
    assert os.listdir(out) == ['samples.fa']
    records = fasta.read_fasta(out / 'samples.fa', length=200)
    names = ['HepG2_ENCLB029COU', 'K562_ENCLB843GMH']
    for seed, (header, _) in zip(range(3, 7), records):
        g = torch.Generator().manual_seed(seed)      # the documented per-seed stream: latents, then the class
        torch.randn([4, 200], generator=g)
        assert header == f'seed{seed} class={names[int(torch.randint(2, [], generator=g))]}'
    net = load_network(dna_snapshot)['ema']
    opts = generation.SamplerOptions(num_steps=2)
    samples = generation.sample_batch(net, [3, 4, 5, 6], opts, generation.resolve_sigma_steps(net, opts),
                                      device='cpu')
    letters = np.array(list('ACGT'))[samples.argmax(dim=1).numpy()]
    assert [s for _, s in records] == [''.join(row) for row in letters]

    chosen = tmp_path / 'k562'
    result = run_generate(['--network', dna_snapshot, '--outdir', chosen, '--seeds', '0-2', '--steps', 2,
                           '--class', 'K562', '--guidance', 2])
    assert result.exit_code == 0, result.output
    headers = [h for h, _ in fasta.read_fasta(chosen / 'samples.fa', length=200)]
    assert headers == [f'seed{s} class=K562_ENCLB843GMH' for s in range(3)]
    by_index = run_generate(['--network', dna_snapshot, '--outdir', tmp_path / 'k1', '--seeds', '0-2',
                             '--steps', 2, '--class', 1, '--guidance', 2])
    assert by_index.exit_code == 0 and (tmp_path / 'k1' / 'samples.fa').read_bytes() == \
        (chosen / 'samples.fa').read_bytes()


def test_generate_dna_bad_input(dna_snapshot, tmp_path):
    base = ['--network', dna_snapshot, '--outdir', tmp_path / 'o', '--seeds', '0', '--steps', 2]
    assert_clean_error(run_generate(base + ['--class', 'liver']), 'liver', 'K562_ENCLB843GMH')
    assert_clean_error(run_generate(base + ['--class', 2]), 'out of range')
    assert_clean_error(run_generate(base + ['--guidance', -1]), '--guidance')
    assert not os.path.exists(tmp_path / 'o')


def test_generate_unconditional_dna_net(tmp_path):
    torch.manual_seed(0)
    net = EDMPrecond(img_resolution=32, img_channels=4, label_dim=0, model_type='DNAUNet', model_channels=8).eval()
    path = str(tmp_path / 'uncond.pkl')
    persistence.dump_network_pickle(dict(ema=net, loss_fn=None, augment_pipe=None, dataset_kwargs={}), path)
    result = run_generate(['--network', path, '--outdir', tmp_path / 'u', '--seeds', '0-1', '--steps', 2])
    assert result.exit_code == 0, result.output
    assert [h for h, _ in fasta.read_fasta(tmp_path / 'u' / 'samples.fa', length=32)] == ['seed0', 'seed1']
    assert_clean_error(run_generate(['--network', path, '--outdir', tmp_path / 'g', '--seeds', '0', '--steps', 2,
                                     '--guidance', 2]), 'unconditional')
