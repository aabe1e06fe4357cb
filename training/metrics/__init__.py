"""Evaluation: Fréchet math, feature detectors, domain feature nets (digits, MNIST, DNA), sequence metrics, plots."""

# Metric names that score DNA sequences ([4, L] one-hot) rather than images; declared here, outside the torch-importing
# registry, so that scripts.report can read it without torch.
SEQUENCE_METRICS = ('fd-dna', 'kmer-dna', 'motif-dna')
