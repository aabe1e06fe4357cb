"""Sequence metrics of generated DNA against real sequences, per cell type and averaged over cell types.

Metrics (names as `train.py --metrics` spells the first three; `fid.py dna` reports all):
    fd-dna      FD (cell-type CNN; stand-in for Sei-FID): `dna_features.dna_frechet` with the classifier
                trained on the tables' training split; against the held-out split (default test);
    kmer-dna    k-mer spectrum Jensen–Shannon divergence in bits, mean over k = 1…6 (`kmer.kmer_js`; the
                per-k values are in the report's details); against the held-out split;
    motif-dna   the motif composition as DNA-Diffusion computed it (`motif`): JASPAR 2020 CORE vertebrate
                motifs, per-motif thresholds calibrated to 1% false positives per sequence on dinucleotide-
                shuffled training sequences (2,000, standing in for DNA-Diffusion's genomic background), at
                most 20 hits per motif per sequence, hits summed over the set, KL(training ‖ generated) in nats
                over the union of motifs hit in either set; against (up to 2,000) training sequences of the
                cell type;
    motifp-dna  the earlier p-value variant, kept because it separated shuffled from real sequences by a larger
                factor than motif-dna on 3 of the 4 cell types (docs/BENCHMARKS.md): hits at FIMO's p < 1e-4
                under uniform background bases, a pseudocount of 1 on all 746 motifs, KL(generated ‖ held-out)
                in nats (the Jensen–Shannon divergence in bits is in the details);
    gc-dna      GC content: Wasserstein-1 distance between the per-sequence GC shares (scipy's
                `wasserstein_distance`) of the generated and held-out sequences;
    cpg-dna     CpG observed/expected (n_CG · L / (n_C · n_G) per sequence): Wasserstein-1 distance, likewise;
    memo-dna    memorisation: share of generated sequences whose best ungapped identity to any training sequence
                (all cell types; max over shifts |d| ≤ 10 of equal bases / L, given strand;
                `sequences.best_identity`) is ≥ 95%;
    marker-dna  marker-motif enrichment: log2 of the share of the cell type's sequences holding at least one
                hit of its marker motifs (`motif.MARKERS`, the calibrated thresholds) over the same share in the
                generated sequences of the other cell types (each share (k + 1) / (n + 2)); needs two or more
                cell types. Higher is better; the others are distances (lower is better).
Floors (`evaluate_sequences(..., floors=True)`, what `fid.py dna` prints beside each value): the same code on
real sequences at the same sample size: for metrics against the held-out split, n training sequences of the
cell type; for those against training sequences (motif-dna, memo-dna), n held-out ones; for marker-dna, n
held-out sequences per cell type (the real enrichment, a target rather than a floor). Drawn with a fixed seed;
all of them when the split holds fewer.
Generated sequences carry a cell type each (the class they were sampled for; names as in the tables, or their
prefix before '_', e.g. 'K562'); each cell type is compared with the reference sequences of that cell type, and
the summary value of a metric is the mean over the cell types present. Sequences without a cell type (an
unconditional network) are compared with the whole reference split as one group named 'all'.

`DNAReference(dataset_kwargs, split='test')` loads and caches everything on the real side once per process:
reference sequences per cell type, the training split, the classifier (trained on the 'training' split of every
cell type of the same tables, also when the run keeps only some; disk-cached), reference feature statistics,
the calibrated motif thresholds and motif counts.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Sequence

import numpy as np
from scipy.stats import wasserstein_distance

from training.metrics import dna_features, kmer, motif
from training.metrics.classifier_features import feature_stats
from training.metrics import sequences as seqs
from training.metrics.sequences import as_codes

DNA_METRICS = ('fd-dna', 'kmer-dna', 'motif-dna')               # also train.py --metrics names
REPORT_METRICS = DNA_METRICS + ('motifp-dna', 'gc-dna', 'cpg-dna', 'memo-dna', 'marker-dna')
AGAINST_TRAINING = ('motif-dna', 'memo-dna')                      # compared with training sequences
MEMO_IDENTITY = 0.95
MOTIF_REFERENCE_MAX = 2000     # training sequences per cell type of the motif-composition reference
BACKGROUND_SIZE = 2000         # dinucleotide-shuffled training sequences that calibrate the motif thresholds
ALL_TYPES = 'all'


@dataclasses.dataclass
class DNASplit:
    """One split of DNA tables: codes [N, L], labels [N] (index into cell_types), cell_types."""

    codes: np.ndarray
    labels: np.ndarray
    cell_types: list[str]

    def of_type(self, cell_type: str) -> np.ndarray:
        """Codes of one cell type (ALL_TYPES = every row)."""
        return self.codes if cell_type == ALL_TYPES else self.codes[self.labels == self.cell_types.index(cell_type)]


def load_dna_split(data: Any, split: str, all_cell_types: bool = False) -> DNASplit:
    """The `split` rows of a DNA dataset given as a spec ('dna:PATH') or stored dataset_kwargs (a dict);
    with all_cell_types=True the dataset's cell-type filter is dropped (every cell type of its tables)."""
    from training.dataset import open_dataset
    kwargs = dict(split=split, use_labels=True, max_size=None)
    if all_cell_types:
        kwargs['cell_type'] = None
    if isinstance(data, dict):
        dataset = open_dataset(dict(data, **kwargs))
    else:
        dataset = open_dataset(str(data), **kwargs)
    if not hasattr(dataset, 'item_cell_types'):
        raise ValueError(f'{data if isinstance(data, str) else dataset.name} is not a DNA dataset; the sequence '
                         f'metrics need dna:PATH data.')
    index = {c: k for k, c in enumerate(dataset.cell_types)}
    labels = np.array([index[c] for c in dataset.item_cell_types()], dtype=np.int64)
    return DNASplit(as_codes(dataset.sequences()), labels, list(dataset.cell_types))


def _frozen(data: Any) -> Any:
    """A hashable form of a spec or dataset_kwargs, without the entries `load_dna_split` overrides."""
    if not isinstance(data, dict):
        return str(data)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items()
                        if k not in ('split', 'use_labels', 'max_size', 'random_seed')))


class DNAReference:
    """The real side of the sequence metrics for one set of tables and one split (see the module docstring)."""

    def __init__(self,
        data: Any,                          # 'dna:PATH' spec or a DNA dataset's dataset_kwargs.
        split: str = 'test',                # The reference split ('test' = held out from training).
        classifier_config: dna_features.DNAClassifierConfig = dna_features.DNAClassifierConfig(),  # FD classifier.
    ) -> None:
        self.data = data
        self.split = split
        self.reference = load_dna_split(data, split)
        self.cell_types = self.reference.cell_types
        self.seq_len = int(self.reference.codes.shape[1])
        self._config = classifier_config

    def resolve_cell_type(self, name: str | None) -> str:
        """A cell-type name as the tables spell it (exact, or the prefix before '_'); ALL_TYPES for None."""
        if name is None:
            return ALL_TYPES
        hits = [c for c in self.cell_types if c == name] or [c for c in self.cell_types if c.split('_')[0] == name]
        if len(hits) != 1:
            raise ValueError(f'Cell type {name!r} is not one of the reference cell types '
                             f'({", ".join(self.cell_types)}).')
        return hits[0]

    def sequences(self, cell_type: str) -> np.ndarray:
        """Reference codes of one cell type (ALL_TYPES = every reference sequence)."""
        return self.reference.of_type(cell_type)

    @functools.cache
    def classifier(self) -> dna_features.DNAClassifierInfo:
        """The cell-type classifier trained on the training split of the same tables (cached)."""
        train = load_dna_split(self.data, 'training', all_cell_types=True)
        test = load_dna_split(self.data, 'test', all_cell_types=True)
        return dna_features.get_dna_classifier(train.codes, train.labels, train.cell_types,
                                               test=(test.codes, test.labels), config=self._config)

    @functools.cache
    def feature_stats(self, cell_type: str) -> tuple[np.ndarray, np.ndarray]:
        return feature_stats(dna_features.dna_features(self.sequences(cell_type), self.classifier().net))

    @functools.cache
    def training(self) -> DNASplit:
        """The training split of the same tables (every cell type the dataset keeps)."""
        return load_dna_split(self.data, 'training')

    @functools.cache
    def motifs(self) -> motif.MotifSet:
        """JASPAR 2020 CORE vertebrates with thresholds at 1% FPR per sequence on dinucleotide-shuffled
        training sequences (BACKGROUND_SIZE of them, fixed seed)."""
        codes = self.training().codes
        pick = np.random.RandomState(0).choice(len(codes), min(BACKGROUND_SIZE, len(codes)), replace=False)
        return motif.calibrated(motif.load_jaspar(), seqs.dinucleotide_shuffled(codes[np.sort(pick)], seed=0))

    @functools.cache
    def motif_counts(self, cell_type: str) -> np.ndarray:
        """Summed top-20 hit counts [M] of up to MOTIF_REFERENCE_MAX training sequences of the cell type."""
        codes = _draw(self.training().of_type(cell_type), MOTIF_REFERENCE_MAX, seed=1)
        return motif.motif_counts(codes, self.motifs(), max_hits=motif.MAX_HITS)

    @functools.cache
    def motifp_counts(self, cell_type: str) -> np.ndarray:
        """Hits [M] at p < 1e-4 of the JASPAR motifs in the reference sequences of the cell type."""
        return motif.motif_counts(self.sequences(cell_type), motif.load_jaspar())

    def floor_sequences(self, metric: str, cell_type: str, n: int) -> np.ndarray:
        """n real sequences of the cell type from the split the metric does not compare with (fixed seed)."""
        pool = self.sequences(cell_type) if metric in AGAINST_TRAINING else self.training().of_type(cell_type)
        return _draw(pool, n, seed=2)

    def marker_shares(self, generated: np.ndarray, groups: np.ndarray) -> dict[str, float]:
        """log2 marker enrichment per cell type (see the module docstring) of sequences with group names."""
        motif_set = self.motifs()
        hits = motif.motif_counts(generated, motif_set, per_sequence=True) > 0
        result = {}
        for cell in self.cell_types:
            columns = motif.marker_columns(motif_set, cell)
            mine = groups == cell
            if not columns or not mine.any() or mine.all():
                continue
            carries = hits[:, columns].any(axis=1)
            share = lambda m: (carries[m].sum() + 1) / (m.sum() + 2)
            result[cell] = float(np.log2(share(mine) / share(~mine)))
        return result

    def evaluate(self, metric: str, generated: np.ndarray, cell_type: str) -> tuple[float, dict[str, float]]:
        """(summary value, details) of one metric for generated codes of one cell type (not marker-dna)."""
        if metric == 'fd-dna':
            value = dna_features.dna_frechet(generated, self.feature_stats(cell_type), self.classifier().net)
            return value, {}
        if metric == 'kmer-dna':
            js = kmer.kmer_js(generated, self.sequences(cell_type))
            return js['mean'], {k: v for k, v in js.items() if k != 'mean'}
        if metric == 'motif-dna':
            div = motif.composition_kl(motif.motif_counts(generated, self.motifs(), max_hits=motif.MAX_HITS),
                                       self.motif_counts(cell_type))
            return div['kl'], dict(motifs=div['motifs'])
        if metric == 'motifp-dna':
            generated_counts = motif.motif_counts(generated, motif.load_jaspar())
            div = motif.motif_divergence(generated_counts, self.motifp_counts(cell_type))
            return div['kl'], dict(js_bits=div['js'])
        if metric in ('gc-dna', 'cpg-dna'):
            share = seqs.gc_content if metric == 'gc-dna' else seqs.cpg_observed_expected
            return float(wasserstein_distance(share(generated), share(self.sequences(cell_type)))), {}
        if metric == 'memo-dna':
            identity = seqs.best_identity(generated, self.training().codes)
            return float((identity >= MEMO_IDENTITY).mean()), dict(max_identity=float(identity.max()))
        raise ValueError(f'Unknown sequence metric {metric!r}; choose one of {", ".join(REPORT_METRICS)}.')


def _draw(codes: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n rows of codes drawn without replacement with a fixed seed (all of them, in order, when n >= len)."""
    if n >= len(codes):
        return codes
    return codes[np.sort(np.random.RandomState(seed).choice(len(codes), n, replace=False))]


def get_reference(data: Any, split: str = 'test') -> DNAReference:
    """A process-wide DNAReference per (tables, split)."""
    return _reference(_frozen(data), split)


@functools.cache
def _reference(frozen: Any, split: str) -> DNAReference:
    return DNAReference(dict(frozen) if isinstance(frozen, tuple) else frozen, split)


@dataclasses.dataclass
class SequenceReport:
    """Per-cell-type and mean values of the sequence metrics (JSON-friendly via `dataclasses.asdict`)."""

    values: dict[str, dict[str, float]]                 # metric -> {cell type: value, ..., 'mean': value}
    details: dict[str, dict[str, dict[str, float]]]     # metric -> cell type -> extra numbers (per-k JS, ...)
    num_generated: dict[str, int]                       # cell type -> generated sequences evaluated
    num_reference: dict[str, int]                       # cell type -> reference sequences
    classifier: dict[str, Any] | None                   # FD classifier: cell types, accuracies (fd-dna only)
    split: str                                          # The reference split.
    floors: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)   # metric -> cell type -> floor
    num_floor: dict[str, int] = dataclasses.field(default_factory=dict)             # cell type -> real sequences


def evaluate_sequences(generated: Any, cell_types: Sequence[str | None] | None, reference: DNAReference,
                       metrics: Sequence[str] = DNA_METRICS, floors: bool = False) -> SequenceReport:
    """Compare generated sequences (one cell-type name or None each) with the reference, per cell type; with
    floors=True also the same metrics of real sequences at the same sample size (see the module docstring)."""
    codes = as_codes(generated)
    if codes.shape[1] != reference.seq_len:
        raise ValueError(f'Generated sequences have {codes.shape[1]} bases but the reference sequences have '
                         f'{reference.seq_len}.')
    unknown = [m for m in metrics if m not in REPORT_METRICS]
    if unknown:
        raise ValueError(f'Unknown sequence metric {unknown[0]!r}; choose from {", ".join(REPORT_METRICS)}.')
    names = [None] * len(codes) if cell_types is None else list(cell_types)
    if len(names) != len(codes):
        raise ValueError(f'{len(names)} cell types for {len(codes)} sequences.')
    resolved = np.array([reference.resolve_cell_type(n) for n in names], dtype=object)
    groups = [c for c in [*reference.cell_types, ALL_TYPES] if (resolved == c).any()]
    values: dict[str, dict[str, float]] = {m: {} for m in metrics}
    details: dict[str, dict[str, dict[str, float]]] = {m: {} for m in metrics}
    floor_values: dict[str, dict[str, float]] = {m: {} for m in metrics} if floors else {}
    num_floor: dict[str, int] = {}
    for group in groups:
        subset = codes[resolved == group]
        if len(subset) < 2:
            raise ValueError(f'Cell type {group} has {len(subset)} generated sequence; the metrics need at least 2.')
        for m in metrics:
            if m == 'marker-dna':
                continue
            values[m][group], details[m][group] = reference.evaluate(m, subset, group)
            if floors:
                real = reference.floor_sequences(m, group, len(subset))
                floor_values[m][group] = reference.evaluate(m, real, group)[0]
                num_floor[group] = min(num_floor.get(group, len(real)), len(real))
    if 'marker-dna' in metrics:
        values['marker-dna'] = reference.marker_shares(codes, resolved)
        if floors:
            real = {g: _draw(reference.sequences(g), int((resolved == g).sum()), seed=2) for g in groups}
            if real:
                floor_values['marker-dna'] = reference.marker_shares(
                    np.concatenate(list(real.values())), np.concatenate([[g] * len(r) for g, r in real.items()]))
    for table in (values, floor_values) if floors else (values,):
        for m in metrics:
            present = [table[m][g] for g in groups if g in table[m]]
            table[m]['mean'] = float(np.mean(present)) if present else float('nan')
    classifier = None
    if 'fd-dna' in metrics:
        info = reference.classifier()
        classifier = dict(name=dna_features.METRIC_NAME, cell_types=info.cell_types,
                          train_accuracy=info.train_accuracy, test_accuracy=info.test_accuracy,
                          background_accuracy=info.background_accuracy)
    return SequenceReport(values=values, details=details,
                          num_generated={g: int((resolved == g).sum()) for g in groups},
                          num_reference={g: int(len(reference.sequences(g))) for g in groups},
                          classifier=classifier, split=reference.split, floors=floor_values, num_floor=num_floor)


SHORT_NAMES = {'fd': 'fd-dna', 'kmer': 'kmer-dna', 'motif': 'motif-dna', 'motifp': 'motifp-dna', 'gc': 'gc-dna',
               'cpg': 'cpg-dna', 'memo': 'memo-dna', 'markers': 'marker-dna'}
LABELS = {
    'fd-dna': dna_features.METRIC_NAME,
    'kmer-dna': 'k-mer JS divergence (bits, mean over k = 1..6)',
    'motif-dna': 'motif composition KL(training || generated) (nats; 1% FPR, top-20)',
    'motifp-dna': 'motif KL(generated || held-out) (nats; p < 1e-4)',
    'gc-dna': 'GC content, Wasserstein-1',
    'cpg-dna': 'CpG o/e, Wasserstein-1',
    'memo-dna': 'memorised: share >= 95% identical to a training sequence',
    'marker-dna': 'marker-motif enrichment, log2 vs other cell types (higher = better)',
}
_CLASS_FIELD = re.compile(r'(?:^|\s)class=(\S+)')


def parse_metric_names(spec: str) -> list[str]:
    """'fd,kmer,motif,...' (short names or full ones such as 'kmer-dna') -> full names, in REPORT_METRICS order."""
    names = [s.strip() for s in spec.split(',') if s.strip()]
    full = [SHORT_NAMES.get(n, n) for n in names]
    unknown = [n for n, f in zip(names, full) if f not in REPORT_METRICS]
    if unknown or not full:
        raise ValueError(f'Unknown sequence metric {unknown[0] if unknown else spec!r}; choose from '
                         f'{", ".join(SHORT_NAMES)}.')
    return [m for m in REPORT_METRICS if m in full]


def header_cell_type(header: str) -> str | None:
    """The cell type named by a FASTA header's `class=NAME` field (generate.py's `seed{N} class={cell type}`)."""
    match = _CLASS_FIELD.search(header)
    return match.group(1) if match else None


def format_report(report: SequenceReport) -> str:
    """A plain-text table: one row per metric, one column per cell type and the mean over cell types; with floors,
    each cell reads 'value (floor)'."""
    groups = list(report.num_generated)
    width = max(len(label) for label in LABELS.values())
    cell = 24 if report.floors else 12
    lines = []
    if report.classifier is not None:
        acc, bg = report.classifier['test_accuracy'], report.classifier['background_accuracy']
        line = (f'{dna_features.METRIC_NAME}: classifier test accuracy {"n/a" if acc is None else f"{100 * acc:.1f}%"}'
                f' on {", ".join(report.classifier["cell_types"])}')
        lines.append(line + ('' if bg is None else f'; shuffled sequences recognised: {100 * bg:.1f}%'))
    lines.append(f'{"":{width}}  ' + '  '.join(f'{g:>{cell}}' for g in groups) + f'  {"mean":>{cell}}')
    lines.append(f'{"sequences (generated / reference)":{width}}  '
                 + '  '.join(f'{f"{report.num_generated[g]} / {report.num_reference[g]}":>{cell}}' for g in groups))
    if report.num_floor:
        lines.append(f'{"real sequences behind each floor":{width}}  '
                     + '  '.join(f'{report.num_floor.get(g, 0):>{cell}}' for g in groups))

    def entry(metric: str, group: str) -> str:
        value = report.values[metric].get(group, float('nan'))
        if not report.floors:
            return f'{value:>{cell}.6g}'
        floor = report.floors.get(metric, {}).get(group, float('nan'))
        return f'{f"{value:.4g} ({floor:.4g})":>{cell}}'

    for metric in report.values:
        lines.append(f'{LABELS[metric]:{width}}  ' + '  '.join(entry(metric, g) for g in [*groups, 'mean']))
    kmer_details = report.details.get('kmer-dna', {})
    for k in kmer.KS:
        if kmer_details:
            lines.append(f'{f"  k-mer JS, k = {k}":{width}}  '
                         + '  '.join(f'{kmer_details[g][f"k{k}"]:>{cell}.6g}' for g in groups))
    if report.floors:
        lines.append('each entry: generated (real-data floor: real sequences at the same sample size, same code)')
    if 'marker-dna' in report.values:
        lines.append('marker motifs (JASPAR 2020): '
                     + '; '.join(f'{c}: {", ".join(m)}' for c, m in motif.MARKERS.items()))
    return '\n'.join(lines)
