"""DNA-Diffusion's recipe pieces: the DDPM σ distribution (--sigma-dist ddpm), --sigma-data, --metrics-guidance."""
import gzip
import json
import math
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import infonoise
from infonoise.samplers import DDPMSampler, ddpm_sigma_levels
from training import options as O
from training.training_loop import build_sigma_sampler


def test_ddpm_levels_closed_form():
    levels = ddpm_sigma_levels()
    assert levels.shape == (50,) and np.all(np.diff(levels) > 0)
    # t = 1: ᾱ = 1 - 1e-4, so σ = sqrt(1e-4 / (1 - 1e-4)).
    assert levels[0] == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-12)
    # t = 2: β_2 = 1e-4 + (0.2 - 1e-4) / 49.
    beta2 = 1e-4 + (0.2 - 1e-4) / 49
    abar2 = (1 - 1e-4) * (1 - beta2)
    assert levels[1] == pytest.approx(math.sqrt((1 - abar2) / abar2), rel=1e-12)
    # t = 50 by an explicit product, written independently of numpy's cumprod.
    abar = 1.0
    for t in range(50):
        abar *= 1 - (1e-4 + t * (0.2 - 1e-4) / 49)
    assert levels[-1] == pytest.approx(math.sqrt((1 - abar) / abar), rel=1e-10)
    assert 14.6 < levels[-1] < 14.8
    with pytest.raises(ValueError):
        ddpm_sigma_levels(0)
    with pytest.raises(ValueError):
        ddpm_sigma_levels(50, 0.3, 0.2)


def test_ddpm_sampler_draws_the_levels_uniformly_and_reports_its_mass():
    sampler = DDPMSampler()
    g = torch.Generator().manual_seed(0)
    draws = sampler.sample(50_000, generator=g)
    assert draws.dtype == torch.float32 and draws.shape == (50_000,)
    levels = torch.from_numpy(ddpm_sigma_levels().astype(np.float32))
    index = (draws[:, None] == levels[None]).float().argmax(dim=1)
    assert torch.equal(levels[index], draws)                             # every draw is one of the 50 levels
    freq = torch.bincount(index, minlength=50).double() / 50_000
    assert (freq - 0.02).abs().max() < 0.004                             # binomial sd 0.0006: 6 sd
    again = sampler.sample(50_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    # Profile on the default grid (0.002 .. 80): all 50 levels inside, so the bin masses sum to 1.
    prof = sampler.profile()
    grid = infonoise.SigmaGrid(0.002, 80.0, 64)
    mass = prof['pi'] * grid.widths.numpy()
    assert mass.sum() == pytest.approx(1.0) and np.allclose(mass * 50, np.round(mass * 50))
    # observe/step/state like the other fixed samplers.
    sampler.observe(draws[:4], torch.ones(4))
    assert sampler.step() is False and sampler.state_dict() == {'step': 1}
    other = DDPMSampler()
    other.load_state_dict(sampler.state_dict())
    assert other.profile()['step'] == 1


def test_sigma_dist_ddpm_is_usable_in_any_row():
    for preset in ('dna-cpu', 'bmnist5k-cpu', 'mnist5k-cpu'):
        opts = O.resolve_options({'data': 'dna:x.txt', 'sigma_dist': 'ddpm'}, O.load_preset(preset))
        kwargs = O.sigma_sampler_kwargs(opts, 'discrete')
        assert kwargs == {'class_name': 'infonoise.DDPMSampler'}
        assert isinstance(build_sigma_sampler(kwargs), DDPMSampler)


def _facts(channels, resolution, label_dim, kwargs):
    return dict(name='x', resolution=resolution, num_channels=channels, label_dim=label_dim, has_labels=label_dim > 0,
                endpoint='discrete', size=10, dataset_kwargs=kwargs)


def test_sigma_data_reaches_network_loss_and_infonoise_weight(tmp_path):
    dna = {'class_name': 'training.dataset_discrete.DNADataset'}
    opts = O.resolve_options({'data': 'dna:x.txt'}, O.load_preset('dna-cpu'))
    assert opts['sigma_data'] == pytest.approx(math.sqrt(3) / 2) and opts['metrics_guidance'] == 2.0
    config = O.build_config(opts, _facts(4, 200, 4, dna))
    assert config['network_kwargs']['sigma_data'] == config['loss_kwargs']['sigma_data'] == opts['sigma_data']
    assert config['metrics_guidance'] == 2.0 and config['network_kwargs']['num_classes'] == 10
    assert O.build_config(opts, _facts(4, 200, 12, dna))['network_kwargs']['num_classes'] == 13
    opts = O.resolve_options({'data': 'dna:x.txt', 'sigma_dist': 'infonoise', 'weighting': 'edm',
                              'sigma_data': 0.7}, O.load_preset('dna-cpu'))
    config = O.build_config(opts, _facts(4, 200, 4, dna))
    assert config['sigma_sampler_kwargs']['sigma_data'] == 0.7 == config['network_kwargs']['sigma_data']
    # Continuous presets keep EDM's 0.5; the bMNIST presets use the measured 0.604.
    for preset, want in (('mnist5k-cpu', 0.5), ('cifar10-uncond', 0.5), ('bmnist5k-cpu', 0.604), ('bmnist', 0.604)):
        opts = O.resolve_options({}, O.load_preset(preset))
        assert opts['sigma_data'] == want, preset
    from click.testing import CliRunner
    import train
    result = CliRunner().invoke(train.main, ['--outdir', str(tmp_path), '--preset', 'mnist5k-cpu',
                                             '--sigma-data', '0', '--dry-run'])
    assert result.exit_code == 2 and '--sigma-data' in result.output and 'Traceback' not in result.output
    with pytest.raises(O.OptionsError, match='needs a conditional model'):
        O.validate_options(O.resolve_options({'data': 'dna:x.txt', 'cond': False}, O.load_preset('dna-cpu')))


def test_dna_one_hot_per_element_std_is_sqrt3_over_2():
    # One base per column: +1 on one row, -1 on three; mean -1/2, E[x^2] = 1, so std = sqrt(1 - 1/4).
    from training.dataset_discrete import one_hot_dna
    x = one_hot_dna(['ACGTTTGA', 'GGGGCCCA']).astype(np.float64) / 127.5 - 1
    assert x.mean() == -0.5 and x.std() == pytest.approx(math.sqrt(3) / 2)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCERPT = os.path.join(ROOT, 'tests', 'data', 'dna_excerpt.tsv')
DNA4_TABLE = os.path.join(ROOT, '..', 'shared', 'data', 'dna4',
                          'K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz')


def _four_cell_cut(path):
    """12 training, 3 validation and 3 test rows per cell type of the real four-cell table, as a .gz table."""
    with gzip.open(DNA4_TABLE, 'rt') as f:
        header = f.readline()
        rows = [line for line in f]
    tag, label = header.split('\t').index('TAG'), header.rstrip('\n').split('\t').index('data_label')
    keep, seen = [], {}
    for line in rows:
        cells = line.rstrip('\n').split('\t')
        key = (cells[tag], cells[label])
        if seen.get(key, 0) < {'training': 12}.get(cells[label], 3):
            seen[key] = seen.get(key, 0) + 1
            keep.append(line)
    with gzip.open(path, 'wt') as f:
        f.write(header + ''.join(keep))
    return str(path)


def test_train_generate_fid_chain(tmp_path):
    """train.py --preset dna-cpu -> generate.py --guidance 2 -> fid.py dna, on real rows (four cell types where the
    shared table is present, else the committed two-cell excerpt)."""
    import fid
    import generate
    import train
    from training.network_io import load_network
    table = _four_cell_cut(tmp_path / 'dna4.txt.gz') if os.path.isfile(DNA4_TABLE) else EXCERPT
    types = 4 if table != EXCERPT else 2
    run = tmp_path / 'run'
    result = CliRunner().invoke(train.main, [str(a) for a in [
        '--outdir', run, '--nosubdir', '--preset', 'dna-cpu', '--data', 'dna:' + table, '--batch', 8,
        '--kimg', 0.016, '--tick', 0.008, '--snap', 1, '--dump', 1, '--metrics', 'kmer-dna', '--metrics-every', 0.016,
        '--metrics-num', 8, '--metrics-steps', 4, '--seed', 0]])
    assert result.exit_code == 0, result.output
    options = json.loads((run / 'training_options.json').read_text())
    assert options['metrics_guidance'] == 2.0 and options['network_kwargs']['sigma_data'] == pytest.approx(0.866025)
    rows = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert rows and rows[-1]['metric'] == 'kmer-dna' and np.isfinite(rows[-1]['value'])
    snapshot = sorted(run.glob('network-snapshot-*.pkl'))[-1]
    net = load_network(str(snapshot))['ema']
    assert net.sigma_data == pytest.approx(math.sqrt(3) / 2) and net.model.label_emb.weight.shape[0] == 10
    assert net.label_dim == types
    out = tmp_path / 'out'
    result = CliRunner().invoke(generate.main, [str(a) for a in [
        '--network', snapshot, '--outdir', out, '--seeds', '0-31', '--steps', 4, '--guidance', 2]])
    assert result.exit_code == 0, result.output
    fasta_text = (out / 'samples.fa').read_text()
    assert fasta_text.count('>seed') == 32 and 'class=' in fasta_text
    result = CliRunner().invoke(fid.main, ['dna', '--samples', str(out / 'samples.fa'), '--data', 'dna:' + table,
                                           '--metrics', 'kmer,gc,cpg,memo'])
    assert result.exit_code == 0, result.output
    assert 'real-data floor' in result.output and result.output.count('(') >= 4 * (types + 1)


def test_real_floor_does_not_depend_on_string_hashing():
    """The real-data floor of a conditional DNA run draws its per-cell-type pools in a fixed order: the same value in
    processes with different string-hash seeds (it once iterated a set of cell-type names)."""
    import subprocess
    import sys
    code = ('from training.metrics import registry; print(repr(registry.real_floor(["kmer-dna"], '
            f'dict(spec="dna:{EXCERPT}", use_labels=True), 24, label_dim=2)["kmer-dna"]))')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    values = {subprocess.run([sys.executable, '-c', code], env={**os.environ, 'PYTHONHASHSEED': str(h)}, cwd=root,
                             capture_output=True, text=True, check=True).stdout for h in range(6)}
    assert len(values) == 1, values
