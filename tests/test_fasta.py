"""training.fasta (writer, strict reader, headers) and generate.py's FASTA output on a tiny trained DNA snapshot."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import assert_clean_error

import generate
import train
from torch_utils import persistence
from training import fasta, generation
from training.metrics.dna_eval import header_cell_type
from training.network_io import load_network
from training.networks import EDMPrecond

pytestmark = pytest.mark.usefixtures('one_torch_thread')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCERPT = os.path.join(ROOT, 'tests', 'data', 'dna_excerpt.tsv')


def test_write_read_round_trip(tmp_path):
    records = [(fasta.format_header(0, 'K562_ENCLB843GMH'), 'ACGTAC'), (fasta.format_header(7, 'HepG2'), 'TTGA'),
               (fasta.format_header(12), 'GGGCCC')]
    path = tmp_path / 'x.fa'
    fasta.write_fasta(path, records)
    # Written by Biopython's fasta-2line writer: exactly this text, byte for byte.
    assert path.read_bytes() == b'>seed0 class=K562_ENCLB843GMH\nACGTAC\n>seed7 class=HepG2\nTTGA\n>seed12\nGGGCCC\n'
    assert fasta.read_fasta(path) == records
    assert [header_cell_type(h) for h, _ in records] == ['K562_ENCLB843GMH', 'HepG2', None]
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]   # atomic: no temporary file left
    # Biopython itself reads what we wrote (id = first word, description = the whole header) ...
    from Bio import SeqIO
    assert [(r.id, r.description, str(r.seq)) for r in SeqIO.parse(path, 'fasta')] == [
        ('seed0', 'seed0 class=K562_ENCLB843GMH', 'ACGTAC'), ('seed7', 'seed7 class=HepG2', 'TTGA'),
        ('seed12', 'seed12', 'GGGCCC')]
    # ... and 200-letter sequences survive unwrapped (fasta-2line never wraps; plain `fasta` would at 60).
    rng = np.random.default_rng(0)
    long = [(fasta.format_header(s, 'K562'), ''.join(rng.choice(list('ACGT'), size=200))) for s in range(3)]
    fasta.write_fasta(path, long)
    assert path.read_text().splitlines()[1] == long[0][1] and path.read_text().count('\n') == 6
    assert fasta.read_fasta(path, length=200) == long


def test_reader_accepts_wrapped_lower_case_and_crlf(tmp_path):
    path = tmp_path / 'wrapped.fa'
    path.write_bytes(b'\r\n\n>a first\r\nacgt\r\nAC\r\n\r\n>b\nTTTTTT\n')   # leading blank lines too
    assert fasta.read_fasta(path, length=6) == [('a first', 'ACGTAC'), ('b', 'TTTTTT')]
    assert fasta.read_fasta(path, alphabet='ACGTN') == [('a first', 'ACGTAC'), ('b', 'TTTTTT')]
    path.write_bytes(b'>spaced\nAC GT\tAC\n')          # whitespace inside a sequence line is ignored, as
    assert fasta.read_fasta(path) == [('spaced', 'ACGTAC')]   # Biopython (and most FASTA tools) do


@pytest.mark.parametrize('content, phrase', [
    (b'>s1\nACGT\n>s2\nACG\n', "'s2'"),                       # wrong length
    (b'>s1\nACGN\n', "'N'"),                                  # outside the alphabet
    (b'ACGT\n>s1\nACGT\n', 'line 1 comes before the first'),        # text before the first header
    (b'\n\n;note\n>s1\nACGT\n', 'line 3 comes before the first'),  # (Biopython's own error is 15 lines)
    (b'>s1\n>s2\nACGT\n', "'s1' in .* has no sequence"),          # empty record
    (b'>s1\nACGT\n>s2\n', "'s2' in .* has no sequence"),          # empty last record
    (b'>s1\nAC-T\n', "'-'"),                                  # a gap
    (b'\n\n', 'no FASTA records'),                            # nothing at all
    (b'', 'no FASTA records'),                                # an empty file
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


# Biopython missing: `sys.modules['Bio'] = None` makes every `import Bio...` fail in a fresh interpreter, as on
# an installation without the dna extra.
BLOCK_BIO = "import sys; sys.modules['Bio'] = None\n"
INSTALL = 'pip install -e ".[dna]"'


def run_without_biopython(code, cwd=ROOT):
    return subprocess.run([sys.executable, '-c', BLOCK_BIO + code], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_missing_biopython_is_one_clear_line_from_the_library(tmp_path):
    path = tmp_path / 'x.fa'
    path.write_bytes(b'>s\nACGT\n')
    code = ("from training import fasta\n"
            "calls = [fasta.require_biopython, lambda: fasta.read_fasta(%r),\n"
            "         lambda: fasta.write_fasta(%r, [('s', 'ACGT')])]\n"
            "for call in calls:\n"
            "    try:\n        call()\n    except ValueError as exc:\n        print(type(exc).__name__, exc)\n"
            % (str(path), str(tmp_path / 'new.fa')))
    out = run_without_biopython(code)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and len(set(lines)) == 1, out.stdout
    assert lines[0] == ('MissingPackageError Reading and writing FASTA files needs the optional package biopython; '
                        f'install it with {INSTALL}.')
    assert not os.path.exists(tmp_path / 'new.fa')


def assert_one_error_line(out, *phrases):
    assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), out.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_missing_biopython_fails_generate_and_fid_dna_at_once(dna_snapshot, tmp_path):
    outdir = tmp_path / 'out'
    argv = ['generate.py', '--network', dna_snapshot, '--outdir', str(outdir), '--seeds', '0-1', '--steps', '2',
            '--device', 'cpu']
    out = run_without_biopython(f"import runpy; sys.argv = {argv!r}; runpy.run_path('generate.py', "
                                "run_name='__main__')")
    assert_one_error_line(out, 'biopython', INSTALL)
    assert not os.path.exists(outdir)            # refused before sampling and before creating --outdir
    samples = tmp_path / 'samples.fa'
    fasta.write_fasta(samples, [(fasta.format_header(0, 'K562'), 'ACGT' * 50)])
    argv = ['fid.py', 'dna', '--samples', str(samples), '--data', 'dna:' + EXCERPT, '--metrics', 'kmer']
    out = run_without_biopython(f"import runpy; sys.argv = {argv!r}; runpy.run_path('fid.py', run_name='__main__')")
    assert_one_error_line(out, 'biopython', INSTALL)
