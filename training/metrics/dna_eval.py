"""Sequence metrics of generated DNA against a held-out split, per cell type and averaged over cell types.

Metrics (names as `train.py --metrics` spells them):
    fd-dna      FD (cell-type CNN; stand-in for Sei-FID): `dna_features.dna_frechet` with the classifier
                trained on the tables' training split;
    kmer-dna    k-mer spectrum Jensen–Shannon divergence in bits, mean over k = 1…6 (`kmer.kmer_js`; the
                per-k values are in the report's details);
    motif-dna   JASPAR 2020 CORE vertebrate motif-composition KL(generated ‖ real) in nats (`motif`; the
                Jensen–Shannon divergence in bits is in the details).
Generated sequences carry a cell type each (the class they were sampled for; names as in the tables, or their
prefix before '_', e.g. 'K562'); each cell type is compared with the reference sequences of that cell type, and
the summary value of a metric is the mean over the cell types present. Sequences without a cell type (an
unconditional network) are compared with the whole reference split as one group named 'all'.

`DNAReference(dataset_kwargs, split='test')` loads and caches everything on the real side once per process:
reference sequences per cell type, the classifier (trained on the 'training' split of every cell type of the
same tables, also when the run keeps only some; disk-cached), reference feature statistics and motif counts.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Sequence

import numpy as np

from training.metrics import dna_features, kmer, motif
from training.metrics.classifier_features import feature_stats
from training.metrics.sequences import as_codes
from training.metrics.memo import Memo

DNA_METRICS = ('fd-dna', 'kmer-dna', 'motif-dna')
ALL_TYPES = 'all'


@dataclasses.dataclass
class DNASplit:
    """One split of DNA tables: codes [N, L], labels [N] (index into cell_types), cell_types."""

    codes: np.ndarray
    labels: np.ndarray
    cell_types: list[str]


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
        self._memo = Memo()


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
        if cell_type == ALL_TYPES:
            return self.reference.codes
        return self.reference.codes[self.reference.labels == self.cell_types.index(cell_type)]

    def classifier(self) -> dna_features.DNAClassifierInfo:
        """The cell-type classifier trained on the training split of the same tables (cached)."""
        def build() -> dna_features.DNAClassifierInfo:
            train = load_dna_split(self.data, 'training', all_cell_types=True)
            test = load_dna_split(self.data, 'test', all_cell_types=True)
            return dna_features.get_dna_classifier(train.codes, train.labels, train.cell_types,
                                                   test=(test.codes, test.labels), config=self._config)
        return self._memo('classifier', build)

    def feature_stats(self, cell_type: str) -> tuple[np.ndarray, np.ndarray]:
        net = self.classifier().net
        return self._memo(f'fd:{cell_type}',
                          lambda: feature_stats(dna_features.dna_features(self.sequences(cell_type), net)))

    def motif_counts(self, cell_type: str) -> np.ndarray:
        return self._memo(f'motif:{cell_type}',
                          lambda: motif.motif_counts(self.sequences(cell_type), motif.load_jaspar()))

    def evaluate(self, metric: str, generated: np.ndarray, cell_type: str) -> tuple[float, dict[str, float]]:
        """(summary value, details) of one metric for generated codes of one cell type."""
        if metric == 'fd-dna':
            value = dna_features.dna_frechet(generated, self.feature_stats(cell_type), self.classifier().net)
            return value, {}
        if metric == 'kmer-dna':
            js = kmer.kmer_js(generated, self.sequences(cell_type))
            return js['mean'], {k: v for k, v in js.items() if k != 'mean'}
        if metric == 'motif-dna':
            div = motif.motif_divergence(motif.motif_counts(generated, motif.load_jaspar()),
                                         self.motif_counts(cell_type))
            return div['kl'], dict(js_bits=div['js'])
        raise ValueError(f'Unknown sequence metric {metric!r}; choose one of {", ".join(DNA_METRICS)}.')


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


def evaluate_sequences(generated: Any, cell_types: Sequence[str | None] | None, reference: DNAReference,
                       metrics: Sequence[str] = DNA_METRICS) -> SequenceReport:
    """Compare generated sequences (one cell-type name or None each) with the reference, per cell type."""
    codes = as_codes(generated)
    if codes.shape[1] != reference.seq_len:
        raise ValueError(f'Generated sequences have {codes.shape[1]} bases but the reference sequences have '
                         f'{reference.seq_len}.')
    unknown = [m for m in metrics if m not in DNA_METRICS]
    if unknown:
        raise ValueError(f'Unknown sequence metric {unknown[0]!r}; choose from {", ".join(DNA_METRICS)}.')
    names = [None] * len(codes) if cell_types is None else list(cell_types)
    if len(names) != len(codes):
        raise ValueError(f'{len(names)} cell types for {len(codes)} sequences.')
    resolved = np.array([reference.resolve_cell_type(n) for n in names], dtype=object)
    groups = [c for c in [*reference.cell_types, ALL_TYPES] if (resolved == c).any()]
    values: dict[str, dict[str, float]] = {m: {} for m in metrics}
    details: dict[str, dict[str, dict[str, float]]] = {m: {} for m in metrics}
    for group in groups:
        subset = codes[resolved == group]
        if len(subset) < 2:
            raise ValueError(f'Cell type {group} has {len(subset)} generated sequence; the metrics need at least 2.')
        for m in metrics:
            values[m][group], details[m][group] = reference.evaluate(m, subset, group)
    for m in metrics:
        values[m]['mean'] = float(np.mean([values[m][g] for g in groups]))
    classifier = None
    if 'fd-dna' in metrics:
        info = reference.classifier()
        classifier = dict(name=dna_features.METRIC_NAME, cell_types=info.cell_types,
                          train_accuracy=info.train_accuracy, test_accuracy=info.test_accuracy,
                          background_accuracy=info.background_accuracy)
    return SequenceReport(values=values, details=details,
                          num_generated={g: int((resolved == g).sum()) for g in groups},
                          num_reference={g: int(len(reference.sequences(g))) for g in groups},
                          classifier=classifier, split=reference.split)


SHORT_NAMES = {'fd': 'fd-dna', 'kmer': 'kmer-dna', 'motif': 'motif-dna'}
LABELS = {
    'fd-dna': dna_features.METRIC_NAME,
    'kmer-dna': 'k-mer JS divergence (bits, mean over k = 1..6)',
    'motif-dna': 'JASPAR 2020 motif KL(generated || real) (nats)',
}
_CLASS_FIELD = re.compile(r'(?:^|\s)class=(\S+)')


def parse_metric_names(spec: str) -> list[str]:
    """'fd,kmer,motif' (short names or full ones such as 'kmer-dna') -> full metric names, in DNA_METRICS order."""
    names = [s.strip() for s in spec.split(',') if s.strip()]
    full = [SHORT_NAMES.get(n, n) for n in names]
    unknown = [n for n, f in zip(names, full) if f not in DNA_METRICS]
    if unknown or not full:
        raise ValueError(f'Unknown sequence metric {unknown[0] if unknown else spec!r}; choose from fd, kmer, motif.')
    return [m for m in DNA_METRICS if m in full]


def header_cell_type(header: str) -> str | None:
    """The cell type named by a FASTA header's `class=NAME` field (generate.py's `seed{N} class={cell type}`)."""
    match = _CLASS_FIELD.search(header)
    return match.group(1) if match else None


def format_report(report: SequenceReport) -> str:
    """A plain-text table: one row per metric, one column per cell type and the mean over cell types."""
    groups = list(report.num_generated)
    width = max(len(label) for label in LABELS.values())
    lines = []
    if report.classifier is not None:
        acc, bg = report.classifier['test_accuracy'], report.classifier['background_accuracy']
        line = (f'{dna_features.METRIC_NAME}: classifier test accuracy {"n/a" if acc is None else f"{100 * acc:.1f}%"}'
                f' on {", ".join(report.classifier["cell_types"])}')
        lines.append(line + ('' if bg is None else f'; shuffled sequences recognised: {100 * bg:.1f}%'))
    lines.append(f'{"":{width}}  ' + '  '.join(f'{g:>18}' for g in groups) + f'  {"mean":>10}')
    lines.append(f'{"sequences (generated / reference)":{width}}  '
                 + '  '.join(f'{f"{report.num_generated[g]} / {report.num_reference[g]}":>18}' for g in groups))
    for metric, values in report.values.items():
        lines.append(f'{LABELS[metric]:{width}}  ' + '  '.join(f'{values[g]:>18.6g}' for g in groups)
                     + f'  {values["mean"]:>10.6g}')
    kmer_details = report.details.get('kmer-dna', {})
    for k in kmer.KS:
        if kmer_details:
            lines.append(f'{f"  k-mer JS, k = {k}":{width}}  '
                         + '  '.join(f'{kmer_details[g][f"k{k}"]:>18.6g}' for g in groups))
    return '\n'.join(lines)
