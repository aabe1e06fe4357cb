"""Metrics by name: what train.py --metrics and the benchmark scripts evaluate."""
from __future__ import annotations

METRICS = ('fd-digits', 'fd-mnist', 'fd-dna', 'kmer-dna', 'motif-dna', 'fid')
