"""The two motif-composition metrics of `fid.py dna` side by side, and the motif scan's speed (issue 18).

Sensitivity, per cell type: each metric's value for n real sequences (its real-data floor: training vs test
sequences, as `fid.py dna` computes it) against its value for the same n training sequences with their bases
permuted (mononucleotide shuffle) and dinucleotide-shuffled; the ratio shuffled / floor says how far a metric
separates sequences without motif grammar from real ones. The two metrics:
    motif    DNA-Diffusion's composition: thresholds at 1% FPR per sequence on 2,000 dinucleotide-shuffled
             training sequences, top-20 hits, KL(training ‖ set) over the union, reference = 2,000 training
             sequences of the cell type; floor = n test sequences;
    motifp   the p < 1e-4 variant: KL(set ‖ test) with a pseudocount of 1 on all motifs; floor = n training
             sequences.
Speed: `motif.motif_counts` on n sequences × the 746 JASPAR 2020 CORE vertebrate motifs × both strands (two
timings), and, when the `memelite` package imports, its `fimo` on the same one-hot sequences with counts only
(three timings: the first includes numba's compilation).
"""
from __future__ import annotations

import click
import numpy as np
import torch

from torch_utils.timing import Stopwatch
from training.metrics import dna_eval, motif
from training.metrics.sequences import dinucleotide_shuffled, shuffled_sequences

EXAMPLES = """\b
Examples:
  python -m scripts.bench_dna_motifs --data dna:../shared/data/dna4
  python -m scripts.bench_dna_motifs --data dna:../shared/data/dna4 --num 500 --no-sensitivity
"""


def _sensitivity(train: dna_eval.DNASplit, test: dna_eval.DNASplit, num: int) -> None:
    rng = np.random.RandomState(0)
    jaspar = motif.load_jaspar()
    pick = rng.choice(len(train.codes), min(2000, len(train.codes)), replace=False)
    calibrated = motif.calibrated(jaspar, dinucleotide_shuffled(train.codes[pick], seed=1))
    for k, cell in enumerate(train.cell_types):
        tr, te = train.codes[train.labels == k], test.codes[test.labels == k]
        n = min(num, len(te))
        te, sample = te[:n], tr[rng.choice(len(tr), n, replace=False)]
        reference = tr[rng.choice(len(tr), min(2000, len(tr)), replace=False)]
        nulls = dict(mono=shuffled_sequences(sample, seed=2), di=dinucleotide_shuffled(sample, seed=3))
        test_counts = motif.motif_counts(te, jaspar)
        pvalue = {name: motif.motif_divergence(motif.motif_counts(x, jaspar), test_counts)['kl']
                  for name, x in dict(floor=sample, **nulls).items()}
        ref_counts = motif.motif_counts(reference, calibrated, max_hits=motif.MAX_HITS)
        fpr = {name: motif.composition_kl(motif.motif_counts(x, calibrated, max_hits=motif.MAX_HITS), ref_counts)['kl']
               for name, x in dict(floor=te, **nulls).items()}
        for label, v in (('motif ', fpr), ('motifp', pvalue)):
            click.echo(f'{cell:22s} n={n:5d} {label}  floor {v["floor"]:.4f}  mono {v["mono"]:.4f} '
                       f'({v["mono"] / v["floor"]:.1f}x)  di {v["di"]:.4f} ({v["di"] / v["floor"]:.1f}x)')


def _speed(codes: np.ndarray) -> None:
    jaspar = motif.load_jaspar()
    for _ in range(2):
        with Stopwatch() as sw:
            motif.motif_counts(codes, jaspar)
        click.echo(f'ours: {len(codes)} x {len(jaspar)} motifs x 2 strands: {sw.wall:.2f} s')
    try:
        from memelite import fimo
    except ImportError:
        click.echo('memelite is not installed; its FIMO was not timed.')
        return
    import pyjaspar
    motifs = pyjaspar.jaspardb(release=motif.JASPAR_RELEASE).fetch_motifs(collection='CORE', tax_group=['vertebrates'])
    pwms = {}
    for m in motifs:
        counts = np.array([m.counts[b] for b in 'ACGT'], dtype=np.float64)
        pwms[m.matrix_id] = counts / counts.sum(axis=0, keepdims=True)
    one_hot = np.zeros((len(codes), 4, codes.shape[1]), dtype=np.float32)
    one_hot[np.arange(len(codes))[:, None], codes, np.arange(codes.shape[1])[None]] = 1
    for rep in range(3):
        with Stopwatch() as sw:
            fimo(pwms, one_hot, threshold=1e-4, reverse_complement=True, return_counts=True)
        click.echo(f'memelite fimo (call {rep + 1}{", includes numba compilation" if rep == 0 else ""}): '
                   f'{sw.wall:.2f} s')


@click.command(epilog=EXAMPLES, context_settings=dict(show_default=True))
@click.option('--data', required=True, metavar='dna:PATH', help='DNA tables (training and test splits).')
@click.option('--num', type=click.IntRange(min=10), default=1000, help='Sequences per cell type / scanned.')
@click.option('--sensitivity/--no-sensitivity', default=True, help='Run the sensitivity comparison.')
@click.option('--threads', type=click.IntRange(min=1), default=1, help='torch CPU threads.')
def main(data: str, num: int, sensitivity: bool, threads: int) -> None:
    """Motif metrics' sensitivity and the motif scan's speed (see the module docstring)."""
    torch.set_num_threads(threads)
    try:
        train = dna_eval.load_dna_split(data, 'training')
        test = dna_eval.load_dna_split(data, 'test')
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if sensitivity:
        _sensitivity(train, test, num)
    _speed(test.codes[:num])


if __name__ == '__main__':
    main()
